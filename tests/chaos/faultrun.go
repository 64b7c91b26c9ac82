package chaos

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/ocm-jobs/ocm-jobs/shared/faults"
	"github.com/ocm-jobs/ocm-jobs/shared/ocm"
	"github.com/ocm-jobs/ocm-jobs/tests/chaos/invariants"
)

// FaultRunner injects the plan's outside faults, each at its time, and records what it did:
// how many of each kind, when redis-server was killed and with which fsync policy, which
// spoke Deployments were edited by hand.
type FaultRunner struct {
	st   *Stack
	plan *Plan

	mu      sync.Mutex
	counts  map[FaultKind]int
	skipped map[FaultKind]int
	errs    []string
	kills   []invariants.RedisKill
	drift   []invariants.Drift
	// locks serialize the faults on one target (one Redis, one hub, one agent).
	locks map[string]*sync.Mutex
	// windows count the broker windows open, per kind.
	windows map[FaultKind]int
	// policies are the fsync policies of the Redis kills still to come.
	policies []string
	wg       sync.WaitGroup
}

// NewFaultRunner prepares the faults of plan on st.
func NewFaultRunner(st *Stack, plan *Plan) *FaultRunner {
	r := &FaultRunner{st: st, plan: plan, counts: map[FaultKind]int{}, skipped: map[FaultKind]int{},
		locks: map[string]*sync.Mutex{}, windows: map[FaultKind]int{}}
	for _, f := range plan.Faults {
		if f.Kind == FaultKillRedis {
			r.policies = append(r.policies, f.AppendFsync)
		}
	}
	return r
}

func (r *FaultRunner) lock(name string) func() {
	r.mu.Lock()
	l := r.locks[name]
	if l == nil {
		l = &sync.Mutex{}
		r.locks[name] = l
	}
	r.mu.Unlock()
	l.Lock()
	return l.Unlock
}

// Run injects every fault at its time from start and returns once all have started; Wait
// waits until every one has ended (windows closed, servers back).
func (r *FaultRunner) Run(ctx context.Context, start time.Time) {
	r.setPolicy(ctx)
	for i := range r.plan.Faults {
		f := r.plan.Faults[i]
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(start.Add(f.At))):
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			ok, err := r.inject(ctx, f)
			r.mu.Lock()
			defer r.mu.Unlock()
			switch {
			case err != nil:
				r.errs = append(r.errs, fmt.Sprintf("%s %s at %.1fs: %v", f.Kind, f.Target, f.At.Seconds(), err))
			case ok:
				r.counts[f.Kind]++
			default:
				r.skipped[f.Kind]++
			}
		}()
	}
}

// Wait waits for the faults still going on.
func (r *FaultRunner) Wait() { r.wg.Wait() }

// inject injects one fault; false when there was nothing to hit.
func (r *FaultRunner) inject(ctx context.Context, f Fault) (bool, error) {
	switch f.Kind {
	case FaultKillFunction:
		r.st.Functions[f.Target].kill(f.For)
		return true, nil
	case FaultPauseFunction:
		return r.st.Functions[f.Target].pause(f.For), nil
	case FaultBrokerRefuse, FaultBrokerDrop:
		r.window(f, true)
		select {
		case <-ctx.Done():
		case <-time.After(f.For):
		}
		r.window(f, false)
		return true, nil
	case FaultKillRedis:
		defer r.lock("redis")()
		r.mu.Lock()
		r.kills = append(r.kills, invariants.RedisKill{At: time.Now(), AppendFsync: f.AppendFsync})
		r.mu.Unlock()
		r.st.Redis.Kill()
		time.Sleep(f.For)
		if err := r.st.Redis.Restart(); err != nil {
			return false, fmt.Errorf("restarting redis-server from its AOF: %w", err)
		}
		r.setPolicy(ctx)
		return true, nil
	case FaultRestartHubAPI:
		defer r.lock("hub " + f.Target)()
		return true, r.st.Hubs[f.Target].RestartAPIServer(ctx, f.For)
	case FaultStopAgent:
		defer r.lock("agent " + f.Target)()
		a := r.st.Env.Agents[f.Target]
		a.Stop()
		time.Sleep(f.For)
		return true, a.Restart()
	case FaultDeleteWork:
		return r.deleteWork(ctx, f)
	case FaultDrift:
		return r.driftDeployment(ctx, f)
	}
	return false, fmt.Errorf("unknown fault %s", f.Kind)
}

// window opens or closes a broker fault window; overlapping windows of a kind keep the
// latest share until the last one closes.
func (r *FaultRunner) window(f Fault, open bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	share := f.Share
	if open {
		r.windows[f.Kind]++
	} else if r.windows[f.Kind]--; r.windows[f.Kind] > 0 {
		return
	} else {
		share = 0
	}
	if f.Kind == FaultBrokerRefuse {
		r.st.Faults.SetRefuse(share)
	} else {
		r.st.Faults.SetDrop(share)
	}
}

// setPolicy sets the fsync policy of the next Redis kill, so it is in force well before it.
func (r *FaultRunner) setPolicy(ctx context.Context) {
	r.mu.Lock()
	if len(r.policies) == 0 {
		r.mu.Unlock()
		return
	}
	p := r.policies[0]
	r.policies = r.policies[1:]
	r.mu.Unlock()
	if err := r.st.RDB.ConfigSet(ctx, "appendfsync", p).Err(); err != nil {
		r.mu.Lock()
		r.errs = append(r.errs, "CONFIG SET appendfsync "+p+": "+err.Error())
		r.mu.Unlock()
	}
}

// deleteWork deletes one of ocm-jobs' ManifestWorks of a cluster from outside, as an operator
// cleaning up by hand would.
func (r *FaultRunner) deleteWork(ctx context.Context, f Fault) (bool, error) {
	hub := r.st.Hubs[hubOfCluster(f.Target)]
	works := hub.Work.WorkV1().ManifestWorks(f.Target)
	list, err := works.List(ctx, metav1.ListOptions{LabelSelector: ocm.ManagedSelector + "," + ocm.LabelJob})
	if err != nil || len(list.Items) == 0 {
		return false, nil // the hub may be restarting: nothing hit
	}
	w := list.Items[int(f.Pick%int64(len(list.Items)))]
	if err := works.Delete(ctx, w.Name, metav1.DeleteOptions{}); err != nil {
		return false, nil
	}
	return true, nil
}

// driftDeployment edits one deployed Deployment on a spoke by hand: its replicas, to a value
// no remediation would reach.
func (r *FaultRunner) driftDeployment(ctx context.Context, f Fault) (bool, error) {
	spoke := r.st.Env.Spoke(f.Target)
	list, err := spoke.Kube.AppsV1().Deployments("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return false, nil
	}
	var mine []int
	for i, d := range list.Items {
		if d.Annotations[ocm.AnnotationInstance] != "" {
			mine = append(mine, i)
		}
	}
	if len(mine) == 0 {
		return false, nil
	}
	d := list.Items[mine[int(f.Pick%int64(len(mine)))]]
	replicas := int64(40 + f.Pick%20)
	patch, _ := json.Marshal(map[string]any{"spec": map[string]any{"replicas": replicas}})
	if _, err := spoke.Kube.AppsV1().Deployments(d.Namespace).Patch(ctx, d.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return false, nil
	}
	r.mu.Lock()
	r.drift = append(r.drift, invariants.Drift{Cluster: f.Target, Namespace: d.Namespace, Name: d.Name, At: time.Now(), Replicas: replicas})
	r.mu.Unlock()
	return true, nil
}

func hubOfCluster(cluster string) string {
	for h, c := range clusterOfHub {
		if c == cluster {
			return h
		}
	}
	return ""
}

// Counts are the faults injected by kind: the outside ones, and those injected inside the
// executors (read from their logs and their supervisors).
func (r *FaultRunner) Counts() map[FaultKind]int {
	r.mu.Lock()
	out := map[FaultKind]int{}
	for k, v := range r.counts {
		out[k] = v
	}
	r.mu.Unlock()
	for _, f := range r.st.Functions {
		out[FaultKillAfterApply] += f.crashCounts()[string(FaultKillAfterApply)]
		if strings.HasPrefix(f.name, "executor") {
			out[FaultSlowApply] += countLog(f.log, faults.LogMessage, string(faults.DelayBeforeApply))
		}
	}
	return out
}

// Crashes are exits of function processes that neither a fault of the harness nor the
// kill-after-apply hook caused.
func (r *FaultRunner) Crashes() []string {
	var out []string
	for _, f := range r.st.Functions {
		for why, n := range f.crashCounts() {
			if why != string(FaultKillAfterApply) {
				out = append(out, fmt.Sprintf("%s: %d × %s (log %s)", f.name, n, why, f.log))
			}
		}
	}
	sort.Strings(out)
	return out
}

// Skipped counts faults that found nothing to hit; Errors the faults that failed.
func (r *FaultRunner) Skipped() map[FaultKind]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[FaultKind]int{}
	for k, v := range r.skipped {
		out[k] = v
	}
	return out
}

// Errors are the faults that could not be injected or undone.
func (r *FaultRunner) Errors() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.errs...)
}

// RedisKills and Drift are what the checks need to know of the faults.
func (r *FaultRunner) RedisKills() []invariants.RedisKill {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]invariants.RedisKill(nil), r.kills...)
}

// Drift are the hand edits of spoke Deployments.
func (r *FaultRunner) Drift() []invariants.Drift {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]invariants.Drift(nil), r.drift...)
}

// countLog counts the lines of a log holding every one of words.
func countLog(path string, words ...string) int {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		all := true
		for _, w := range words {
			all = all && strings.Contains(line, w)
		}
		if all {
			n++
		}
	}
	return n
}
