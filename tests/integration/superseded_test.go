package integration

import (
	"context"
	"testing"
	"time"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
)

// TestSupersededExecutionDoesNotApply: an execution stalls between its promote and its apply
// (here the fault hook's delay; in life a stalled process or a slow hub), and meanwhile its job
// ends and is executed again at a higher fence — status sync degraded it, a stop re-opened it as
// DeleteDeployment, that execution found no work to delete and finished. The stalled execution
// must not write its ManifestWork afterwards: that would leave the workload running after the
// undeploy, with nothing left to remove it (found by the chaos suite: seed 1, "left on a spoke
// after undeploy" and an orphan ManifestWork). Two ways it learns: a lease renewal during the
// stall is refused, or (a long lease, no renewal due) the write itself asks the store first.
func TestSupersededExecutionDoesNotApply(t *testing.T) {
	for name, tc := range map[string]struct{ lease, stall string }{
		"a renewal is refused":     {lease: "2s", stall: "8s"},
		"the write asks the store": {lease: "60s", stall: "3s"},
	} {
		t.Run(name, func(t *testing.T) { supersededExecution(t, tc.lease, tc.stall) })
	}
}

func supersededExecution(t *testing.T, lease, stall string) {
	ctx := context.Background()
	prefix := "s" + model.NewID()[:8]
	st := newStore(t, prefix)
	hubID, err := env.Hub.HubID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	vars := baseEnv(prefix, "executor")
	vars["LEASE_TTL"] = lease
	vars["FAULTS"] = "delay-before-apply=1:" + stall
	p := startProcess(t, vars)
	j := createJobs(t, st, 1, "cluster1", "")[0]

	answered := make(chan int, 1)
	go func() { answered <- deliver(t, p.url, "stalled-"+j.ID, j) }()
	running := waitJob(t, st, j.ID, 20*time.Second, "promoted", func(j *model.Job) bool { return j.State == model.Progressing })

	// What status sync and a stop do meanwhile, through the store as they would.
	c := store.Claim{JobID: j.ID, Owner: hubID, Fence: running.Fence}
	if _, err := st.Apply(ctx, c, store.Change{To: model.Degraded, Why: "ManifestWorkMissing: gone from the hub"}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Reopen(ctx, j.ID, store.Reopen{Type: model.DeleteDeployment, By: "test", Why: "stop"}); err != nil {
		t.Fatal(err)
	}
	del, err := st.Promote(ctx, j.ID, hubID, "another-execution")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Finish(ctx, del, "no ManifestWork to delete"); err != nil {
		t.Fatal(err)
	}

	select {
	case status := <-answered:
		t.Logf("the stalled execution answered %d", status)
	case <-time.After(30 * time.Second):
		t.Fatal("the stalled execution did not answer")
	}
	// Give a write that would follow the answer (none should) time to land.
	time.Sleep(time.Second)
	if n := worksOf(t, "cluster1", j.ID); n != 0 {
		t.Errorf("the superseded execution (fence %d) wrote %d ManifestWork(s) after its job was undeployed at fence %d", running.Fence, n, del.Fence)
	}
	got, err := st.GetJob(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != model.Finished || got.Type != model.DeleteDeployment || got.Fence != del.Fence {
		t.Errorf("job is %s %s at fence %d, want DeleteDeployment Finished at fence %d", got.Type, got.State, got.Fence, del.Fence)
	}
}
