package store_test

import (
	"errors"
	"testing"
	"time"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
)

// TestGroupActivity: a group's activity is every job's history in one timeline, newest first,
// and the incompliances about the group (not about another) with their outcome; an unknown or
// deleted group is not found, and reading writes nothing.
func TestGroupActivity(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, store.Options{IncomplianceTTL: time.Hour, RetentionTTL: time.Hour})
		g := newGroup(newJob("web", true), newJob("db", true))
		must(0, s.CreateGroup(ctx, g, "test")).in(t)
		other := newGroup(newJob("other", true))
		must(0, s.CreateGroup(ctx, other, "test")).in(t)
		web := promote(t, s, g.Jobs[0].ID, hubA, "e")
		must(s.Finish(ctx, web, "applied")).in(t)

		in := &model.Incompliance{PolicyName: "cpu", Remediation: model.ScaleOut,
			Subject: model.Subject{AppInstance: g.ID, AppComponent: "web"}}
		must(s.RecordIncompliance(ctx, in)).in(t)
		must(s.SetIncomplianceOutcome(ctx, in.ID, model.OutcomeApplied, "", g.Jobs[0].ID)).in(t)
		must(s.RecordIncompliance(ctx, &model.Incompliance{PolicyName: "mem", Remediation: model.ScaleUp,
			Subject: model.Subject{AppInstance: other.ID, AppComponent: "other"}})).in(t)

		before := snapshot(t, b.client, s.Options().Prefix)
		a := must(s.GroupActivity(ctx, g.ID)).in(t)
		unchanged(t, b, s, before)
		if a.GroupID != g.ID {
			t.Errorf("group id %q, want %q", a.GroupID, g.ID)
		}
		// web: create, promote, finish; db: create.
		perJob := map[string][]string{}
		for i, e := range a.History {
			perJob[e.JobID] = append(perJob[e.JobID], e.Action)
			if i > 0 && e.At.After(a.History[i-1].At) {
				t.Errorf("history not newest first: %v after %v", e.At, a.History[i-1].At)
			}
		}
		if want := must(s.History(ctx, g.Jobs[0].ID)).in(t); len(perJob[g.Jobs[0].ID]) != len(want) || len(want) < 3 {
			t.Errorf("web's entries %v, its history has %d", perJob[g.Jobs[0].ID], len(want))
		}
		if got := perJob[g.Jobs[1].ID]; len(got) != 1 || got[0] != "create" {
			t.Errorf("db's entries %v, want [create]", got)
		}
		if len(perJob) != 2 {
			t.Errorf("entries of %d jobs, want the group's 2: %v", len(perJob), perJob)
		}
		if len(a.Incompliances) != 1 {
			t.Fatalf("%d incompliances, want the group's one: %+v", len(a.Incompliances), a.Incompliances)
		}
		if got := a.Incompliances[0]; got.ID != in.ID || got.Outcome != model.OutcomeApplied || got.JobID != g.Jobs[0].ID || got.ReceivedAt == nil {
			t.Errorf("incompliance %+v", got)
		}

		if _, err := s.GroupActivity(ctx, "0a000000-0000-4000-8000-000000000009"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("unknown group: %v, want not found", err)
		}
		if _, err := s.GroupActivity(ctx, "bad id!"); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("bad id: %v, want invalid", err)
		}
		must(0, s.DeleteGroup(ctx, other.ID, "test")).in(t)
		if _, err := s.GroupActivity(ctx, other.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("deleted group: %v, want not found", err)
		}
	})
}
