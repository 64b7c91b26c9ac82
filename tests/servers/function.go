package servers

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Function is a function process run from the functions/serve binary, as `make run` and a
// plain install run it: one process, FUNCTION narrowing it to one function (or all four).
type Function struct {
	URL  string
	Log  string
	Vars map[string]string
	proc *Process
}

var (
	serveOnce sync.Once
	servePath string
	serveErr  error
)

// ServeBinary builds functions/serve once per test binary and returns its path. root is the
// repository root, relative to the test's package directory (e.g. "../..").
func ServeBinary(root string) (string, error) {
	serveOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ocm-jobs-serve-")
		if err != nil {
			serveErr = err
			return
		}
		servePath = filepath.Join(dir, "serve")
		cmd := exec.Command("go", "build", "-o", servePath, "./functions/serve")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			serveErr = fmt.Errorf("building functions/serve: %v\n%s", err, out)
		}
	})
	return servePath, serveErr
}

// StartFunction starts a function process with vars on a free loopback port and waits until
// it answers its readiness probe. It is stopped (SIGTERM, then SIGKILL) when the test ends,
// and killed with the test binary if that dies first.
func StartFunction(t testing.TB, root string, vars map[string]string) *Function {
	t.Helper()
	bin, err := ServeBinary(root)
	if err != nil {
		t.Fatal(err)
	}
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	env := []string{fmt.Sprintf("PORT=%d", port), "BIND_ADDRESS=127.0.0.1"}
	for k, v := range vars {
		env = append(env, k+"="+v)
	}
	f := &Function{URL: fmt.Sprintf("http://127.0.0.1:%d", port), Log: filepath.Join(t.TempDir(), "function.log"), Vars: vars}
	if f.proc, err = startProcess("function "+vars["FUNCTION"], f.Log, env, bin); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.proc.Stop(10 * time.Second) })
	err = waitFor(context.Background(), f.proc, 60*time.Second, func(ctx context.Context) error {
		resp, err := http.Get(f.URL + "/health/readiness")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readiness %d", resp.StatusCode)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// Kill kills the process with SIGKILL, as a crash would.
func (f *Function) Kill() { f.proc.Kill() }

// Exited reports whether the process has ended.
func (f *Function) Exited() bool { return f.proc.Exited() }

// KilledBy reports whether the process ended by the signal sig.
func (f *Function) KilledBy(sig syscall.Signal) bool {
	if !f.proc.Exited() {
		return false
	}
	ws, ok := f.proc.cmd.ProcessState.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
}

// Done is closed when the process has ended.
func (f *Function) Done() <-chan struct{} { return f.proc.done }
