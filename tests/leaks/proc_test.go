package leaks

import (
	"syscall"
	"testing"
	"time"

	"github.com/ocm-jobs/ocm-jobs/tests/servers"
)

// proc is one process as /proc shows it (servers.Proc).
type proc = servers.Proc

// descendants lists every process whose parent chain leads to root.
func descendants(t *testing.T, root int) []proc {
	t.Helper()
	procs, err := servers.Descendants(root)
	if err != nil {
		t.Fatal(err)
	}
	return procs
}

// requireComms fails unless procs include a process of each name (its comm, which the kernel
// truncates to 15 bytes): proof the walk saw the servers it then checks.
func requireComms(t *testing.T, procs []proc, names ...string) {
	t.Helper()
	have := map[string]bool{}
	for _, p := range procs {
		have[p.Comm] = true
	}
	for _, n := range names {
		if !have[n] {
			t.Fatalf("no %s among the descendants %v", n, procs)
		}
	}
}

// requireGone fails if any of procs still runs after timeout, and kills those that do, so a
// failing run leaves nothing behind either.
func requireGone(t *testing.T, procs []proc, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var left []proc
	for {
		left = left[:0]
		for _, p := range procs {
			if p.Running() {
				left = append(left, p)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(left) == 0 {
		return
	}
	t.Errorf("still running %s after the parent ended: %v", timeout, left)
	for _, p := range left {
		if p.Running() {
			_ = syscall.Kill(p.PID, syscall.SIGKILL)
		}
	}
}
