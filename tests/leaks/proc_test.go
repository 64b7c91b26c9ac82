package leaks

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// proc is one process as /proc/<pid>/stat shows it.
type proc struct {
	PID   int
	PPID  int
	Comm  string
	State byte
	// Start is the start time in clock ticks after boot: with PID it names one process,
	// even if the PID is reused later.
	Start uint64
}

func (p proc) String() string { return fmt.Sprintf("%s[%d]", p.Comm, p.PID) }

// readProc reads /proc/<pid>/stat: "pid (comm) state ppid … starttime (field 22) …".
func readProc(pid int) (proc, error) {
	raw, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return proc{}, err
	}
	open, closing := bytes.IndexByte(raw, '('), bytes.LastIndexByte(raw, ')')
	if open < 0 || closing < open {
		return proc{}, fmt.Errorf("unexpected /proc/%d/stat: %q", pid, raw)
	}
	fields := strings.Fields(string(raw[closing+1:]))
	if len(fields) < 20 {
		return proc{}, fmt.Errorf("unexpected /proc/%d/stat: %q", pid, raw)
	}
	ppid, err := strconv.Atoi(fields[1])
	if err != nil {
		return proc{}, err
	}
	start, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return proc{}, err
	}
	return proc{PID: pid, PPID: ppid, Comm: string(raw[open+1 : closing]), State: fields[0][0], Start: start}, nil
}

// descendants lists every process whose parent chain leads to root.
func descendants(t *testing.T, root int) []proc {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	children := map[int][]proc{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, err := readProc(pid); err == nil {
			children[p.PPID] = append(children[p.PPID], p)
		}
	}
	var out []proc
	queue := []int{root}
	for len(queue) > 0 {
		for _, c := range children[queue[0]] {
			out = append(out, c)
			queue = append(queue, c.PID)
		}
		queue = queue[1:]
	}
	return out
}

// running reports whether p is still running: the same process (PID and start time), and
// not a zombie waiting to be reaped.
func (p proc) running() bool {
	now, err := readProc(p.PID)
	return err == nil && now.Start == p.Start && now.State != 'Z' && now.State != 'X'
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
			if p.running() {
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
		if p.running() {
			_ = syscall.Kill(p.PID, syscall.SIGKILL)
		}
	}
}
