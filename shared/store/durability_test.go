package store_test

import (
	"errors"
	"testing"
	"time"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/redisconn"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
	"github.com/ocm-jobs/ocm-jobs/tests/servers"
)

// TestDurability writes to a redis-server with AOF on, kills it with SIGKILL right after the
// last acknowledged write, restarts it from its AOF and counts what is kept.
func TestDurability(t *testing.T) {
	const groups = 1000
	for _, fsync := range []string{"always", "everysec"} {
		t.Run(fsync, func(t *testing.T) {
			r, err := servers.StartRedis(servers.RedisOptions{AppendFsync: fsync})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Stop()
			c, err := redisconn.Connect(ctx, r.URL(), 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// Not newStore: its check at cleanup would run after the server stopped.
			s, err := store.New(c, store.Options{Prefix: "durability", LeaseTTL: time.Hour})
			if err != nil {
				t.Fatal(err)
			}

			// Acknowledged writes: every group, then promote+finish of every other job.
			var created []model.JobGroup
			finished := map[string]bool{}
			for i := 0; i < groups; i++ {
				g := newGroup(newJob("web", true))
				if err := s.CreateGroup(ctx, g, "durability"); err != nil {
					t.Fatal(err)
				}
				created = append(created, *g)
				if i%2 == 0 {
					cl := promote(t, s, g.Jobs[0].ID, hubA, "e")
					must(s.Finish(ctx, cl, "")).in(t)
					finished[g.Jobs[0].ID] = true
				}
			}
			acked := len(created) + 2*len(finished)
			r.Kill()
			if err := r.Restart(); err != nil {
				t.Fatal(err)
			}

			keptGroups, keptFinish := 0, 0
			for _, g := range created {
				got, err := s.GetGroup(ctx, g.ID)
				if errors.Is(err, store.ErrNotFound) {
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				keptGroups++
				if len(got.Jobs) != 1 {
					t.Errorf("group %s kept with %d jobs: a group and its jobs are one write", g.ID, len(got.Jobs))
					continue
				}
				j := got.Jobs[0]
				h := must(s.History(ctx, j.ID)).in(t)
				// A transition and its history entry are one write: both kept or neither.
				wantEntries := map[model.JobState]int{model.Created: 1, model.Progressing: 2, model.Finished: 3}[j.State]
				if len(h) != wantEntries {
					t.Errorf("job %s is %v with %d history entries, want %d", j.ID, j.State, len(h), wantEntries)
				}
				if j.State == model.Finished {
					keptFinish++
				}
				if j.State != model.Created && !finished[j.ID] {
					t.Errorf("job %s is %v but was never promoted", j.ID, j.State)
				}
			}
			kept := keptGroups + 2*keptFinish // a kept Finished job implies its kept promote
			t.Logf("appendfsync %s: %d acknowledged writes (%d groups, %d promote+finish pairs); after kill -9 and restart kept %d groups and %d finished jobs = %d writes (%d lost)",
				fsync, acked, len(created), len(finished), keptGroups, keptFinish, kept, acked-kept)
			if kept > acked {
				t.Errorf("kept %d writes of %d acknowledged", kept, acked)
			}
			if fsync == "always" && (keptGroups != len(created) || keptFinish != len(finished)) {
				t.Errorf("appendfsync always lost acknowledged writes: kept %d/%d groups, %d/%d finished jobs",
					keptGroups, len(created), keptFinish, len(finished))
			}
			verifyIndexes(t, c, s.Options().Prefix)
		})
	}
}
