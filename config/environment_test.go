package config

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestEnvironmentTableIsCurrent fails when a configuration struct changed and environment.md
// was not regenerated.
func TestEnvironmentTableIsCurrent(t *testing.T) {
	want, err := Markdown()
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("environment.md")
	if err != nil {
		t.Fatalf("reading environment.md: %v (run `go generate ./config`)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("config/environment.md is stale; run `go generate ./config` and commit it. Diff (-committed +generated):\n%s",
			cmp.Diff(strings.Split(string(got), "\n"), strings.Split(string(want), "\n")))
	}
}

// TestEveryVariableIsDocumented checks that every knob of the runtime reaches the table, so
// a struct field without tags cannot hide.
func TestEveryVariableIsDocumented(t *testing.T) {
	vars, err := Variables()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]Variable{}
	for _, v := range vars {
		names[v.Name] = v
	}
	for _, name := range []string{"FUNCTION", "REDIS_URL", "K_SINK", "HUB_ID", "PORT", "LOG_LEVEL"} {
		v, ok := names[name]
		if !ok {
			t.Errorf("%s is missing from the table", name)
			continue
		}
		if len(v.Functions) != 4 {
			t.Errorf("%s is read by %v, want all four functions", name, v.Functions)
		}
	}
}
