package servers

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Proc is one process as /proc/<pid>/stat shows it: what a test needs to tell whether the
// processes a stack started are gone.
type Proc struct {
	PID   int
	PPID  int
	Comm  string
	State byte
	// Start is the start time in clock ticks after boot: with PID it names one process,
	// even if the PID is reused later.
	Start uint64
}

func (p Proc) String() string { return fmt.Sprintf("%s[%d]", p.Comm, p.PID) }

// ReadProc reads /proc/<pid>/stat: "pid (comm) state ppid … starttime (field 22) …".
func ReadProc(pid int) (Proc, error) {
	raw, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return Proc{}, err
	}
	open, closing := bytes.IndexByte(raw, '('), bytes.LastIndexByte(raw, ')')
	if open < 0 || closing < open {
		return Proc{}, fmt.Errorf("unexpected /proc/%d/stat: %q", pid, raw)
	}
	fields := strings.Fields(string(raw[closing+1:]))
	if len(fields) < 20 {
		return Proc{}, fmt.Errorf("unexpected /proc/%d/stat: %q", pid, raw)
	}
	ppid, err := strconv.Atoi(fields[1])
	if err != nil {
		return Proc{}, err
	}
	start, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return Proc{}, err
	}
	return Proc{PID: pid, PPID: ppid, Comm: string(raw[open+1 : closing]), State: fields[0][0], Start: start}, nil
}

// Descendants lists every process whose parent chain leads to root, now.
func Descendants(root int) ([]Proc, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	children := map[int][]Proc{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, err := ReadProc(pid); err == nil {
			children[p.PPID] = append(children[p.PPID], p)
		}
	}
	var out []Proc
	queue := []int{root}
	for len(queue) > 0 {
		for _, c := range children[queue[0]] {
			out = append(out, c)
			queue = append(queue, c.PID)
		}
		queue = queue[1:]
	}
	return out, nil
}

// Running reports whether p is still running: the same process (PID and start time), and
// not a zombie waiting to be reaped.
func (p Proc) Running() bool {
	now, err := ReadProc(p.PID)
	return err == nil && now.Start == p.Start && now.State != 'Z' && now.State != 'X'
}
