package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// TestLive: the demo takes an env only from a localstack still running.
func TestLive(t *testing.T) {
	// A running process named localstack: sleep under that name.
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	fake := filepath.Join(t.TempDir(), "localstack")
	if err := os.WriteFile(fake, raw, 0o755); err != nil {
		t.Fatal(err)
	}
	running := exec.Command(fake, "60")
	if err := running.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = running.Process.Kill(); _ = running.Wait() })
	// A localstack that has ended (and been reaped).
	ended := exec.Command(fake, "0")
	if err := ended.Run(); err != nil {
		t.Fatal(err)
	}

	for name, tc := range map[string]struct {
		pid  string
		live bool
	}{
		"running localstack":     {strconv.Itoa(running.Process.Pid), true},
		"ended localstack":       {strconv.Itoa(ended.Process.Pid), false},
		"another process":        {strconv.Itoa(os.Getpid()), false},
		"no LOCALSTACK_PID":      {"", false},
		"garbled LOCALSTACK_PID": {"12ab", false},
	} {
		t.Run(name, func(t *testing.T) {
			err := live(tc.pid)
			if (err == nil) != tc.live {
				t.Errorf("live(%q) = %v, want live %v", tc.pid, err, tc.live)
			}
		})
	}
}
