package chaos

import (
	"fmt"
	"net/http"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/ocm-jobs/ocm-jobs/tests/servers"
)

// function is one function process (functions/serve with FUNCTION set), supervised as a
// Kubernetes Deployment would be: whenever it ends it is started again on the same port,
// after the down time a fault asked for or a second otherwise.
type function struct {
	name string
	// hub is the hub the process acts for ("" for jobs and incompliance).
	hub  string
	url  string
	bin  string
	log  string
	env  []string
	seed int64

	mu       sync.Mutex
	proc     *servers.Process
	starts   int
	expected int       // exits a fault caused, not yet seen
	downTill time.Time // no restart before
	paused   bool
	stopping bool
	// crashes are exits no fault of the harness caused, by signal (SIGKILL: the
	// kill-after-apply hook) or exit status.
	crashes map[string]int
	done    chan struct{}
}

func newFunction(name, hub, bin, dir string, port int, env []string, seed int64) *function {
	return &function{
		name: name, hub: hub, bin: bin, seed: seed, env: append(env, fmt.Sprintf("PORT=%d", port)),
		url: fmt.Sprintf("http://127.0.0.1:%d", port), log: filepath.Join(dir, name+".log"),
		crashes: map[string]int{}, done: make(chan struct{}),
	}
}

// start starts the process and supervises it until stop.
func (f *function) start() error {
	if err := f.spawn(); err != nil {
		return err
	}
	go f.supervise()
	return nil
}

// errStopping: the process is being stopped for good.
var errStopping = fmt.Errorf("stopping")

func (f *function) spawn() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopping {
		return errStopping
	}
	// Each start has its own fault seed, derived from the run's: a seed reproduces them.
	env := append(append([]string(nil), f.env...), fmt.Sprintf("FAULTS_SEED=%d", f.seed+int64(f.starts)))
	p, err := servers.StartProcess(f.name, f.log, env, f.bin)
	if err != nil {
		return err
	}
	f.proc = p
	f.starts++
	return nil
}

func (f *function) supervise() {
	defer close(f.done)
	for {
		f.mu.Lock()
		p := f.proc
		f.mu.Unlock()
		<-p.Done()
		f.mu.Lock()
		if f.stopping {
			f.mu.Unlock()
			return
		}
		if f.expected > 0 {
			f.expected--
		} else {
			why := fmt.Sprintf("exit %v", p.ExitSignal())
			if p.ExitSignal() == syscall.SIGKILL {
				why = string(FaultKillAfterApply)
			} else if p.ExitSignal() == 0 {
				why = "exited"
			}
			f.crashes[why]++
		}
		wait := time.Until(f.downTill)
		f.mu.Unlock()
		time.Sleep(max(wait, time.Second))
		for {
			err := f.spawn()
			if err == errStopping {
				return
			}
			if err == nil {
				break
			}
			time.Sleep(time.Second)
		}
	}
}

// kill kills the process (SIGKILL); the supervisor starts it again after down.
func (f *function) kill(down time.Duration) {
	f.mu.Lock()
	p := f.proc
	if p.Exited() || f.paused {
		f.mu.Unlock()
		return
	}
	f.expected++
	f.downTill = time.Now().Add(down)
	f.mu.Unlock()
	p.Kill()
}

// pause freezes the process (SIGSTOP) for d, then lets it go on.
func (f *function) pause(d time.Duration) bool {
	f.mu.Lock()
	p := f.proc
	if p.Exited() || f.paused {
		f.mu.Unlock()
		return false
	}
	f.paused = true
	f.mu.Unlock()
	p.Pause()
	time.Sleep(d)
	p.Resume()
	f.mu.Lock()
	f.paused = false
	f.mu.Unlock()
	return true
}

// ready waits until the process answers its readiness probe (Redis reachable).
func (f *function) ready(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(f.url + "/health/readiness")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("function %s not ready after %s (log %s): %v", f.name, timeout, f.log, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// stop ends the process for good.
func (f *function) stop() {
	f.mu.Lock()
	f.stopping = true
	p := f.proc
	f.mu.Unlock()
	p.Resume()
	p.Stop(5 * time.Second)
	<-f.done
}

// crashCounts returns the exits no fault of the harness caused, by cause.
func (f *function) crashCounts() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]int{}
	for k, v := range f.crashes {
		out[k] = v
	}
	return out
}
