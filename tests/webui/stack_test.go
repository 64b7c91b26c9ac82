package webui

import (
	"bufio"
	"bytes"
	"fmt"
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

// stack is a running `make run`: the localstack binary, its .run/env and the processes it
// started.
type stack struct {
	cmd  *exec.Cmd
	done chan struct{}
	env  map[string]string
	log  string
}

// startStack builds and starts the localstack binary as `make run` does, on free ports, with
// redisURL, a RUN_DIR of the test's own, and waits until it has written its env. It is
// stopped by a signal when the test ends, and nothing it started may outlive it.
func startStack(t *testing.T, redisURL string) *stack {
	t.Helper()
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
	run := t.TempDir()
	broker, base := freePorts(t)
	s := &stack{done: make(chan struct{}), log: filepath.Join(run, "localstack.log")}
	logf, err := os.Create(s.log)
	if err != nil {
		t.Fatal(err)
	}
	s.cmd = exec.Command(bin)
	s.cmd.Dir = root
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.Env = append(os.Environ(), "REDIS_URL="+redisURL, "RUN_DIR="+run, "TMPDIR="+t.TempDir(),
		"BROKER_PORT="+strconv.Itoa(broker), "FUNCTION_PORT_BASE="+strconv.Itoa(base), "SYNC_INTERVAL=3s")
	// If this test binary dies, the stack stops as it does when make dies.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.cmd.Wait(); logf.Close(); close(s.done) }()
	t.Cleanup(func() { s.stop(t) })

	deadline := time.Now().Add(6 * time.Minute)
	for {
		if env, err := readEnv(filepath.Join(run, "env")); err == nil {
			s.env = env
			return s
		}
		select {
		case <-s.done:
			s.tail(t)
			t.Fatalf("localstack ended before it was up: %v", s.cmd.ProcessState)
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.tail(t)
			t.Fatal("localstack not up after 6m")
		}
	}
}

// stop ends the stack with SIGTERM, as Ctrl-C would, and fails the test if any process it
// started is still running afterwards.
func (s *stack) stop(t *testing.T) {
	select {
	case <-s.done:
		return
	default:
	}
	procs, err := servers.Descendants(s.cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(3 * time.Minute):
		t.Errorf("localstack still running 3m after SIGTERM")
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var left []string
		for _, p := range procs {
			if p.Running() {
				left = append(left, fmt.Sprintf("%s[%d]", p.Comm, p.PID))
			}
		}
		if len(left) == 0 {
			t.Logf("localstack stopped; the %d processes it started are gone", len(procs))
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("still running after localstack stopped: %s", strings.Join(left, ", "))
			s.tail(t)
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (s *stack) tail(t *testing.T) {
	t.Helper()
	raw, _ := os.ReadFile(s.log)
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	t.Logf("%s (end):\n%s", s.log, strings.Join(lines, "\n"))
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

// readEnv reads the `export K="V"` lines of a .run/env.
func readEnv(path string) (map[string]string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	env := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		line := strings.TrimPrefix(strings.TrimSpace(sc.Text()), "export ")
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		if u, err := strconv.Unquote(v); err == nil {
			v = u
		}
		env[k] = v
	}
	return env, sc.Err()
}
