package servers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// BinDir is where `make tools` puts the server binaries: $OCM_JOBS_BIN, else
// $OCM_JOBS_TOOLS/bin, else ~/.cache/ocm-jobs/bin.
func BinDir() string {
	if d := os.Getenv("OCM_JOBS_BIN"); d != "" {
		return d
	}
	if d := os.Getenv("OCM_JOBS_TOOLS"); d != "" {
		return filepath.Join(d, "bin")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		home = os.TempDir()
	}
	return filepath.Join(home, ".cache", "ocm-jobs", "bin")
}

// Bin returns the path of a server binary built by `make tools`.
func Bin(name string) (string, error) {
	p := filepath.Join(BinDir(), name)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s not found in %s: run `make tools` first: %w", name, BinDir(), err)
	}
	return p, nil
}

// FreePort returns a loopback TCP port nothing listens on right now.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// LocalstackPorts returns ports for a `make run` stack (tests/localstack): a free port for the
// broker (BROKER_PORT) and the first of five consecutive free ports for the four functions and,
// after them, the Policy Manager stand-in (FUNCTION_PORT_BASE), below the kernel's ephemeral
// range so that no client's outgoing connection takes one meanwhile.
func LocalstackPorts() (broker, base int, err error) {
	for try := 0; try < 100; try++ {
		base := 20000 + (os.Getpid()*13+try*97)%10000
		var ls []net.Listener
		for p := base; p < base+6; p++ {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				break
			}
			ls = append(ls, l)
		}
		for _, l := range ls {
			l.Close()
		}
		if len(ls) == 6 {
			return base + 5, base, nil
		}
	}
	return 0, 0, errors.New("no six consecutive free loopback ports between 20000 and 30000")
}

// Process is a child process this package started; it is stopped by PID.
type Process struct {
	Name string
	Log  string
	cmd  *exec.Cmd
	done chan struct{}
	mu   sync.Mutex
	err  error
}

// StartProcess starts bin with args as this package starts its servers: in its own process
// group, its output appended to logPath, env added to this process's environment, and killed
// if this process dies however it dies.
func StartProcess(name, logPath string, env []string, bin string, args ...string) (*Process, error) {
	return startProcess(name, logPath, env, bin, args...)
}

// startProcess starts bin with args, its output appended to logPath. The child is killed
// if this process dies (Pdeathsig), so a crashed test binary leaves nothing behind.
func startProcess(name, logPath string, env []string, bin string, args ...string) (*Process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening log of %s: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p := &Process{Name: name, Log: logPath, cmd: cmd, done: make(chan struct{})}
	if err := onOwnThread(cmd.Start, p.done); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	go func() {
		err := cmd.Wait()
		logf.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

// onOwnThread runs start (which starts children with a parent-death signal) on a goroutine
// locked to its OS thread, and keeps that thread until release is closed.
//
// Linux sends the parent-death signal when the thread that forked the child ends, not when
// the process does. The Go runtime ends a thread only when a goroutine locked to it returns
// without unlocking; any goroutine may run on the thread that forked a child, so a library
// that locks a thread and returns would kill our servers early. A thread kept locked by a
// goroutine that waits for release can end only with the whole process: the signal then
// means what we want, "the process that started this server is gone".
func onOwnThread(start func() error, release <-chan struct{}) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		err := start()
		errc <- err
		if err == nil {
			<-release
		}
	}()
	return <-errc
}

// deathSignalWrapper writes dir/name, an executable script that runs bin with SIGKILL as its
// parent-death signal, and returns its path; only this process may run it. envtest starts
// kube-apiserver and etcd itself with no such signal, so without it they outlive a SIGKILLed
// test binary or `make run`.
//
// setpriv (util-linux, essential in Debian) sets the signal and execs, so the server keeps
// the PID envtest signals to stop it. The inner shell then checks that its parent is still
// this process: one that died before setpriv set the signal would never send it.
func deathSignalWrapper(dir, name, bin string) (string, error) {
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		return "", fmt.Errorf("setpriv (util-linux) is needed to tie %s to this process: %w", name, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	script := fmt.Sprintf(`#!/bin/sh
# Written by ocm-jobs tests/servers: %s dies with the process %d that started it.
exec %s --pdeathsig KILL -- /bin/sh -c '[ "$PPID" = "$1" ] || exit 1; shift; exec "$@"' sh %d %s "$@"
`, name, os.Getpid(), shellQuote(setpriv), os.Getpid(), shellQuote(bin))
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		return "", err
	}
	return path, nil
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// PID is the process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM to the process group, waits up to grace, then SIGKILL.
func (p *Process) Stop(grace time.Duration) {
	if p == nil || p.Exited() {
		return
	}
	_ = syscall.Kill(-p.PID(), syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.Kill()
	}
}

// Kill sends SIGKILL (kill -9) to the process group and waits for it to end.
func (p *Process) Kill() {
	if p == nil || p.Exited() {
		return
	}
	_ = syscall.Kill(-p.PID(), syscall.SIGKILL)
	<-p.done
}

// Pause stops the process group (SIGSTOP) until Resume: a process that is frozen, as a long
// GC pause or a stalled VM would freeze it, while its peers go on.
func (p *Process) Pause() {
	if p != nil && !p.Exited() {
		_ = syscall.Kill(-p.PID(), syscall.SIGSTOP)
	}
}

// Resume continues a paused process group (SIGCONT).
func (p *Process) Resume() {
	if p != nil && !p.Exited() {
		_ = syscall.Kill(-p.PID(), syscall.SIGCONT)
	}
}

// Done is closed when the process has ended.
func (p *Process) Done() <-chan struct{} { return p.done }

// ExitSignal is the signal that ended the process (0 while it runs or when it exited by itself).
func (p *Process) ExitSignal() syscall.Signal {
	if !p.Exited() || p.cmd.ProcessState == nil {
		return 0
	}
	if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return ws.Signal()
	}
	return 0
}

// tail returns the last bytes of the process log, for error messages.
func (p *Process) tail() string {
	b, err := os.ReadFile(p.Log)
	if err != nil {
		return ""
	}
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// waitFor polls ready until it returns nil, the process exits, or timeout passes.
func waitFor(ctx context.Context, p *Process, timeout time.Duration, ready func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		if p != nil && p.Exited() {
			return fmt.Errorf("%s exited before it was ready; log %s:\n%s", p.Name, p.Log, p.tail())
		}
		if last = ready(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			if p == nil {
				return errors.Join(fmt.Errorf("server not ready after %s", timeout), last)
			}
			return errors.Join(fmt.Errorf("%s not ready after %s; log %s:\n%s", p.Name, timeout, p.Log, p.tail()), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
