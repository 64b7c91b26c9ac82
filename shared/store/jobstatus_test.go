package store_test

import (
	"errors"
	"sort"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
)

// JobStatusOfOwner reads what JobsOfOwner reads, less the manifests and the remediation.
func TestJobStatusOfOwner(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, store.Options{})
		g := newGroup(newJob("web", true), newJob("db", true), newJob("cache", true))
		if err := s.CreateGroup(ctx, g, "test"); err != nil {
			t.Fatal(err)
		}
		for _, j := range g.Jobs[:2] {
			c := promote(t, s, j.ID, "hub-a", "exec")
			res := model.Resource{JobID: j.ID, ManifestWorkName: "job-" + j.ID,
				Conditions: []model.Condition{{Type: model.ConditionApplied, Status: "True", Reason: "Applied"}}}
			if _, err := s.WriteResourceStatus(ctx, c, res); err != nil {
				t.Fatal(err)
			}
		}
		full, err := s.JobsOfOwner(ctx, "hub-a")
		if err != nil {
			t.Fatal(err)
		}
		lean, err := s.JobStatusOfOwner(ctx, "hub-a")
		if err != nil {
			t.Fatal(err)
		}
		sort.Slice(lean, func(a, b int) bool { return lean[a].ID < lean[b].ID })
		sort.Slice(full, func(a, b int) bool { return full[a].ID < full[b].ID })
		if len(full) != 2 || len(lean) != 2 {
			t.Fatalf("%d jobs / %d job statuses, want 2", len(full), len(lean))
		}
		for i := range full {
			if lean[i].Manifests != nil || lean[i].Remediation != nil {
				t.Errorf("job %s: manifests or remediation read", lean[i].ID)
			}
			full[i].Manifests = nil
			if d := cmp.Diff(full[i], lean[i]); d != "" {
				t.Errorf("job %s (-JobsOfOwner +JobStatusOfOwner):\n%s", full[i].ID, d)
			}
		}
		if none, err := s.JobStatusOfOwner(ctx, "hub-b"); err != nil || len(none) != 0 {
			t.Errorf("another hub's: %v, %v", none, err)
		}
	})
}

// WriteResourceStatusIf writes only while the stored resource is the one the caller read: a
// concurrent write of another writer is never lost.
func TestWriteResourceStatusIf(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, store.Options{})
		id := oneJob(t, s)
		c := promote(t, s, id, "hub-a", "exec")
		read := getJob(t, s, id).Resource // what a status reader read (nil: none yet)
		mine := model.Resource{JobID: id, Conditions: []model.Condition{{Type: model.ConditionApplied, Status: "True", Reason: "Applied"}}}
		theirs := model.Resource{JobID: id, Conditions: []model.Condition{{Type: "Dispatched", Status: "True", Reason: "ManifestWorkApplied", ObservedGeneration: 1}}}

		// Another writer got in between the read and the write: refused, nothing written.
		if _, err := s.WriteResourceStatus(ctx, c, theirs); err != nil {
			t.Fatal(err)
		}
		before := snapshot(t, b.client, s.Options().Prefix)
		if _, err := s.WriteResourceStatusIf(ctx, c, read, mine); !errors.Is(err, store.ErrResourceChanged) {
			t.Fatalf("write derived from a stale read: %v, want ErrResourceChanged", err)
		}
		unchanged(t, b, s, before)

		// Derived from what is stored now: written; again: nothing to write.
		now := getJob(t, s, id).Resource
		merged := *now
		merged.Conditions = append(append([]model.Condition(nil), now.Conditions...), mine.Conditions...)
		if wrote, err := s.WriteResourceStatusIf(ctx, c, now, merged); err != nil || !wrote {
			t.Fatalf("write derived from the stored resource: %v, %v", wrote, err)
		}
		after := getJob(t, s, id).Resource
		if after.Condition("Dispatched") == nil || after.Condition(model.ConditionApplied) == nil {
			t.Fatalf("resource after the write: %+v", after)
		}
		if wrote, err := s.WriteResourceStatusIf(ctx, c, now, merged); err != nil || wrote {
			t.Fatalf("the same write again: %v, %v; want false, nil", wrote, err)
		}
		// Fenced like every owner write.
		stale := c
		stale.Fence++
		if _, err := s.WriteResourceStatusIf(ctx, stale, after, mine); !errors.Is(err, store.ErrFenced) {
			t.Fatalf("stale fence: %v, want ErrFenced", err)
		}
	})
}

// ProgressingJobStatusOfOwner lists exactly the hub's Progressing jobs: not its Finished or
// Degraded ones, not the Created ones, not another hub's.
func TestProgressingJobStatusOfOwner(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, store.Options{})
		g := newGroup(newJob("a", true), newJob("b", true), newJob("c", true), newJob("d", true), newJob("e", true))
		if err := s.CreateGroup(ctx, g, "test"); err != nil {
			t.Fatal(err)
		}
		running := promote(t, s, g.Jobs[0].ID, "hub-a", "exec")
		if _, err := s.Finish(ctx, promote(t, s, g.Jobs[1].ID, "hub-a", "exec"), "done"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Degrade(ctx, promote(t, s, g.Jobs[2].ID, "hub-a", "exec"), "broken"); err != nil {
			t.Fatal(err)
		}
		other := promote(t, s, g.Jobs[3].ID, "hub-b", "exec")
		got, err := s.ProgressingJobStatusOfOwner(ctx, "hub-a")
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].ID != running.JobID || got[0].State != model.Progressing || got[0].Manifests != nil {
			t.Errorf("hub-a's Progressing jobs: %+v, want only %s without manifests", got, running.JobID)
		}
		if got, err := s.ProgressingJobStatusOfOwner(ctx, "hub-b"); err != nil || len(got) != 1 || got[0].ID != other.JobID {
			t.Errorf("hub-b's Progressing jobs: %+v, %v; want only %s", got, err, other.JobID)
		}
		if _, err := s.ProgressingJobStatusOfOwner(ctx, ""); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("no owner: %v, want ErrInvalid", err)
		}
	})
}
