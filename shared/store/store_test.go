package store_test

import (
	"context"
	"encoding/json"
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

const (
	hubA = "hub-a"
	hubB = "hub-b"
)

var ctx = context.Background()

const configMap = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\ndata:\n  a: b\n"

func newJob(component string, target bool) model.Job {
	j := model.Job{
		Component: component,
		Namespace: "shop",
		Manifests: []model.PlainManifest{{YamlString: configMap}},
	}
	if target {
		j.Targets = &model.Target{ClusterName: "cluster1", Orchestrator: model.OCM}
	}
	return j
}

func newGroup(jobs ...model.Job) *model.JobGroup {
	return &model.JobGroup{AppName: "shop", AppDescription: "a shop", Jobs: jobs}
}

// oneJob stores a group with one job that has a target and returns the job's id.
func oneJob(t *testing.T, s *store.Store) string {
	t.Helper()
	g := newGroup(newJob("web", true))
	if err := s.CreateGroup(ctx, g, "test"); err != nil {
		t.Fatal(err)
	}
	return g.Jobs[0].ID
}

func getJob(t *testing.T, s *store.Store, id string) *model.Job {
	t.Helper()
	j, err := s.GetJob(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func promote(t *testing.T, s *store.Store, id, owner, holder string) store.Claim {
	t.Helper()
	c, err := s.Promote(ctx, id, owner, holder)
	if err != nil {
		t.Fatalf("promote %s by %s/%s: %v", id, owner, holder, err)
	}
	return c
}

// checked is a (value, error) pair a test unwraps with in(t).
type checked[T any] struct {
	v   T
	err error
}

func must[T any](v T, err error) checked[T] { return checked[T]{v, err} }

// in fails the test on an error and returns the value.
func (c checked[T]) in(t *testing.T) T {
	t.Helper()
	if c.err != nil {
		t.Fatal(c.err)
	}
	return c.v
}

func ids(jobs []model.Job) []string {
	out := make([]string, len(jobs))
	for i, j := range jobs {
		out[i] = j.ID
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestCreateAndRead(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, store.Options{})
		g := newGroup(newJob("web", true), newJob("db", true), newJob("cache", false))
		if err := s.CreateGroup(ctx, g, "test"); err != nil {
			t.Fatal(err)
		}
		for _, j := range g.Jobs {
			if model.Bucket(j.ID) != model.Bucket(g.ID) {
				t.Errorf("job %s is not in the bucket of group %s", j.ID, g.ID)
			}
		}

		got := must(s.GetGroup(ctx, g.ID)).in(t)
		if got.AppName != "shop" || got.AppDescription != "a shop" || len(got.Jobs) != 3 {
			t.Fatalf("group read back as %+v", got)
		}
		web := getJob(t, s, g.Jobs[0].ID)
		want := g.Jobs[0]
		if diff := cmp.Diff(&want, web); diff != "" {
			t.Errorf("job read back differs (-created +read):\n%s", diff)
		}
		if web.State != model.Created || web.Type != model.CreateDeployment || web.Orchestrator != model.OCM ||
			web.JobGroupName != "shop" || web.CreatedAt.IsZero() {
			t.Errorf("job read back as %+v", web)
		}

		// ICOS JSON names on the wire.
		raw, _ := json.Marshal(web)
		for _, name := range []string{`"id":`, `"job_group_id":`, `"owner_id":`, `"job_group_name":`,
			`"job_group_description":`, `"type":5`, `"sub_type":`, `"state":1`, `"manifests":[{"yamlString":`,
			`"targets":{"cluster_name":"cluster1","orchestrator":"ocm"}`, `"orchestrator":"ocm"`,
			// Never null, as ICOS 1.4.1 creates it and its OCM deployment manager reads it.
			`"resource":{"id":"` + web.ID + `","job_id":"` + web.ID + `","resource_uuid":"` + web.ID + `","resource_name":"web","conditions":[]}`,
			`"namespace":"shop"`, `"created_at":`, `"updated_at":`} {
			if !strings.Contains(string(raw), name) {
				t.Errorf("job JSON lacks %s: %s", name, raw)
			}
		}

		jobs := must(s.GroupJobs(ctx, g.ID)).in(t)
		if len(jobs) != 3 {
			t.Errorf("group jobs: %v", ids(jobs))
		}
		created := ids(must(s.JobsInState(ctx, model.Created)).in(t))
		if len(created) != 3 {
			t.Errorf("jobs in Created: %v", created)
		}
		exec := ids(must(s.ExecutableJobs(ctx, model.OCM, hubA)).in(t))
		if len(exec) != 2 || contains(exec, g.Jobs[2].ID) {
			t.Errorf("executable jobs %v: want the two with a target", exec)
		}
		g2 := newGroup(newJob("api", true))
		if err := s.CreateGroup(ctx, g2, "test"); err != nil {
			t.Fatal(err)
		}
		groups := must(s.ListGroups(ctx)).in(t)
		counts := map[string]int{}
		for _, lg := range groups {
			counts[lg.ID] = len(lg.Jobs)
		}
		if !cmp.Equal(counts, map[string]int{g.ID: 3, g2.ID: 1}) {
			t.Errorf("groups and their job counts: %v", counts)
		}
		if all := must(s.ListJobs(ctx)).in(t); len(all) != 4 {
			t.Errorf("all jobs: %v", ids(all))
		}
		h := must(s.History(ctx, web.ID)).in(t)
		if len(h) != 1 || h[0].Action != "create" || h[0].To != model.Created || h[0].By != "test" {
			t.Errorf("history: %+v", h)
		}

		// A job created without a target gets one later and becomes executable.
		changed := must(s.SetTargets(ctx, g.Jobs[2].ID, model.Target{ClusterName: "cluster2", Orchestrator: model.OCM}, "matchmaker")).in(t)
		if !changed {
			t.Error("SetTargets reported no change")
		}
		if exec := ids(must(s.ExecutableJobs(ctx, model.OCM, hubA)).in(t)); len(exec) != 4 {
			t.Errorf("executable after target set: %v", exec)
		}
		if changed := must(s.SetTargets(ctx, g.Jobs[2].ID, model.Target{ClusterName: "cluster2", Orchestrator: model.OCM}, "matchmaker")).in(t); changed {
			t.Error("setting the same target again reported a change")
		}
		// Moving it to another orchestrator moves it between indexes.
		must(s.SetTargets(ctx, g.Jobs[2].ID, model.Target{ClusterName: "edge", Orchestrator: model.Nuvla}, "matchmaker")).in(t)
		if exec := ids(must(s.ExecutableJobs(ctx, model.Nuvla, hubA)).in(t)); len(exec) != 1 || exec[0] != g.Jobs[2].ID {
			t.Errorf("nuvla executable: %v", exec)
		}

		// Creating it again changes nothing.
		before := snapshot(t, b.client, s.Options().Prefix)
		again := newGroup(newJob("web", true))
		again.ID = g.ID
		err := s.CreateGroup(ctx, again, "test")
		if !errors.Is(err, store.ErrExists) {
			t.Errorf("creating group %s twice: %v, want ErrExists", g.ID, err)
		}
		// One job id taken (in another group) fails the whole group.
		clash := newGroup(newJob("a", true), newJob("b", true))
		clash.ID = model.NewJobID(g.ID) // same bucket as g, so its jobs may reuse g's ids
		clash.Jobs[1].ID = g.Jobs[1].ID
		err = s.CreateGroup(ctx, clash, "test")
		var ge *store.GuardError
		if !errors.As(err, &ge) || ge.Guard != store.GuardAbsent || !errors.Is(err, store.ErrExists) {
			t.Errorf("group with a taken job id: %v", err)
		}
		unchanged(t, b, s, before)
	})
}

func TestBadInputWritesNothing(t *testing.T) {
	big := strings.Repeat("x", 2048)
	cases := map[string]struct {
		group  func() *model.JobGroup
		fields []string // every one must be named in the message
	}{
		"invalid enums": {group: func() *model.JobGroup {
			j := newJob("web", true)
			j.Type, j.State, j.SubType = 9, 7, "bogus"
			j.Targets.Orchestrator = "k8s"
			return newGroup(j)
		}, fields: []string{"jobs[0].type", "jobs[0].state", "jobs[0].sub_type", "jobs[0].targets.orchestrator"}},
		"missing required fields": {group: func() *model.JobGroup {
			j := newJob("web", true)
			j.Manifests = nil
			j.Targets.ClusterName = ""
			g := newGroup(j, model.Job{Manifests: []model.PlainManifest{{}}})
			g.AppName = ""
			return g
		}, fields: []string{"appName", "jobs[0].manifests", "jobs[0].targets.cluster_name", "jobs[1].manifests[0].yamlString"}},
		"no jobs": {group: func() *model.JobGroup { return newGroup() }, fields: []string{"jobs"}},
		"oversized manifests": {group: func() *model.JobGroup {
			j := newJob("web", true)
			j.Manifests = []model.PlainManifest{{YamlString: big}}
			return newGroup(newJob("ok", true), j)
		}, fields: []string{"jobs[1].manifests", "at most 1024 bytes"}},
		"owner and fence are the store's": {group: func() *model.JobGroup {
			j := newJob("web", true)
			j.OwnerID, j.Fence = hubA, 3
			return newGroup(j)
		}, fields: []string{"jobs[0].owner_id", "jobs[0].fence"}},
		"job outside its group's bucket": {group: func() *model.JobGroup {
			g := newGroup(newJob("web", true))
			g.ID = "00000000-0000-4000-8000-000000000000"
			g.Jobs[0].ID = "ff000000-0000-4000-8000-000000000000"
			return g
		}, fields: []string{"jobs[0].id"}},
		"a new job is a created CreateDeployment": {group: func() *model.JobGroup {
			j := newJob("web", true)
			j.Type, j.State = model.DeleteDeployment, model.Finished
			return newGroup(j)
		}, fields: []string{"jobs[0].type", "jobs[0].state"}},
	}
	forEachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, store.Options{MaxManifestBytes: 1024})
		existing := oneJob(t, s)
		for name, tc := range cases {
			t.Run(name, func(t *testing.T) {
				before := snapshot(t, b.client, s.Options().Prefix)
				err := s.CreateGroup(ctx, tc.group(), "test")
				if !errors.Is(err, store.ErrInvalid) {
					t.Fatalf("got %v, want ErrInvalid", err)
				}
				var ie *store.InvalidError
				if !errors.As(err, &ie) {
					t.Fatalf("got %T, want *store.InvalidError", err)
				}
				for _, f := range tc.fields {
					if !strings.Contains(err.Error(), f) {
						t.Errorf("message does not name %s: %v", f, err)
					}
				}
				unchanged(t, b, s, before)
			})
		}

		unknown := model.NewID()
		claim := store.Claim{JobID: unknown, Owner: hubA, Holder: "x", Fence: 1}
		ops := map[string]struct {
			do   func() error
			want error
		}{
			"get unknown job":      {func() error { _, err := s.GetJob(ctx, unknown); return err }, store.ErrNotFound},
			"history of unknown":   {func() error { _, err := s.History(ctx, unknown); return err }, store.ErrNotFound},
			"get unknown group":    {func() error { _, err := s.GetGroup(ctx, unknown); return err }, store.ErrNotFound},
			"delete unknown group": {func() error { return s.DeleteGroup(ctx, unknown, "test") }, store.ErrNotFound},
			"promote unknown":      {func() error { _, err := s.Promote(ctx, unknown, hubA, "x"); return err }, store.ErrNotFound},
			"finish unknown":       {func() error { _, err := s.Finish(ctx, claim, ""); return err }, store.ErrNotFound},
			"renew unknown":        {func() error { _, err := s.RenewLease(ctx, claim); return err }, store.ErrNotFound},
			"release unknown":      {func() error { return s.ReleaseLease(ctx, claim) }, store.ErrNotFound},
			"status of unknown":    {func() error { _, err := s.WriteResourceStatus(ctx, claim, model.Resource{}); return err }, store.ErrNotFound},
			"target unknown": {func() error {
				_, err := s.SetTargets(ctx, unknown, model.Target{ClusterName: "c", Orchestrator: model.OCM}, "")
				return err
			}, store.ErrNotFound},
			"reopen unknown": {func() error { _, err := s.Reopen(ctx, unknown, store.Reopen{Type: model.DeleteDeployment}); return err }, store.ErrNotFound},
			"settle unknown": {func() error {
				_, err := s.SetIncomplianceOutcome(ctx, unknown, model.OutcomeApplied, "", "")
				return err
			}, store.ErrNotFound},
			"get unknown incompl.":  {func() error { _, err := s.GetIncompliance(ctx, unknown); return err }, store.ErrNotFound},
			"empty job id":          {func() error { _, err := s.GetJob(ctx, ""); return err }, store.ErrInvalid},
			"promote without owner": {func() error { _, err := s.Promote(ctx, existing, "", "x"); return err }, store.ErrInvalid},
			"claim without fence":   {func() error { _, err := s.Finish(ctx, store.Claim{JobID: existing, Owner: hubA}, ""); return err }, store.ErrInvalid},
			"reopen a never-deployed job as create": {func() error {
				_, err := s.Reopen(ctx, existing, store.Reopen{Type: model.CreateDeployment})
				return err
			}, store.ErrWrongState},
			"reopen update without sub_type": {func() error {
				_, err := s.Reopen(ctx, existing, store.Reopen{Type: model.UpdateDeployment})
				return err
			}, store.ErrInvalid},
			"reopen with bad remediation": {func() error {
				_, err := s.Reopen(ctx, existing, store.Reopen{Type: model.UpdateDeployment, SubType: model.Patch,
					Remediation: &model.Remediation{Action: model.Patch}})
				return err
			}, store.ErrInvalid},
			"replace with oversized manifests": {func() error {
				_, err := s.Reopen(ctx, existing, store.Reopen{Type: model.ReplaceDeployment, Manifests: []model.PlainManifest{{YamlString: big}}})
				return err
			}, store.ErrInvalid},
			"target without cluster": {func() error {
				_, err := s.SetTargets(ctx, existing, model.Target{Orchestrator: model.OCM}, "")
				return err
			}, store.ErrInvalid},
			"status with a bad condition": {func() error {
				_, err := s.WriteResourceStatus(ctx, store.Claim{JobID: existing, Owner: hubA, Fence: 1},
					model.Resource{Conditions: []model.Condition{{Type: "Available", Status: "Maybe"}}})
				return err
			}, store.ErrInvalid},
			"jobs in state 9":    {func() error { _, err := s.JobsInState(ctx, 9); return err }, store.ErrInvalid},
			"executable for k8s": {func() error { _, err := s.ExecutableJobs(ctx, "k8s", hubA); return err }, store.ErrInvalid},
			"incompliance without policy": {func() error {
				_, err := s.RecordIncompliance(ctx, &model.Incompliance{Remediation: "bogus"})
				return err
			}, store.ErrInvalid},
		}
		for name, tc := range ops {
			t.Run(name, func(t *testing.T) {
				before := snapshot(t, b.client, s.Options().Prefix)
				err := tc.do()
				if !errors.Is(err, tc.want) {
					t.Fatalf("got %v, want %v", err, tc.want)
				}
				if err.Error() == "" {
					t.Error("empty message")
				}
				unchanged(t, b, s, before)
			})
		}
	})
}

// env is one job in a known situation, for the transition table.
type env struct {
	s     *store.Store
	id    string
	claim store.Claim
}

func TestTransitions(t *testing.T) {
	promoted := func(t *testing.T, e *env) { e.claim = promote(t, e.s, e.id, hubA, "exec-1") }
	finished := func(t *testing.T, e *env) {
		promoted(t, e)
		must(e.s.Finish(ctx, e.claim, "applied")).in(t)
	}
	degraded := func(t *testing.T, e *env) {
		promoted(t, e)
		must(e.s.Degrade(ctx, e.claim, "failed")).in(t)
	}
	reopened := func(t *testing.T, e *env) {
		finished(t, e)
		must(e.s.Reopen(ctx, e.id, store.Reopen{Type: model.UpdateDeployment, SubType: model.ScaleOut, By: "test"})).in(t)
	}
	wrongFence := func(c store.Claim) store.Claim { c.Fence++; return c }
	other := func(c store.Claim) store.Claim { c.Owner = hubB; return c }
	remediation := &model.Remediation{IncomplianceID: "inc-1", Action: model.Patch, Patch: `{"spec":{"replicas":3}}`}

	type result struct {
		state   model.JobState
		typ     model.JobType
		owner   string
		fence   uint64
		changed bool
	}
	cases := map[string]struct {
		setup  func(*testing.T, *env)
		act    func(*env) (bool, error)
		want   result
		guard  string
		target error
	}{
		"promote a created job": {
			act:  func(e *env) (bool, error) { _, err := e.s.Promote(ctx, e.id, hubA, "x"); return true, err },
			want: result{state: model.Progressing, typ: model.CreateDeployment, owner: hubA, fence: 1, changed: true},
		},
		"promote a promoted job": {setup: promoted,
			act:   func(e *env) (bool, error) { _, err := e.s.Promote(ctx, e.id, hubB, "y"); return true, err },
			guard: store.GuardLease, target: store.ErrLeaseHeld},
		"promote a finished job": {setup: finished,
			act:   func(e *env) (bool, error) { _, err := e.s.Promote(ctx, e.id, hubA, "y"); return true, err },
			guard: store.GuardState, target: store.ErrWrongState},
		"promote another hub's re-opened job": {setup: reopened,
			act:   func(e *env) (bool, error) { _, err := e.s.Promote(ctx, e.id, hubB, "y"); return true, err },
			guard: store.GuardOwner, target: store.ErrNotOwner},
		"promote my re-opened job": {setup: reopened,
			act:  func(e *env) (bool, error) { _, err := e.s.Promote(ctx, e.id, hubA, "exec-2"); return true, err },
			want: result{state: model.Progressing, typ: model.UpdateDeployment, owner: hubA, fence: 2, changed: true}},
		"finish": {setup: promoted,
			act:  func(e *env) (bool, error) { return e.s.Finish(ctx, e.claim, "ok") },
			want: result{state: model.Finished, typ: model.CreateDeployment, owner: hubA, fence: 1, changed: true}},
		"finish twice": {setup: finished,
			act:  func(e *env) (bool, error) { return e.s.Finish(ctx, e.claim, "ok") },
			want: result{state: model.Finished, typ: model.CreateDeployment, owner: hubA, fence: 1, changed: false}},
		"finish with another fence": {setup: promoted,
			act:   func(e *env) (bool, error) { return e.s.Finish(ctx, wrongFence(e.claim), "") },
			guard: store.GuardFence, target: store.ErrFenced},
		"finish as another hub": {setup: promoted,
			act:   func(e *env) (bool, error) { return e.s.Finish(ctx, other(e.claim), "") },
			guard: store.GuardOwner, target: store.ErrNotOwner},
		"finish a created job": {setup: reopened,
			act:   func(e *env) (bool, error) { return e.s.Finish(ctx, e.claim, "") },
			guard: store.GuardState, target: store.ErrWrongState},
		"degrade": {setup: promoted,
			act:  func(e *env) (bool, error) { return e.s.Degrade(ctx, e.claim, "image pull") },
			want: result{state: model.Degraded, typ: model.CreateDeployment, owner: hubA, fence: 1, changed: true}},
		"degrade a finished job": {setup: finished,
			act:  func(e *env) (bool, error) { return e.s.Degrade(ctx, e.claim, "unavailable") },
			want: result{state: model.Degraded, typ: model.CreateDeployment, owner: hubA, fence: 1, changed: true}},
		"progress a degraded job": {setup: degraded,
			act:  func(e *env) (bool, error) { return e.s.Progress(ctx, e.claim, "retry") },
			want: result{state: model.Progressing, typ: model.CreateDeployment, owner: hubA, fence: 1, changed: true}},
		"progress a finished job": {setup: finished,
			act:   func(e *env) (bool, error) { return e.s.Progress(ctx, e.claim, "") },
			guard: store.GuardState, target: store.ErrWrongState},
		"finish a degraded job": {setup: degraded,
			act:  func(e *env) (bool, error) { return e.s.Finish(ctx, e.claim, "recovered") },
			want: result{state: model.Finished, typ: model.CreateDeployment, owner: hubA, fence: 1, changed: true}},
		"re-open a finished job as update": {setup: finished,
			act: func(e *env) (bool, error) {
				_, err := e.s.Reopen(ctx, e.id, store.Reopen{Type: model.UpdateDeployment, SubType: model.Patch, Remediation: remediation})
				return true, err
			},
			want: result{state: model.Created, typ: model.UpdateDeployment, owner: hubA, fence: 1, changed: true}},
		"re-open a degraded job as delete": {setup: degraded,
			act: func(e *env) (bool, error) {
				_, err := e.s.Reopen(ctx, e.id, store.Reopen{Type: model.DeleteDeployment})
				return true, err
			},
			want: result{state: model.Created, typ: model.DeleteDeployment, owner: hubA, fence: 1, changed: true}},
		"re-open a finished job as replace": {setup: finished,
			act: func(e *env) (bool, error) {
				_, err := e.s.Reopen(ctx, e.id, store.Reopen{Type: model.ReplaceDeployment, Manifests: []model.PlainManifest{{YamlString: "kind: Secret"}}})
				return true, err
			},
			want: result{state: model.Created, typ: model.ReplaceDeployment, owner: hubA, fence: 1, changed: true}},
		"a newer order replaces a pending one": {setup: reopened,
			act: func(e *env) (bool, error) {
				_, err := e.s.Reopen(ctx, e.id, store.Reopen{Type: model.DeleteDeployment})
				return true, err
			},
			want: result{state: model.Created, typ: model.DeleteDeployment, owner: hubA, fence: 1, changed: true}},
		"re-open a progressing job": {setup: promoted,
			act: func(e *env) (bool, error) {
				_, err := e.s.Reopen(ctx, e.id, store.Reopen{Type: model.DeleteDeployment})
				return true, err
			},
			guard: store.GuardState, target: store.ErrWrongState},
		"re-open with a stale fence": {setup: finished,
			act: func(e *env) (bool, error) {
				_, err := e.s.Reopen(ctx, e.id, store.Reopen{Type: model.DeleteDeployment, IfFence: 7})
				return true, err
			},
			guard: store.GuardFence, target: store.ErrFenced},
		"delete a never started job": {
			act: func(e *env) (bool, error) {
				_, err := e.s.Reopen(ctx, e.id, store.Reopen{Type: model.DeleteDeployment})
				return true, err
			},
			want: result{state: model.Finished, typ: model.DeleteDeployment, changed: true}},
		"replace a never started job": {
			act: func(e *env) (bool, error) {
				_, err := e.s.Reopen(ctx, e.id, store.Reopen{Type: model.ReplaceDeployment, Manifests: []model.PlainManifest{{YamlString: "kind: Secret"}}})
				return true, err
			},
			want: result{state: model.Created, typ: model.CreateDeployment, changed: true}},
		"update a never started job": {
			act: func(e *env) (bool, error) {
				_, err := e.s.Reopen(ctx, e.id, store.Reopen{Type: model.UpdateDeployment, SubType: model.ScaleIn})
				return true, err
			},
			guard: store.GuardState, target: store.ErrWrongState},
		"set the target of a running job": {setup: promoted,
			act: func(e *env) (bool, error) {
				return e.s.SetTargets(ctx, e.id, model.Target{ClusterName: "c2", Orchestrator: model.OCM}, "")
			},
			guard: store.GuardState, target: store.ErrWrongState},
		"renew with another fence": {setup: promoted,
			act:   func(e *env) (bool, error) { _, err := e.s.RenewLease(ctx, wrongFence(e.claim)); return true, err },
			guard: store.GuardFence, target: store.ErrFenced},
		"status with another fence": {setup: promoted,
			act:   func(e *env) (bool, error) { return e.s.WriteResourceStatus(ctx, wrongFence(e.claim), model.Resource{}) },
			guard: store.GuardFence, target: store.ErrFenced},
	}
	forEachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, store.Options{LeaseTTL: time.Hour})
		for name, tc := range cases {
			t.Run(name, func(t *testing.T) {
				e := &env{s: s, id: oneJob(t, s)}
				if tc.setup != nil {
					tc.setup(t, e)
				}
				before := snapshot(t, b.client, s.Options().Prefix)
				hist := must(s.History(ctx, e.id)).in(t)
				changed, err := tc.act(e)
				if tc.target != nil {
					var ge *store.GuardError
					if !errors.As(err, &ge) || ge.Guard != tc.guard || !errors.Is(err, tc.target) {
						t.Fatalf("got %v, want the %s guard (%v)", err, tc.guard, tc.target)
					}
					if ge.ID != e.id || ge.Kind != "job" {
						t.Errorf("guard error names %s %s", ge.Kind, ge.ID)
					}
					unchanged(t, b, s, before)
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				j := getJob(t, s, e.id)
				got := result{state: j.State, typ: j.Type, owner: j.OwnerID, fence: j.Fence, changed: changed}
				if got != tc.want {
					t.Errorf("got %+v, want %+v", got, tc.want)
				}
				after := must(s.History(ctx, e.id)).in(t)
				if changed && len(after) != len(hist)+1 {
					t.Errorf("history grew from %d to %d entries, want one more", len(hist), len(after))
				}
				if !changed {
					unchanged(t, b, s, before)
				}
				if changed && (after[0].To != j.State || after[0].At.IsZero()) {
					t.Errorf("newest history entry %+v does not end in %v", after[0], j.State)
				}
			})
		}
	})
}

func TestReopenPayload(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, store.Options{})
		id := oneJob(t, s)
		c := promote(t, s, id, hubA, "exec-1")
		must(s.Finish(ctx, c, "applied")).in(t)
		rem := &model.Remediation{IncomplianceID: "inc-9", Action: model.Reallocation,
			Target: &model.Target{ClusterName: "cluster2", Orchestrator: model.OCM}}
		st := must(s.Reopen(ctx, id, store.Reopen{Type: model.UpdateDeployment, SubType: model.Reallocation,
			Remediation: rem, IfFence: c.Fence, By: "incompliance", Why: "cpu above threshold"})).in(t)
		if st != model.Created {
			t.Errorf("state after reopen: %v", st)
		}
		j := getJob(t, s, id)
		if j.SubType != model.Reallocation || !cmp.Equal(j.Remediation, rem) || j.OwnerID != hubA {
			t.Errorf("re-opened job %+v, remediation %+v", j, j.Remediation)
		}
		// Only the owner sees it as executable.
		if ex := ids(must(s.ExecutableJobs(ctx, model.OCM, hubA)).in(t)); !contains(ex, id) {
			t.Errorf("owner's executable jobs %v lack %s", ex, id)
		}
		if ex := ids(must(s.ExecutableJobs(ctx, model.OCM, hubB)).in(t)); contains(ex, id) {
			t.Errorf("another hub's executable jobs %v hold %s", ex, id)
		}
		h := must(s.History(ctx, id)).in(t)
		if h[0].Action != "reopen-7" || h[0].By != "incompliance" || h[0].Why != "cpu above threshold" ||
			h[0].From != model.Finished || h[0].To != model.Created {
			t.Errorf("newest history entry %+v", h[0])
		}
		// A replace swaps the manifests; the remediation of the update is gone.
		c = promote(t, s, id, hubA, "exec-2")
		must(s.Finish(ctx, c, "")).in(t)
		must(s.Reopen(ctx, id, store.Reopen{Type: model.ReplaceDeployment, Manifests: []model.PlainManifest{{YamlString: "kind: Secret"}}})).in(t)
		j = getJob(t, s, id)
		if len(j.Manifests) != 1 || j.Manifests[0].YamlString != "kind: Secret" || j.Remediation != nil || j.SubType != "" {
			t.Errorf("replaced job %+v", j)
		}
	})
}

func TestExecutableRules(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, store.Options{LeaseTTL: time.Hour})
		short := sameStore(t, b, s, store.Options{LeaseTTL: time.Millisecond, TakeoverTTL: time.Millisecond})
		g := newGroup(newJob("free", true), newJob("untargeted", false), newJob("mine", true), newJob("theirs", true),
			newJob("running", true), newJob("stuck", true), newJob("done", true), newJob("nuvla", true))
		g.Jobs[7].Targets.Orchestrator = model.Nuvla
		if err := s.CreateGroup(ctx, g, "test"); err != nil {
			t.Fatal(err)
		}
		id := func(i int) string { return g.Jobs[i].ID }
		for i, owner := range map[int]string{2: hubA, 3: hubB} {
			c := promote(t, s, id(i), owner, "e")
			must(s.Finish(ctx, c, "")).in(t)
			must(s.Reopen(ctx, id(i), store.Reopen{Type: model.DeleteDeployment})).in(t)
		}
		promote(t, s, id(4), hubB, "e")
		stuck := promote(t, short, id(5), hubB, "e")
		must(short.Degrade(ctx, stuck, "failed")).in(t)
		c := promote(t, s, id(6), hubB, "e")
		must(s.Finish(ctx, c, "")).in(t)
		// Wait until the stuck job's lease lapsed for longer than the 1ms takeover TTL.
		time.Sleep(time.Until(getJob(t, s, id(5)).LeaseUntil) + 20*time.Millisecond)

		// A Degraded job is terminal: however long its lease lapsed, nobody takes it over.
		got := ids(must(short.ExecutableJobs(ctx, model.OCM, hubA)).in(t))
		want := []string{id(0), id(2)}
		if !cmp.Equal(sortedCopy(got), sortedCopy(want)) {
			t.Errorf("executable for %s: %v, want free and mine %v", hubA, got, want)
		}
		if _, err := short.Promote(ctx, id(5), hubA, "e2"); !errors.Is(err, store.ErrWrongState) {
			t.Errorf("takeover of a Degraded job: %v", err)
		}
		owned := ids(must(s.JobsOfOwner(ctx, hubB)).in(t))
		if len(owned) != 4 {
			t.Errorf("jobs of %s: %v", hubB, owned)
		}
		if got := ids(must(s.JobsInState(ctx, model.Progressing)).in(t)); len(got) != 1 || got[0] != id(4) {
			t.Errorf("progressing: %v", got)
		}
	})
}

func sortedCopy(s []string) []string {
	c := append([]string(nil), s...)
	for i := range c {
		for j := i + 1; j < len(c); j++ {
			if c[j] < c[i] {
				c[i], c[j] = c[j], c[i]
			}
		}
	}
	return c
}

func TestTakeover(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, store.Options{LeaseTTL: 50 * time.Millisecond, TakeoverTTL: 100 * time.Millisecond})
		id := oneJob(t, s)
		old := promote(t, s, id, hubA, "a-1")
		// Hub A stops renewing. Once its lease lapsed for longer than the takeover TTL, B may take over.
		time.Sleep(time.Until(old.LeaseUntil.Add(100*time.Millisecond)) + 30*time.Millisecond)
		if ex := ids(must(s.ExecutableJobs(ctx, model.OCM, hubB)).in(t)); !contains(ex, id) {
			t.Errorf("lapsed job not executable for %s: %v", hubB, ex)
		}
		nc := promote(t, s, id, hubB, "b-1")
		if nc.Fence != old.Fence+1 || nc.TakenOverFrom != hubA || nc.From != model.Progressing {
			t.Errorf("takeover claim %+v after %+v", nc, old)
		}
		// Everything hub A still tries is refused, and changes nothing.
		before := snapshot(t, b.client, s.Options().Prefix)
		for name, do := range map[string]func() error{
			"finish":  func() error { _, err := s.Finish(ctx, old, "late"); return err },
			"degrade": func() error { _, err := s.Degrade(ctx, old, "late"); return err },
			"renew":   func() error { _, err := s.RenewLease(ctx, old); return err },
			"release": func() error { return s.ReleaseLease(ctx, old) },
			"status": func() error {
				_, err := s.WriteResourceStatus(ctx, old, model.Resource{ManifestWorkName: "stale"})
				return err
			},
		} {
			if err := do(); !errors.Is(err, store.ErrFenced) {
				t.Errorf("%s by the old owner after takeover: %v, want ErrFenced", name, err)
			}
		}
		unchanged(t, b, s, before)
		// The new owner's writes go through.
		if ok := must(s.Finish(ctx, nc, "applied")).in(t); !ok {
			t.Error("new owner's finish reported no change")
		}
		h := must(s.History(ctx, id)).in(t)
		if h[1].Action != "takeover" || h[1].By != hubB || h[1].Fence != 2 {
			t.Errorf("history %+v", h)
		}
		if owned := ids(must(s.JobsOfOwner(ctx, hubA)).in(t)); len(owned) != 0 {
			t.Errorf("old owner still indexed as owning %v", owned)
		}
	})
}

func TestLeases(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		long := newStore(t, b, store.Options{LeaseTTL: time.Hour, TakeoverTTL: time.Millisecond})
		short := sameStore(t, b, long, store.Options{LeaseTTL: 50 * time.Millisecond, TakeoverTTL: time.Millisecond})

		t.Run("two replicas of one hub", func(t *testing.T) {
			id := oneJob(t, long)
			c1 := promote(t, long, id, hubA, "replica-1")
			// Replica 1's execution holds its lease: replica 2, same hub id, must wait.
			_, err := long.Promote(ctx, id, hubA, "replica-2")
			if !errors.Is(err, store.ErrLeaseHeld) {
				t.Fatalf("second replica promoted a job whose lease another execution holds: %v", err)
			}
			// Degrading ends the execution and its lease; a new order may be run by any replica.
			must(long.Degrade(ctx, c1, "failed")).in(t)
			must(long.Reopen(ctx, id, store.Reopen{Type: model.DeleteDeployment})).in(t)
			c2 := promote(t, long, id, hubA, "replica-2")
			if c2.Fence != c1.Fence+1 {
				t.Errorf("fence %d after %d", c2.Fence, c1.Fence)
			}
			// Replica 1's claim is stale now although the hub id is the same.
			if _, err := long.Finish(ctx, c1, ""); !errors.Is(err, store.ErrFenced) {
				t.Errorf("replica 1 finished replica 2's execution: %v", err)
			}
		})

		t.Run("expiry", func(t *testing.T) {
			id := oneJob(t, long)
			c1 := promote(t, short, id, hubA, "e1")
			must(short.Degrade(ctx, c1, "")).in(t)
			must(short.Reopen(ctx, id, store.Reopen{Type: model.DeleteDeployment})).in(t)
			time.Sleep(time.Until(c1.LeaseUntil) + 20*time.Millisecond)
			c2, err := short.Promote(ctx, id, hubA, "e2")
			if err != nil {
				t.Fatalf("promote after the lease expired: %v", err)
			}
			if !c2.LeaseUntil.After(c1.LeaseUntil) {
				t.Errorf("new lease until %v, old %v", c2.LeaseUntil, c1.LeaseUntil)
			}
		})

		t.Run("renewal keeps the job", func(t *testing.T) {
			id := oneJob(t, long)
			c := promote(t, short, id, hubA, "e1")
			// Renewed for an hour (even if the 50ms lease lapsed meanwhile: nobody took it).
			c = must(long.RenewLease(ctx, c)).in(t)
			if time.Until(c.LeaseUntil) < 30*time.Minute {
				t.Errorf("renewed lease until %v", c.LeaseUntil)
			}
			time.Sleep(80 * time.Millisecond) // past the first lease and the takeover TTL
			if _, err := short.Promote(ctx, id, hubB, "b1"); !errors.Is(err, store.ErrLeaseHeld) {
				t.Errorf("takeover of a renewed lease: %v", err)
			}
			if _, err := long.RenewLease(ctx, store.Claim{JobID: id, Owner: hubA, Holder: "e2", Fence: c.Fence}); !errors.Is(err, store.ErrLeaseHeld) {
				t.Errorf("another execution renewed a live lease: %v", err)
			}
			if j := getJob(t, long, id); j.LeaseHolder != "e1" || !j.LeaseUntil.Equal(c.LeaseUntil) {
				t.Errorf("lease %s until %v, want e1 until %v", j.LeaseHolder, j.LeaseUntil, c.LeaseUntil)
			}
			// Released, the takeover TTL counts from now.
			if err := long.ReleaseLease(ctx, c); err != nil {
				t.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond)
			nc := promote(t, short, id, hubB, "b1")
			if nc.TakenOverFrom != hubA {
				t.Errorf("takeover claim %+v", nc)
			}
		})
	})
}

func TestResourceStatus(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, store.Options{})
		id := oneJob(t, s)
		c := promote(t, s, id, hubA, "e1")
		replicas := int64(2)
		t0 := metav1.NewTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))

		// tick is one status-sync pass: start from the stored resource, set what the
		// ManifestWork says, write.
		tick := func(now metav1.Time, available metav1.ConditionStatus) bool {
			t.Helper()
			j := getJob(t, s, id)
			r := model.Resource{}
			if j.Resource != nil {
				r = *j.Resource
			}
			r.ManifestWorkName, r.ManifestWorkUID, r.ClusterName = "ocm-jobs-"+id, "uid-1", "cluster1"
			r.SetCondition(model.Condition{Type: model.ConditionApplied, Status: metav1.ConditionTrue, Reason: "Applied", LastTransitionTime: now})
			r.SetCondition(model.Condition{Type: model.ConditionAvailable, Status: available, Reason: "Available", LastTransitionTime: now})
			r.Workloads = []model.WorkloadStatus{{Kind: "Deployment", Namespace: "shop", Name: "web", Replicas: &replicas, ReadyReplicas: &replicas}}
			return must(s.WriteResourceStatus(ctx, store.ClaimOf(j), r)).in(t)
		}
		if !tick(t0, metav1.ConditionTrue) {
			t.Fatal("first status write reported no change")
		}
		before := snapshot(t, b.client, s.Options().Prefix)
		var dirty int64
		if b.dirty != nil {
			dirty = b.dirty(t)
		}
		for i := 1; i <= 2; i++ {
			if tick(metav1.NewTime(t0.Add(time.Duration(i)*time.Minute)), metav1.ConditionTrue) {
				t.Errorf("sync tick %d with nothing changed wrote", i)
			}
		}
		unchanged(t, b, s, before)
		if b.dirty != nil {
			if d := b.dirty(t) - dirty; d != 0 {
				t.Errorf("two sync ticks with nothing changed made %d writes to Redis", d)
			} else {
				t.Logf("two sync ticks with nothing changed: 0 writes to Redis (rdb_changes_since_last_save)")
			}
		}
		// A status change is written, and only the changed condition moves its transition time.
		t2 := metav1.NewTime(t0.Add(time.Hour))
		if !tick(t2, metav1.ConditionFalse) {
			t.Error("status change not written")
		}
		r := getJob(t, s, id).Resource
		if len(r.Conditions) != 2 || !r.Condition(model.ConditionApplied).LastTransitionTime.Equal(&t0) ||
			!r.Condition(model.ConditionAvailable).LastTransitionTime.Equal(&t2) {
			t.Errorf("conditions %+v", r.Conditions)
		}
		if r.JobID != id || r.ManifestWorkUID != "uid-1" || *r.Workloads[0].ReadyReplicas != 2 {
			t.Errorf("resource %+v", r)
		}
		if _, err := s.WriteResourceStatus(ctx, store.Claim{JobID: id, Owner: hubB, Fence: c.Fence}, *r); !errors.Is(err, store.ErrNotOwner) {
			t.Errorf("another hub's status write: %v", err)
		}
	})
}

func TestDeleteGroup(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, store.Options{RetentionTTL: time.Hour})
		g := newGroup(newJob("web", true), newJob("db", true), newJob("never", true))
		if err := s.CreateGroup(ctx, g, "test"); err != nil {
			t.Fatal(err)
		}
		web := promote(t, s, g.Jobs[0].ID, hubA, "e")
		db := promote(t, s, g.Jobs[1].ID, hubA, "e")
		must(s.Finish(ctx, db, "")).in(t)

		before := snapshot(t, b.client, s.Options().Prefix)
		err := s.DeleteGroup(ctx, g.ID, "test")
		var be *store.BlockedError
		if !errors.As(err, &be) || !errors.Is(err, store.ErrNotDeletable) {
			t.Fatalf("deleting a deployed group: %v", err)
		}
		want := []store.BlockedJob{{ID: g.Jobs[0].ID, State: model.Progressing, Type: model.CreateDeployment},
			{ID: g.Jobs[1].ID, State: model.Finished, Type: model.CreateDeployment}}
		if !cmp.Equal(sortedBlocked(be.Jobs), sortedBlocked(want)) {
			t.Errorf("blocking jobs %+v, want %+v", be.Jobs, want)
		}
		if !strings.Contains(err.Error(), g.Jobs[0].ID) {
			t.Errorf("message %q does not name the blocking job", err)
		}
		unchanged(t, b, s, before)

		// Stopping the group: every job re-opened as Delete; the never-started one is done at once.
		must(s.Finish(ctx, web, "")).in(t)
		for _, j := range g.Jobs {
			must(s.Reopen(ctx, j.ID, store.Reopen{Type: model.DeleteDeployment, By: "test"})).in(t)
		}
		if j := getJob(t, s, g.Jobs[2].ID); j.State != model.Finished || j.Type != model.DeleteDeployment {
			t.Errorf("never started job after stop: %v %v", j.Type, j.State)
		}
		for _, j := range g.Jobs[:2] {
			c := promote(t, s, j.ID, hubA, "undeploy")
			must(s.Finish(ctx, c, "removed")).in(t)
		}
		if err := s.DeleteGroup(ctx, g.ID, "test"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetGroup(ctx, g.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("deleted group read: %v", err)
		}
		if _, err := s.GetJob(ctx, g.Jobs[0].ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("deleted job read: %v", err)
		}
		if all := must(s.ListJobs(ctx)).in(t); len(all) != 0 {
			t.Errorf("deleted jobs still listed: %v", ids(all))
		}
		if gs := must(s.ListGroups(ctx)).in(t); len(gs) != 0 {
			t.Errorf("deleted group still listed")
		}
		h := must(s.History(ctx, g.Jobs[0].ID)).in(t)
		if h[0].Action != "delete" {
			t.Errorf("history after delete %+v", h[0])
		}
		// Every remaining key of the group expires within the retention TTL (the buckets'
		// outbox streams belong to no group).
		for _, k := range keysWith(t, b.client, s.Options().Prefix) {
			if strings.HasSuffix(k, ":outbox") {
				continue
			}
			ttl := b.client.PTTL(ctx, k).Val()
			if ttl <= 0 || ttl > time.Hour {
				t.Errorf("key %s has TTL %v, want up to the 1h retention", k, ttl)
			}
		}
		// A redelivered delete answers the same; the id cannot be reused while retained.
		if err := s.DeleteGroup(ctx, g.ID, "test"); err != nil {
			t.Errorf("second delete: %v", err)
		}
		again := newGroup(newJob("web", true))
		again.ID = g.ID
		if err := s.CreateGroup(ctx, again, "test"); !errors.Is(err, store.ErrExists) {
			t.Errorf("re-creating a retained group: %v", err)
		}
	})
}

func sortedBlocked(j []store.BlockedJob) []store.BlockedJob {
	c := append([]store.BlockedJob(nil), j...)
	for i := range c {
		for k := i + 1; k < len(c); k++ {
			if c[k].ID < c[i].ID {
				c[i], c[k] = c[k], c[i]
			}
		}
	}
	return c
}

func TestHistoryIsCapped(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, store.Options{HistoryCap: 3})
		id := oneJob(t, s)
		c := promote(t, s, id, hubA, "e")
		for i := 0; i < 3; i++ {
			must(s.Degrade(ctx, c, fmt.Sprintf("failure %d", i))).in(t)
			must(s.Progress(ctx, c, fmt.Sprintf("retry %d", i))).in(t)
		}
		h := must(s.History(ctx, id)).in(t)
		if len(h) != 3 {
			t.Fatalf("history has %d entries, want the cap 3", len(h))
		}
		if h[0].Action != "progress" || h[0].Why != "retry 2" || h[1].Why != "failure 2" || h[2].Why != "retry 1" {
			t.Errorf("history not newest first: %+v", h)
		}
	})
}

func TestIncompliances(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, store.Options{IncomplianceTTL: time.Hour})
		in := &model.Incompliance{ID: "inc-1", CurrentValue: json.RawMessage(`0.93`), Threshold: json.RawMessage(`"0.8"`),
			PolicyName: "cpu", PolicyID: "p1", MeasurementBackend: "prometheus", ExtraLabels: map[string]string{"a": "b"},
			Subject:     model.Subject{Type: "app", AppName: "shop", AppInstance: "g1", AppComponent: "web"},
			Remediation: model.ScaleOut, JobID: "job-1"}
		if created := must(s.RecordIncompliance(ctx, in)).in(t); !created {
			t.Fatal("first record reported not created")
		}
		dup := *in
		dup.ReceivedAt = nil
		before := snapshot(t, b.client, s.Options().Prefix)
		if created := must(s.RecordIncompliance(ctx, &dup)).in(t); created {
			t.Error("a redelivered incompliance was recorded twice")
		}
		unchanged(t, b, s, before)
		got := must(s.GetIncompliance(ctx, "inc-1")).in(t)
		if got.Outcome != model.OutcomePending || got.JobID != "job-1" || string(got.CurrentValue) != "0.93" ||
			got.Subject.AppComponent != "web" || got.ReceivedAt.IsZero() {
			t.Errorf("incompliance read back as %+v", got)
		}
		for _, k := range keysWith(t, b.client, s.Options().Prefix) {
			if !strings.HasSuffix(k, ":inc:inc-1") {
				continue
			}
			if ttl := b.client.PTTL(ctx, k).Val(); ttl <= 0 || ttl > time.Hour {
				t.Errorf("incompliance TTL %v", ttl)
			}
		}
		if pending := must(s.PendingIncompliances(ctx, 0)).in(t); len(pending) != 1 || pending[0] != "inc-1" {
			t.Errorf("pending incompliances %v", pending)
		}
		if ok := must(s.SetIncomplianceOutcome(ctx, "inc-1", model.OutcomeApplied, "", "job-2")).in(t); !ok {
			t.Error("settling reported no change")
		}
		if pending := must(s.PendingIncompliances(ctx, 0)).in(t); len(pending) != 0 {
			t.Errorf("a settled incompliance is still pending: %v", pending)
		}
		if ok := must(s.SetIncomplianceOutcome(ctx, "inc-1", model.OutcomeApplied, "", "job-2")).in(t); ok {
			t.Error("settling the same way twice reported a change")
		}
		if _, err := s.SetIncomplianceOutcome(ctx, "inc-1", model.OutcomeRejected, "no job", ""); !errors.Is(err, store.ErrWrongState) {
			t.Errorf("re-settling differently: %v", err)
		}
		got = must(s.GetIncompliance(ctx, "inc-1")).in(t)
		if got.Outcome != model.OutcomeApplied || got.JobID != "job-2" {
			t.Errorf("settled incompliance %+v", got)
		}
		rej := &model.Incompliance{PolicyName: "mem", Remediation: model.ScaleUp, Outcome: model.OutcomeRejected, Reason: "no job for appInstance g9"}
		must(s.RecordIncompliance(ctx, rej)).in(t)
		if got := must(s.GetIncompliance(ctx, rej.ID)).in(t); got.Outcome != model.OutcomeRejected || got.Reason != rej.Reason {
			t.Errorf("rejected incompliance %+v", got)
		}
	})
}

func TestAddJobs(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, store.Options{})
		g := newGroup(newJob("web", true))
		if err := s.CreateGroup(ctx, g, "test"); err != nil {
			t.Fatal(err)
		}
		awaiting := newJob("db", false)
		awaiting.Resource = &model.Resource{ResourceName: "db"}
		awaiting.Resource.SetCondition(model.Condition{Type: model.ConditionProgressing, Status: metav1.ConditionFalse,
			Reason: "AwaitingTarget", Message: "no cluster matches", LastTransitionTime: metav1.NewTime(time.Unix(1700000000, 0))})
		added := []model.Job{newJob("api", true), awaiting}
		if err := s.AddJobs(ctx, g.ID, added, "update"); err != nil {
			t.Fatal(err)
		}
		if added[0].ID == "" || added[1].JobGroupName != "shop" || added[1].CreatedAt.IsZero() {
			t.Errorf("added jobs not filled in: %+v", added)
		}
		jobs := must(s.GroupJobs(ctx, g.ID)).in(t)
		if len(jobs) != 3 {
			t.Fatalf("group has %d jobs after adding 2 to 1", len(jobs))
		}
		db := getJob(t, s, added[1].ID)
		if db.Resource == nil || db.Resource.JobID != db.ID || db.Resource.Condition(model.ConditionProgressing).Reason != "AwaitingTarget" {
			t.Errorf("initial resource read back as %+v", db.Resource)
		}
		if ex := ids(must(s.ExecutableJobs(ctx, model.OCM, hubA)).in(t)); len(ex) != 2 || contains(ex, db.ID) {
			t.Errorf("executable %v: want web and api", ex)
		}

		before := snapshot(t, b.client, s.Options().Prefix)
		dup := []model.Job{newJob("x", true), newJob("y", true)}
		dup[1].ID = added[0].ID
		if err := s.AddJobs(ctx, g.ID, dup, "update"); !errors.Is(err, store.ErrExists) {
			t.Errorf("adding a job id twice: %v", err)
		}
		if err := s.AddJobs(ctx, g.ID, nil, "update"); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("adding no jobs: %v", err)
		}
		if err := s.AddJobs(ctx, model.NewID(), []model.Job{newJob("x", true)}, "update"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("adding to an unknown group: %v", err)
		}
		unchanged(t, b, s, before)

		for _, j := range must(s.GroupJobs(ctx, g.ID)).in(t) {
			must(s.Reopen(ctx, j.ID, store.Reopen{Type: model.DeleteDeployment})).in(t)
		}
		if err := s.DeleteGroup(ctx, g.ID, "test"); err != nil {
			t.Fatal(err)
		}
		if err := s.AddJobs(ctx, g.ID, []model.Job{newJob("late", true)}, "update"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("adding to a deleted group: %v", err)
		}
		if err := s.Ping(ctx); err != nil {
			t.Errorf("ping: %v", err)
		}
	})
}

// TestTerminalJobsAreNeverPromoted: a Finished or Degraded job is never promoted again, by its
// owner or by another hub, however long its lease has lapsed; only a re-open (a new order)
// makes it executable. Takeover is for Progressing jobs whose owner stopped renewing.
func TestTerminalJobsAreNeverPromoted(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, store.Options{LeaseTTL: time.Millisecond, TakeoverTTL: time.Millisecond})
		degraded, finished := oneJob(t, s), oneJob(t, s)
		c := promote(t, s, degraded, hubA, "a-1")
		must(s.Degrade(ctx, c, "ManifestWorkMissing")).in(t)
		if err := s.ReleaseLease(ctx, c); err != nil {
			t.Fatal(err)
		}
		c2 := promote(t, s, finished, hubA, "a-2")
		must(s.Finish(ctx, c2, "done")).in(t)
		time.Sleep(20 * time.Millisecond) // far past the lease and the takeover TTL
		for _, owner := range []string{hubA, hubB} {
			if ex := ids(must(s.ExecutableJobs(ctx, model.OCM, owner)).in(t)); contains(ex, degraded) || contains(ex, finished) {
				t.Errorf("terminal jobs executable for %s: %v", owner, ex)
			}
			for _, id := range []string{degraded, finished} {
				if _, err := s.Promote(ctx, id, owner, owner+"-late"); !errors.Is(err, store.ErrWrongState) {
					t.Errorf("promote of terminal job %s by %s: %v, want ErrWrongState", id, owner, err)
				}
			}
		}
		if j := getJob(t, s, degraded); j.State != model.Degraded || j.Fence != 1 {
			t.Errorf("degraded job after the attempts: %s fence %d", j.State, j.Fence)
		}
	})
}

// TestCreateLargeGroup: a group of more jobs than Lua can unpack at once (8,000) is created
// whole, and a job id that exists already is still found among them.
func TestCreateLargeGroup(t *testing.T) {
	b := backends[0]
	s := newStore(t, b, store.Options{})
	jobs := make([]model.Job, 8200)
	for i := range jobs {
		jobs[i] = newJob(fmt.Sprintf("c%d", i), false)
	}
	g := newGroup(jobs...)
	if err := s.CreateGroup(ctx, g, "test"); err != nil {
		t.Fatal(err)
	}
	if got := getJob(t, s, g.Jobs[8199].ID); got.State != model.Created {
		t.Errorf("the last job is %s", got.State)
	}
	more := make([]model.Job, 8200)
	for i := range more {
		more[i] = newJob(fmt.Sprintf("d%d", i), false)
	}
	more[8100].ID = g.Jobs[5].ID
	if err := s.AddJobs(ctx, g.ID, more, "test"); !errors.Is(err, store.ErrExists) {
		t.Errorf("adding a job that exists: %v", err)
	}
}
