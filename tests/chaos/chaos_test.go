package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/ocm-jobs/ocm-jobs/tests/chaos/invariants"
)

// The short run: a fixed seed that `go test ./tests/chaos` (and so `make test`) runs in a
// few minutes. `make chaos` sets SEED, GROUPS and DURATION for a longer one.
const (
	shortSeed     = 1
	shortGroups   = 24
	shortDuration = 45 * time.Second
)

// TestChaos runs the stack under the plan of a seed and fails on any invariant violation,
// printing the report (faults, operations, violations by invariant, and the last line
// `chaos: seed=N groups=N faults=N violations=N`).
func TestChaos(t *testing.T) {
	if path := os.Getenv("CHAOS_RECHECK"); path != "" {
		recheck(t, path)
		return
	}
	o := Options{Seed: shortSeed, Groups: shortGroups, Duration: shortDuration, Settings: DefaultSettings}
	var err error
	if v := os.Getenv("SEED"); v != "" {
		if o.Seed, err = strconv.ParseInt(v, 10, 64); err != nil {
			t.Fatalf("SEED=%q: %v", v, err)
		}
	}
	if v := os.Getenv("GROUPS"); v != "" {
		if o.Groups, err = strconv.Atoi(v); err != nil || o.Groups < 1 {
			t.Fatalf("GROUPS=%q: want a positive number", v)
		}
	}
	if v := os.Getenv("DURATION"); v != "" {
		if o.Duration, err = time.ParseDuration(v); err != nil || o.Duration < 10*time.Second {
			t.Fatalf("DURATION=%q: want a duration of at least 10s", v)
		}
	}
	o.Settle = min(max(60*time.Second, o.Duration/2), 3*time.Minute)
	if v := os.Getenv("SETTLE"); v != "" {
		if o.Settle, err = time.ParseDuration(v); err != nil {
			t.Fatalf("SETTLE=%q: %v", v, err)
		}
	}
	logf := func(format string, args ...any) {
		t.Logf("%s "+format, append([]any{time.Now().Format(time.TimeOnly)}, args...)...)
	}
	out, err := Run(context.Background(), o, logf)
	if err != nil {
		t.Fatalf("chaos run of seed %d: %v", o.Seed, err)
	}
	out.Examples, _ = strconv.Atoi(os.Getenv("CHAOS_EXAMPLES"))
	report := out.Report()
	if path := os.Getenv("CHAOS_REPORT"); path != "" {
		if err := os.WriteFile(path, []byte(report), 0o644); err != nil {
			t.Errorf("writing the report to %s: %v", path, err)
		}
	} else {
		_ = os.WriteFile(filepath.Join(os.TempDir(), fmt.Sprintf("ocm-jobs-chaos-%d.txt", o.Seed)), []byte(report), 0o644)
	}
	if path := os.Getenv("CHAOS_SNAPSHOT"); path != "" {
		if raw, err := json.MarshalIndent(out.Snapshot, "", " "); err == nil {
			_ = os.WriteFile(path, raw, 0o644)
		}
	}
	fmt.Print(report)
	if n := len(out.Result.Violations); n > 0 {
		t.Errorf("%d invariant violations (seed %d reproduces the schedule); the processes' logs are kept in %s", n, o.Seed, out.Dir)
		return
	}
	_ = os.RemoveAll(out.Dir)
}

// recheck checks a snapshot a run saved (CHAOS_SNAPSHOT) again, listing every violation: for
// working on the checks without running the stack.
func recheck(t *testing.T, path string) {
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var s invariants.Snapshot
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatalf("decoding %s: %v", path, err)
	}
	r := invariants.Check(s)
	for _, v := range r.Violations {
		fmt.Println(v)
	}
	for _, n := range r.Notes {
		fmt.Println("note:", n)
	}
	fmt.Printf("%d violations\n", len(r.Violations))
}
