package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// janitorArg is the hidden first argument that runs localstack as the janitor of a run:
// `localstack janitor <run dir> <pid of the localstack it cleans up after>`.
const janitorArg = "janitor"

// pidVar is the variable of .run/env naming the localstack that wrote it.
const pidVar = "LOCALSTACK_PID"

// runFiles are what a run leaves in the run directory for other shells: gone when it stops.
var runFiles = []string{"env", "hub.kubeconfig", "cluster2.kubeconfig", "oidc/token"}

// janitorProc is the stack's side of its janitor.
type janitorProc struct {
	cmd  *exec.Cmd
	pipe *os.File
}

// startJanitor starts this binary again as the janitor of run. Its stdin is a pipe whose only
// writer is this process (Go opens every file close-on-exec), so it reads EOF exactly when
// this process ends, however it ends — SIGKILL included, with no thread or timing caveat of
// a parent-death signal. In its own process group a terminal's Ctrl-C does not reach it.
func startJanitor(run string) (*janitorProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	cmd := exec.Command(exe, janitorArg, run, strconv.Itoa(os.Getpid()))
	cmd.Stdin, cmd.Stderr = r, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return nil, fmt.Errorf("starting the janitor: %w", err)
	}
	return &janitorProc{cmd: cmd, pipe: w}, nil
}

// release tells the janitor the stack stopped by itself (and has removed its files).
func (j *janitorProc) release() {
	if j == nil {
		return
	}
	j.pipe.Close()
	_ = j.cmd.Wait()
}

// janitor waits until the localstack owner ends, then removes the run files if the env there
// is still the one owner wrote, so that no later `make demo` or script takes it for a live
// stack. A newer run's env is left alone.
func janitor(run, owner string) {
	// Signals from a terminal are meant for the stack, not for the one who cleans up after it.
	signal.Ignore(os.Interrupt, syscall.SIGHUP)
	_, _ = io.Copy(io.Discard, os.Stdin)
	env := filepath.Join(run, "env")
	if pid, _ := envPID(env); pid == "" || pid != owner {
		return
	}
	for _, f := range runFiles {
		_ = os.Remove(filepath.Join(run, f))
	}
	fmt.Fprintf(os.Stderr, "localstack (pid %s) ended without stopping; removed %s\n", owner, env)
}

// envPID returns the LOCALSTACK_PID an env file records.
func envPID(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimPrefix(strings.TrimSpace(sc.Text()), "export ")
		if v, ok := strings.CutPrefix(line, pidVar+"="); ok {
			return strings.Trim(v, `"`), nil
		}
	}
	return "", sc.Err()
}
