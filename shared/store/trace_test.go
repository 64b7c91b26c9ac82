package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
	"github.com/ocm-jobs/ocm-jobs/shared/telemetry"
)

// traced is ctx in the trace of traceparent tp ("" for none).
func traced(tp string) context.Context { return telemetry.WithTraceparent(ctx, tp) }

// announcedTrace runs change in ctx and returns the traceparent of each entry it announced.
func announcedTrace(t *testing.T, ctx context.Context, change func(ctx context.Context) error) []string {
	t.Helper()
	pctx, p := store.WithPending(ctx)
	if err := change(pctx); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range p.Take() {
		out = append(out, e.Traceparent)
	}
	return out
}

// TestOutboxCarriesTheOrdersTrace: a job keeps the trace of the order that opened it, and every
// event of it carries a traceparent — the caller's own when the caller works in that trace,
// else the order's — so a tick that finishes the job still announces it in the group's trace.
// A new order re-opens the job in its own trace; one made outside any trace leaves none.
func TestOutboxCarriesTheOrdersTrace(t *testing.T) {
	const (
		order    = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
		executor = "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01" // same trace, its own span
		tick     = "00-4bf92f3577b34da6a3ce929d0e0e4736-53995c3f42cd8ad8-01"
		incident = "00-11111111111111111111111111111111-2222222222222222-01"
	)
	forEachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, store.Options{}).As("/ocm-jobs/hubs/hub-a/test")
		g := newGroup(newJob("web", true))
		var c store.Claim
		steps := []struct {
			name   string
			ctx    context.Context
			change func(ctx context.Context) error
			want   string
		}{
			{"created in the order's trace", traced(order), func(ctx context.Context) error { return s.CreateGroup(ctx, g, "test") }, order},
			{"promoted by a caller in the same trace: its own span", traced(executor), func(ctx context.Context) (err error) {
				c, err = s.Promote(ctx, g.Jobs[0].ID, hubA, "e1")
				return err
			}, executor},
			{"finished by a tick in another trace: the order's", traced(tick), func(ctx context.Context) error {
				_, err := s.Finish(ctx, c, "available")
				return err
			}, order},
			{"re-opened by an incompliance: its trace", traced(incident), func(ctx context.Context) error {
				_, err := s.Reopen(ctx, g.Jobs[0].ID, store.Reopen{Type: model.UpdateDeployment, SubType: model.ScaleOut})
				return err
			}, incident},
			{"promoted outside any trace: the incompliance's", ctx, func(ctx context.Context) (err error) {
				c, err = s.Promote(ctx, g.Jobs[0].ID, hubA, "e2")
				return err
			}, incident},
			{"re-opened outside any trace: none", ctx, func(ctx context.Context) error {
				if _, err := s.Degrade(ctx, c, "failed"); err != nil {
					return err
				}
				_, err := s.Reopen(ctx, g.Jobs[0].ID, store.Reopen{Type: model.CreateDeployment})
				return err
			}, ""},
		}
		for _, st := range steps {
			got := announcedTrace(t, st.ctx, st.change)
			if len(got) == 0 || got[len(got)-1] != st.want {
				t.Errorf("%s: traceparents %q, want the last %q", st.name, got, st.want)
			}
		}
		// The drain reads the same traceparent back from the stream.
		due := must(s.OutboxDue(ctx, 0, 100)).in(t)
		if len(due) == 0 || due[0].Traceparent != order {
			t.Errorf("the first entry the drain reads carries %+v, want %s", due, order)
		}
	})
}

// TestBacklog: jobs by state, the age of the oldest job waiting in Created (kept by
// idx:created-since, which a job leaves with Created) and the outbox depth, in one read.
func TestBacklog(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, store.Options{})
		empty := must(s.Backlog(ctx)).in(t)
		if empty.Jobs[model.Created] != 0 || empty.OldestCreatedAge != 0 || empty.OutboxDepth != 0 {
			t.Fatalf("backlog of an empty store: %+v", empty)
		}
		g := newGroup(newJob("web", true), newJob("db", true), newJob("cache", false))
		if err := s.CreateGroup(ctx, g, "test"); err != nil {
			t.Fatal(err)
		}
		before := must(s.Backlog(ctx)).in(t)
		if before.Jobs[model.Created] != 3 || before.OutboxDepth != 2 {
			t.Errorf("after creating 3 jobs (2 with a target): %+v", before)
		}
		if before.OldestCreatedAge < 0 || before.OldestCreatedAge > time.Minute {
			t.Errorf("oldest Created job's age %s", before.OldestCreatedAge)
		}
		for _, j := range g.Jobs[:2] {
			if _, err := s.Promote(ctx, j.ID, hubA, "e-"+j.ID); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.Reopen(ctx, g.Jobs[2].ID, store.Reopen{Type: model.DeleteDeployment}); err != nil {
			t.Fatal(err)
		}
		after := must(s.Backlog(ctx)).in(t)
		want := map[model.JobState]int64{model.Created: 0, model.Progressing: 2, model.Finished: 1, model.Degraded: 0}
		for st, n := range want {
			if after.Jobs[st] != n {
				t.Errorf("%s: %d jobs, want %d (%+v)", st, after.Jobs[st], n, after)
			}
		}
		if after.OldestCreatedAge != 0 || after.OutboxDepth != 5 {
			t.Errorf("with no job Created and 5 events announced: %+v", after)
		}
	})
}
