package store_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
)

// announced runs change with a Pending context and returns the events it appended, as
// "type state" strings.
func announced(t *testing.T, change func(ctx context.Context) error) []string {
	t.Helper()
	pctx, p := store.WithPending(ctx)
	if err := change(pctx); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range p.Take() {
		out = append(out, fmt.Sprintf("%s %s", strings.TrimSuffix(strings.TrimPrefix(e.Type, "eu.icos.job."), ".v1"), e.Job.State))
	}
	return out
}

// TestOutbox: every change of a job's state appends, in the same step, the event it implies
// — and only those changes do; the entries carry the job as the change left it.
func TestOutbox(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, store.Options{}).As("/ocm-jobs/hubs/hub-a/test")
		g := newGroup(newJob("web", true), newJob("db", false))
		var c store.Claim
		steps := []struct {
			name   string
			change func(ctx context.Context) error
			want   []string
		}{
			{"create: the job with a target is announced", func(ctx context.Context) error { return s.CreateGroup(ctx, g, "test") }, []string{"created Created"}},
			{"target: the other one now", func(ctx context.Context) error {
				_, err := s.SetTargets(ctx, g.Jobs[1].ID, model.Target{ClusterName: "cluster1", Orchestrator: model.OCM}, "test")
				return err
			}, []string{"created Created"}},
			{"promote", func(ctx context.Context) (err error) { c, err = s.Promote(ctx, g.Jobs[0].ID, hubA, "e1"); return err }, []string{"progressing Progressing"}},
			{"record: no event", func(ctx context.Context) error {
				_, err := s.Record(ctx, c, store.Record{Manifests: []model.PlainManifest{{YamlString: "kind: Secret"}}, Remediated: true})
				return err
			}, nil},
			{"resource only: no event", func(ctx context.Context) error {
				_, err := s.WriteResourceStatus(ctx, c, model.Resource{ManifestWorkName: "job-x"})
				return err
			}, nil},
			{"lease: no event", func(ctx context.Context) error { return s.MarkApplied(ctx, c) }, nil},
			{"degrade", func(ctx context.Context) error { _, err := s.Degrade(ctx, c, "agent says no"); return err }, []string{"degraded Degraded"}},
			{"degrade again: nothing changes", func(ctx context.Context) error { _, err := s.Degrade(ctx, c, "again"); return err }, nil},
			{"finish", func(ctx context.Context) error { _, err := s.Finish(ctx, c, "recovered"); return err }, []string{"finished Finished"}},
			{"reopen as an update", func(ctx context.Context) error {
				_, err := s.Reopen(ctx, g.Jobs[0].ID, store.Reopen{Type: model.UpdateDeployment, SubType: model.ScaleOut})
				return err
			}, []string{"created Created"}},
			{"a refused change: nothing", func(ctx context.Context) error {
				if _, err := s.Finish(ctx, c, "stale"); !errors.Is(err, store.ErrWrongState) && !errors.Is(err, store.ErrFenced) {
					return fmt.Errorf("stale finish: %v", err)
				}
				return nil
			}, nil},
			{"never promoted, deleted: finished at once", func(ctx context.Context) error {
				_, err := s.Reopen(ctx, g.Jobs[1].ID, store.Reopen{Type: model.DeleteDeployment})
				return err
			}, []string{"finished Finished"}},
		}
		for _, st := range steps {
			if got := announced(t, st.change); strings.Join(got, ",") != strings.Join(st.want, ",") {
				t.Errorf("%s: announced %v, want %v", st.name, got, st.want)
			}
		}
		// Every entry is in the outbox until acknowledged; a drain sees those old enough.
		depth := must(s.OutboxDepth(ctx)).in(t)
		if depth != 7 {
			t.Errorf("outbox depth %d, want 7", depth)
		}
		if due := must(s.OutboxDue(ctx, time.Hour, 100)).in(t); len(due) != 0 {
			t.Errorf("%d entries due although none is an hour old", len(due))
		}
		due := must(s.OutboxDue(ctx, 0, 100)).in(t)
		if len(due) != 7 {
			t.Fatalf("due %d entries, want 7", len(due))
		}
		for _, e := range due {
			if e.Source != "/ocm-jobs/hubs/hub-a/test" || e.Job.ID == "" || e.Job.JobGroupID != g.ID || len(e.Job.Manifests) != 0 {
				t.Errorf("entry %s: source %q job %+v", e.ID, e.Source, e.Job)
			}
		}
		last := due[len(due)-1]
		if last.Type != "eu.icos.job.finished.v1" || last.Job.ID != g.Jobs[1].ID || last.Job.Type != model.DeleteDeployment {
			t.Errorf("newest entry %+v", last)
		}
		if err := s.AckOutbox(ctx, due); err != nil {
			t.Fatal(err)
		}
		if d := must(s.OutboxDepth(ctx)).in(t); d != 0 {
			t.Errorf("outbox depth %d after acknowledging everything", d)
		}
	})
}

// TestRecordOncePerExecution: a remediation's result is recorded with its execution's fence;
// the move of a reallocation is recorded and cleared; a job that ends has no move.
func TestRecordOncePerExecution(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, store.Options{})
		id := oneJob(t, s)
		c := promote(t, s, id, hubA, "e1")
		ms := []model.PlainManifest{{YamlString: "kind: ConfigMap\nmetadata: {name: remediated}"}}
		if ok := must(s.Record(ctx, c, store.Record{Manifests: ms, Remediated: true, Why: "scale-out"})).in(t); !ok {
			t.Error("first record changed nothing")
		}
		if ok := must(s.Record(ctx, c, store.Record{Manifests: ms, Remediated: true})).in(t); ok {
			t.Error("recording the same result again changed something")
		}
		j := getJob(t, s, id)
		if j.Remediated != c.Fence || j.Manifests[0].YamlString != ms[0].YamlString {
			t.Errorf("remediated at %d, manifests %v", j.Remediated, j.Manifests)
		}
		m := &model.Move{From: "cluster1", To: "cluster2", Phase: model.MoveApply, Deadline: time.Now().Add(time.Minute).UTC().Truncate(time.Second)}
		must(s.Record(ctx, c, store.Record{Move: m})).in(t)
		if got := getJob(t, s, id).Move; got == nil || *got != *m {
			t.Errorf("move %+v, want %+v", got, m)
		}
		must(s.Degrade(ctx, c, "ReallocationFailed")).in(t)
		if got := getJob(t, s, id).Move; got != nil {
			t.Errorf("a Degraded job keeps its move %+v", got)
		}
		if _, err := s.Record(ctx, c, store.Record{Move: m}); !errors.Is(err, store.ErrWrongState) {
			t.Errorf("record on a Degraded job: %v", err)
		}
		// A new execution starts with nothing of the last one.
		must(s.Reopen(ctx, id, store.Reopen{Type: model.UpdateDeployment, SubType: model.ScaleOut})).in(t)
		c2 := promote(t, s, id, hubA, "e2")
		if j := getJob(t, s, id); j.Remediated != 0 || j.Applied != 0 || c2.Fence != c.Fence+1 {
			t.Errorf("re-opened job remediated %d applied %d fence %d", j.Remediated, j.Applied, c2.Fence)
		}
		if err := s.MarkApplied(ctx, c2); err != nil {
			t.Fatal(err)
		}
		if j := getJob(t, s, id); j.Applied != c2.Fence || !j.LeaseUntil.Before(time.Now().Add(time.Second)) {
			t.Errorf("applied %d, lease until %v", j.Applied, j.LeaseUntil)
		}
	})
}

// TestCreatedResource: whoever places jobs may say why a Created job waits; once the job
// runs, it may not.
func TestCreatedResource(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, store.Options{})
		id := oneJob(t, s)
		r := model.Resource{ID: id}
		r.SetCondition(metav1.Condition{Type: model.ConditionProgressing, Status: metav1.ConditionFalse, Reason: model.ReasonNoManagingHub, Message: "no hub"})
		if ok := must(s.WriteCreatedResource(ctx, id, nil, r)).in(t); !ok {
			t.Error("not written")
		}
		if _, err := s.WriteCreatedResource(ctx, id, nil, r); err != nil {
			t.Errorf("writing the same resource again: %v", err)
		}
		other := r
		other.ManifestWorkName = "x"
		if _, err := s.WriteCreatedResource(ctx, id, nil, other); !errors.Is(err, store.ErrResourceChanged) {
			t.Errorf("a write derived from an older resource: %v", err)
		}
		promote(t, s, id, hubA, "e1")
		if _, err := s.WriteCreatedResource(ctx, id, getJob(t, s, id).Resource, other); !errors.Is(err, store.ErrWrongState) {
			t.Errorf("a write on a running job: %v", err)
		}
	})
}

// TestMemosCooldownsAndHubs: the keys of idempotency memos, incompliance cooldowns and the
// hub registry are the store's, under its prefix: two installs sharing a Redis share none.
func TestMemosCooldownsAndHubs(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, store.Options{})
		other := newStore(t, b, store.Options{})
		if ok := must(s.BeginMemo(ctx, "jobs", "/src", "e1", time.Minute)).in(t); !ok {
			t.Fatal("first delivery not first")
		}
		if ok := must(s.BeginMemo(ctx, "jobs", "/src", "e1", time.Minute)).in(t); ok {
			t.Error("second delivery began too")
		}
		if ok := must(other.BeginMemo(ctx, "jobs", "/src", "e1", time.Minute)).in(t); !ok {
			t.Error("another install shares this install's memos")
		}
		if ok := must(s.BeginMemo(ctx, "executor:hub-a", "/src", "e1", time.Minute)).in(t); !ok {
			t.Error("another scope shares the memo")
		}
		if v := must(s.Memo(ctx, "jobs", "/src", "e1")).in(t); v != store.MemoPending {
			t.Errorf("memo %q, want pending", v)
		}
		must(0, s.PutMemo(ctx, "jobs", "/src", "e1", `{"status":200}`, time.Minute)).in(t)
		if v := must(s.Memo(ctx, "jobs", "/src", "e1")).in(t); v != `{"status":200}` {
			t.Errorf("memo %q", v)
		}
		must(0, s.ForgetMemo(ctx, "jobs", "/src", "e1")).in(t)
		if v := must(s.Memo(ctx, "jobs", "/src", "e1")).in(t); v != "" {
			t.Errorf("forgotten memo %q", v)
		}

		if ok := must(s.StartCooldown(ctx, "job-1", "cpu", "inc-1", time.Minute)).in(t); !ok {
			t.Error("first cooldown refused")
		}
		if ok := must(s.StartCooldown(ctx, "job-1", "cpu", "inc-2", time.Minute)).in(t); ok {
			t.Error("second incompliance within the cooldown started one")
		}
		if ok := must(s.StartCooldown(ctx, "job-1", "cpu", "inc-1", time.Minute)).in(t); !ok {
			t.Error("a redelivery of the incompliance that started the cooldown is refused by it")
		}
		if ok := must(other.StartCooldown(ctx, "job-1", "cpu", "inc-3", time.Minute)).in(t); !ok {
			t.Error("another install shares the cooldown")
		}
		must(0, s.EndCooldown(ctx, "job-1", "cpu")).in(t)
		if ok := must(s.StartCooldown(ctx, "job-1", "cpu", "inc-4", time.Minute)).in(t); !ok {
			t.Error("ended cooldown still holds")
		}

		must(0, s.RegisterHub(ctx, "hub-a", []string{"cluster2", "cluster1"}, time.Minute)).in(t)
		must(0, s.RegisterHub(ctx, "hub-gone", []string{"cluster9"}, time.Millisecond)).in(t)
		time.Sleep(5 * time.Millisecond)
		hubs := must(s.Hubs(ctx)).in(t)
		if len(hubs) != 1 || strings.Join(hubs["hub-a"].Clusters, ",") != "cluster1,cluster2" {
			t.Errorf("hubs %+v", hubs)
		}
		if h := must(other.Hubs(ctx)).in(t); len(h) != 0 {
			t.Errorf("another install sees hubs %v", h)
		}
	})
}

// TestConsistencyCheckCanFail: the consistency check reports an index that disagrees with a
// job, and a history that disagrees with it.
func TestConsistencyCheckCanFail(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, store.Options{})
		id := oneJob(t, s)
		if p := must(s.CheckConsistency(ctx)).in(t); len(p) != 0 {
			t.Fatalf("a fresh store has problems: %v", p)
		}
		key := ""
		for _, k := range keysWith(t, b.client, s.Options().Prefix) {
			if strings.HasSuffix(k, ":job:"+id) {
				key = k
			}
		}
		if err := b.client.HSet(ctx, key, "state", "3").Err(); err != nil {
			t.Fatal(err)
		}
		p := must(s.CheckConsistency(ctx)).in(t)
		joined := strings.Join(p, "\n")
		if !strings.Contains(joined, "lacks "+id) || !strings.Contains(joined, "newest history entry") {
			t.Errorf("problems %v", p)
		}
		// Leave the store consistent for the check that runs when the test ends.
		if err := b.client.HSet(ctx, key, "state", "1").Err(); err != nil {
			t.Fatal(err)
		}
	})
}

// TestPromoteJob: the promote that returns the job returns it as GetJob reads it right after,
// with the same claim as Promote, and still hands over its job.progressing event — even when a
// value of the job looks like the script's markers (a lease holder named "#outbox").
func TestPromoteJob(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, store.Options{}).As("/ocm-jobs/hubs/hub-a/test")
		id := oneJob(t, s)
		var (
			c   store.Claim
			got *model.Job
		)
		events := announced(t, func(ctx context.Context) error {
			var err error
			c, got, err = s.PromoteJob(ctx, id, "hub-a", "#outbox", nil)
			return err
		})
		if c.Fence != 1 || c.Owner != "hub-a" || c.From != model.Created || got == nil {
			t.Fatalf("claim %+v, job %v", c, got)
		}
		if diff := cmp.Diff(getJob(t, s, id), got); diff != "" {
			t.Errorf("the promoted job differs from GetJob's (-get +promote):\n%s", diff)
		}
		if len(events) != 1 || events[0] != "progressing Progressing" {
			t.Errorf("events %v, want one job.progressing", events)
		}
	})
}

// TestPromoteExpectingATarget: a promote that expects the job's target (the executor's, from
// the job.created event, without reading the job first) promotes only a Created job stored
// with exactly that target; any other job is refused, untouched, and announced nothing.
func TestPromoteExpectingATarget(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, store.Options{})
		cluster1 := &model.Target{ClusterName: "cluster1", Orchestrator: model.OCM}
		refused := map[string]struct {
			expect *model.Target
			setup  func(id string)
			want   error
		}{
			"another cluster": {expect: &model.Target{ClusterName: "cluster2", Orchestrator: model.OCM}, want: store.ErrNoTarget},
			"another orchestrator": {expect: &model.Target{ClusterName: "cluster1", Orchestrator: model.Orchestrator("nuvla")},
				want: store.ErrNoTarget},
			"a node the job does not name": {expect: &model.Target{ClusterName: "cluster1", NodeName: "n1", Orchestrator: model.OCM},
				want: store.ErrNoTarget},
			"retargeted since the event": {expect: cluster1, want: store.ErrNoTarget, setup: func(id string) {
				must(s.SetTargets(ctx, id, model.Target{ClusterName: "cluster2", Orchestrator: model.OCM}, "test")).in(t)
			}},
			"no longer Created": {expect: cluster1, want: store.ErrWrongState, setup: func(id string) {
				c := promote(t, s, id, hubB, "b-1")
				if err := s.ReleaseLease(ctx, c); err != nil {
					t.Fatal(err)
				}
			}},
		}
		for name, tc := range refused {
			id := oneJob(t, s)
			if tc.setup != nil {
				tc.setup(id)
			}
			before := getJob(t, s, id)
			events := announced(t, func(ctx context.Context) error {
				_, _, err := s.PromoteJob(ctx, id, hubA, "a-1", tc.expect)
				if !errors.Is(err, tc.want) {
					t.Errorf("%s: promote: %v, want %v", name, err, tc.want)
				}
				return nil
			})
			if diff := cmp.Diff(before, getJob(t, s, id)); diff != "" {
				t.Errorf("%s: the refused promote changed the job (-before +after):\n%s", name, diff)
			}
			if len(events) != 0 {
				t.Errorf("%s: the refused promote announced %v", name, events)
			}
		}
		id := oneJob(t, s)
		c, got, err := s.PromoteJob(ctx, id, hubA, "a-1", cluster1)
		if err != nil || c.Fence != 1 || got == nil || got.State != model.Progressing || got.OwnerID != hubA {
			t.Fatalf("promote of a Created job with the expected target: claim %+v, job %v, %v", c, got, err)
		}
	})
}

// TestOutboxEntryIsTheStoredJob: create, promote and a change of state announce the job
// without reading it again (they patch what they wrote); the entry's fields are exactly the
// job's as stored right after the change, a move a finish cleared included.
func TestOutboxEntryIsTheStoredJob(t *testing.T) {
	fields := []string{"doc", "state", "type", "sub_type", "owner", "fence", "orch", "targets", "resource",
		"move", "created_at", "updated_at"}
	forEachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, store.Options{})
		var id string
		var c store.Claim
		status := model.Resource{ManifestWorkName: "w", Conditions: []model.Condition{{Type: "Applied", Status: "True", Reason: "r"}}}
		steps := []struct {
			name   string
			change func(ctx context.Context) error
		}{
			{"create", func(ctx context.Context) error { id = oneJob(t, s); return nil }},
			{"promote", func(ctx context.Context) (err error) { c, err = s.Promote(ctx, id, hubA, "e1"); return err }},
			{"degrade with a resource and a move", func(ctx context.Context) error {
				if _, err := s.WriteResourceStatus(ctx, c, model.Resource{ManifestWorkName: "w"}); err != nil {
					return err
				}
				m := &model.Move{From: "cluster1", To: "cluster2", Phase: model.MoveApply, Deadline: time.Now().Add(time.Minute).UTC().Truncate(time.Second)}
				if _, err := s.Record(ctx, c, store.Record{Move: m}); err != nil {
					return err
				}
				_, err := s.Apply(ctx, c, store.Change{To: model.Degraded, Why: "failed", Resource: &status})
				return err
			}},
			{"finish", func(ctx context.Context) error { _, err := s.Finish(ctx, c, "recovered"); return err }},
		}
		for _, st := range steps {
			if err := st.change(ctx); err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
			bucket := fmt.Sprintf("%s:{b:%02x}", s.Options().Prefix, model.Bucket(id))
			last := must(b.client.XRevRangeN(ctx, bucket+":outbox", "+", "-", 1).Result()).in(t)
			if len(last) != 1 {
				t.Fatalf("%s: no outbox entry", st.name)
			}
			stored := must(b.client.HMGet(ctx, bucket+":job:"+id, fields...).Result()).in(t)
			for i, f := range fields {
				got, inEntry := last[0].Values[f]
				want, _ := stored[i].(string)
				if inEntry != (stored[i] != nil) || (inEntry && got != want) {
					t.Errorf("%s: the entry's %s is %v (present %v), the job's %q (present %v)", st.name, f, got, inEntry, want, stored[i] != nil)
				}
			}
		}
	})
}
