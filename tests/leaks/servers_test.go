package leaks

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ocm-jobs/ocm-jobs/tests/servers"
)

// helperEnv makes this test binary the helper of TestServersDieWithTheirParent instead.
const helperEnv = "OCM_JOBS_LEAKS_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "servers" {
		startServersAndWait()
		return
	}
	os.Exit(m.Run())
}

// startServersAndWait is the helper: it starts one of each server kind through tests/servers,
// says "ready" and waits to be killed.
func startServersAndWait() {
	_, err := servers.Start(context.Background(), servers.Need{Redis: true, S3: true, Clusters: 1})
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting the servers:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	time.Sleep(10 * time.Minute) // killed long before
	os.Exit(1)
}

// TestServersDieWithTheirParent SIGKILLs a test binary that started servers through
// tests/servers — kube-apiserver and etcd (envtest), kube-controller-manager, a work agent,
// redis-server and versitygw — none of which may outlive it.
func TestServersDieWithTheirParent(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "helper.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(os.Args[0])
	// TMPDIR: the data of the servers killed with the helper is removed with the test's.
	cmd.Env = append(os.Environ(), helperEnv+"=servers", "TMPDIR="+t.TempDir())
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "ready" {
				ready <- true
				return
			}
		}
		ready <- false
	}()
	select {
	case ok := <-ready:
		if !ok {
			logTail(t, logPath)
			t.Fatal("the helper ended before its servers were up")
		}
	case <-time.After(5 * time.Minute):
		logTail(t, logPath)
		t.Fatal("the helper's servers not up after 5m")
	}
	procs := descendants(t, cmd.Process.Pid)
	t.Logf("helper [%d] started %v", cmd.Process.Pid, procs)
	requireComms(t, procs, "kube-apiserver", "etcd", "kube-controller", "work", "redis-server", "versitygw")

	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	requireGone(t, procs, 30*time.Second)
}
