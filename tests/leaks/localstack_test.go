package leaks

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ocm-jobs/ocm-jobs/tests/servers"
)

// TestLocalstackLeavesNothingBehind starts the localstack binary as `make run` does and ends
// it by a signal: afterwards none of the processes it started may run and its .run/env must
// be gone. Two SIGINTs in quick succession are an impatient Ctrl-C (or make forwarding a
// SIGTERM the stack got too): the second must not cut the stop short.
func TestLocalstackLeavesNothingBehind(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "localstack")
	build := exec.Command("go", "build", "-o", bin, "./tests/localstack")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building localstack: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		name    string
		signals []syscall.Signal
	}{
		{"SIGTERM", []syscall.Signal{syscall.SIGTERM}},
		{"SIGINT twice", []syscall.Signal{syscall.SIGINT, syscall.SIGINT}},
		{"SIGKILL", []syscall.Signal{syscall.SIGKILL}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			run := t.TempDir()
			stack, done := startLocalstack(t, root, bin, run)
			procs := descendants(t, stack.Process.Pid)
			t.Logf("localstack [%d] started %v", stack.Process.Pid, procs)
			// Knative Eventing's pods too (make run runs the real broker).
			requireComms(t, procs, "kube-apiserver", "etcd", "kube-controller", "work", "ocm-jobs", "ingress", "filter", "controller")

			for i, sig := range tc.signals {
				if i > 0 {
					time.Sleep(50 * time.Millisecond)
				}
				if err := stack.Process.Signal(sig); err != nil {
					t.Fatal(err)
				}
			}
			select {
			case <-done:
			case <-time.After(3 * time.Minute):
				t.Fatalf("localstack still running 3m after %v", tc.signals)
			}
			t.Logf("localstack ended: %v", stack.ProcessState)
			requireGone(t, procs, 30*time.Second)
			if tc.signals[0] != syscall.SIGKILL {
				raw, _ := os.ReadFile(filepath.Join(run, "localstack.log"))
				if !strings.Contains(string(raw), "everything stopped") {
					t.Errorf("localstack ended without completing its stop (no \"everything stopped\" in its log)")
				}
			}
			env := filepath.Join(run, "env")
			deadline := time.Now().Add(10 * time.Second)
			for {
				raw, err := os.ReadFile(env)
				if err != nil {
					break
				}
				if time.Now().After(deadline) {
					t.Errorf("%s remains after localstack ended:\n%s", env, raw)
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if t.Failed() {
				logTail(t, filepath.Join(run, "localstack.log"))
			}
		})
	}
}

// startLocalstack starts bin on free ports with run as RUN_DIR and waits until it has
// written run/env. done is closed when it has ended.
func startLocalstack(t *testing.T, root, bin, run string) (*exec.Cmd, <-chan struct{}) {
	t.Helper()
	broker, base := freePorts(t)
	logf, err := os.Create(filepath.Join(run, "localstack.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = logf, logf
	// TMPDIR: the data of servers killed with the stack is removed with the test's.
	cmd.Env = append(os.Environ(), "REDIS_URL=", "RUN_DIR="+run, "TMPDIR="+t.TempDir(),
		"BROKER_PORT="+strconv.Itoa(broker), "FUNCTION_PORT_BASE="+strconv.Itoa(base))
	// If this test binary dies, the stack stops as it does when make dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			_ = cmd.Process.Signal(syscall.SIGTERM)
			<-done
		}
	})
	deadline := time.Now().Add(5 * time.Minute)
	for {
		if _, err := os.Stat(filepath.Join(run, "env")); err == nil {
			return cmd, done
		}
		select {
		case <-done:
			logTail(t, logf.Name())
			t.Fatalf("localstack ended before it was up: %v", cmd.ProcessState)
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			logTail(t, logf.Name())
			t.Fatal("localstack not up after 5m")
		}
	}
}

// freePorts returns the ports of a localstack run (servers.LocalstackPorts).
func freePorts(t *testing.T) (broker, base int) {
	t.Helper()
	broker, base, err := servers.LocalstackPorts()
	if err != nil {
		t.Fatal(err)
	}
	return broker, base
}

func logTail(t *testing.T, path string) {
	t.Helper()
	raw, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	t.Logf("%s (end):\n%s", path, strings.Join(lines, "\n"))
}
