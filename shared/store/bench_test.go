package store_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
)

// roundTrips counts what a client sends to Redis: one per command, one per pipeline.
type roundTrips struct{ n atomic.Int64 }

func (r *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		r.n.Add(1)
		return next(ctx, cmd)
	}
}

func (r *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		r.n.Add(1)
		return next(ctx, cmds)
	}
}

// benchStore is a store on the single redis-server through its own client, with the scripts
// loaded (so a first call is an EVALSHA like every other).
func benchStore(b *testing.B, opts store.Options, hook redis.Hook) *store.Store {
	b.Helper()
	c := redis.NewClient(&redis.Options{Addr: single.Addr, PoolSize: 64})
	b.Cleanup(func() { c.Close() })
	if hook != nil {
		c.AddHook(hook)
	}
	opts.Prefix = fmt.Sprintf("bench%d", prefixSeq.Add(1))
	s, err := store.New(c, opts)
	if err != nil {
		b.Fatal(err)
	}
	if err := s.LoadScripts(context.Background()); err != nil {
		b.Fatal(err)
	}
	return s
}

func benchJobs(b *testing.B, s *store.Store, groups, perGroup int, manifest string) []string {
	b.Helper()
	var out []string
	for g := 0; g < groups; g++ {
		jobs := make([]model.Job, perGroup)
		for i := range jobs {
			jobs[i] = newJob(fmt.Sprintf("c%d", i), true)
			if manifest != "" {
				jobs[i].Manifests = []model.PlainManifest{{YamlString: manifest}}
			}
		}
		grp := newGroup(jobs...)
		if err := s.CreateGroup(ctx, grp, "bench"); err != nil {
			b.Fatal(err)
		}
		out = append(out, ids(grp.Jobs)...)
	}
	return out
}

// BenchmarkRoundTrips counts the Redis round trips of each write: the target is 1.
func BenchmarkRoundTrips(b *testing.B) {
	type step func(b *testing.B, s *store.Store, id string, c *store.Claim) error
	promoted := func(b *testing.B, s *store.Store, id string, c *store.Claim) error {
		var err error
		*c, err = s.Promote(ctx, id, hubA, "e")
		return err
	}
	finished := func(b *testing.B, s *store.Store, id string, c *store.Claim) error {
		if err := promoted(b, s, id, c); err != nil {
			return err
		}
		_, err := s.Finish(ctx, *c, "")
		return err
	}
	status := model.Resource{ManifestWorkName: "w", Conditions: []model.Condition{{Type: "Applied", Status: "True", Reason: "r"}}}
	cases := []struct {
		name  string
		setup step
		op    step
	}{
		{"create-group", nil, func(b *testing.B, s *store.Store, _ string, _ *store.Claim) error {
			return s.CreateGroup(ctx, newGroup(newJob("a", true), newJob("b", true)), "bench")
		}},
		{"promote", nil, promoted},
		{"renew", promoted, func(b *testing.B, s *store.Store, _ string, c *store.Claim) error {
			_, err := s.RenewLease(ctx, *c)
			return err
		}},
		{"degrade", promoted, func(b *testing.B, s *store.Store, _ string, c *store.Claim) error {
			_, err := s.Degrade(ctx, *c, "")
			return err
		}},
		{"finish", promoted, func(b *testing.B, s *store.Store, _ string, c *store.Claim) error {
			_, err := s.Finish(ctx, *c, "")
			return err
		}},
		{"reopen-update", finished, func(b *testing.B, s *store.Store, id string, _ *store.Claim) error {
			_, err := s.Reopen(ctx, id, store.Reopen{Type: model.UpdateDeployment, SubType: model.ScaleOut})
			return err
		}},
		{"status-changed", promoted, func(b *testing.B, s *store.Store, _ string, c *store.Claim) error {
			_, err := s.WriteResourceStatus(ctx, *c, status)
			return err
		}},
		{"status-unchanged", func(b *testing.B, s *store.Store, id string, c *store.Claim) error {
			if err := promoted(b, s, id, c); err != nil {
				return err
			}
			_, err := s.WriteResourceStatus(ctx, *c, status)
			return err
		}, func(b *testing.B, s *store.Store, _ string, c *store.Claim) error {
			_, err := s.WriteResourceStatus(ctx, *c, status)
			return err
		}},
		{"sync-finish (resource + state + outbox)", promoted, func(b *testing.B, s *store.Store, _ string, c *store.Claim) error {
			_, err := s.Apply(ctx, *c, store.Change{To: model.Finished, Why: "available", Resource: &status, IfUnchanged: true})
			return err
		}},
		{"record-remediation", promoted, func(b *testing.B, s *store.Store, _ string, c *store.Claim) error {
			_, err := s.Record(ctx, *c, store.Record{Manifests: []model.PlainManifest{{YamlString: "kind: Secret"}}, Remediated: true})
			return err
		}},
		{"mark-applied", promoted, func(b *testing.B, s *store.Store, _ string, c *store.Claim) error {
			return s.MarkApplied(ctx, *c)
		}},
		{"set-targets", nil, func(b *testing.B, s *store.Store, id string, _ *store.Claim) error {
			_, err := s.SetTargets(ctx, id, model.Target{ClusterName: "c9", Orchestrator: model.OCM}, "bench")
			return err
		}},
		{"stale-write-refused", promoted, func(b *testing.B, s *store.Store, _ string, c *store.Claim) error {
			stale := *c
			stale.Fence++
			if _, err := s.Finish(ctx, stale, ""); err == nil {
				return fmt.Errorf("a stale finish went through")
			}
			return nil
		}},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			rt := &roundTrips{}
			s := benchStore(b, store.Options{LeaseTTL: time.Hour}, rt)
			jobIDs := benchJobs(b, s, b.N, 1, "")
			claims := make([]store.Claim, b.N)
			if tc.setup != nil {
				for i, id := range jobIDs {
					if err := tc.setup(b, s, id, &claims[i]); err != nil {
						b.Fatal(err)
					}
				}
			}
			before := rt.n.Load()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := tc.op(b, s, jobIDs[i], &claims[i]); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(rt.n.Load()-before)/float64(b.N), "roundtrips/op")
		})
	}
}

// BenchmarkPromoteFinish measures promote+finish of a batch of jobs by 1, 4 and 16 workers
// against one redis-server; one op is the whole batch, so -benchtime 1x is a real figure. At
// each worker count it runs, alternately three times, a store whose script calls share round
// trips (the default) and one whose every call is its own round trip, and prints the rates,
// the redis-server CPU per job (INFO cpu) and the calls per round trip side by side.
func BenchmarkPromoteFinish(b *testing.B) {
	const batch = 4000
	for _, workers := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			c := redis.NewClient(&redis.Options{Addr: single.Addr})
			defer c.Close()
			shared := benchStore(b, store.Options{}, nil)
			lone := benchStore(b, store.Options{RoundTrips: -1}, nil)
			var took, cpu [2]float64
			var trips, calls uint64
			for n := 0; n < b.N; n++ {
				for round := 0; round < 3; round++ {
					for i, s := range []*store.Store{shared, lone} {
						b.StopTimer()
						jobIDs := benchJobs(b, s, batch/100, 100, "")
						b.StartTimer()
						cpu0 := readServerCost(b, c).cpu
						trips0, calls0 := s.RoundTrips()
						start := time.Now()
						if err := promoteFinish(s, jobIDs, workers); err != nil {
							b.Fatal(err)
						}
						took[i] += time.Since(start).Seconds()
						cpu[i] += readServerCost(b, c).cpu - cpu0
						if s == shared {
							t1, c1 := s.RoundTrips()
							trips, calls = trips+t1-trips0, calls+c1-calls0
						}
					}
				}
			}
			jobs := float64(3 * batch * b.N)
			b.ReportMetric(jobs/took[0], "jobs/s")
			b.ReportMetric(jobs/took[1], "jobs/s(own-round-trips)")
			fmt.Printf("promote+finish, %d workers: round trips shared %.0f jobs/s, redis-server CPU %.0fµs per job (%.2f script calls per round trip); every call its own round trip %.0f jobs/s, %.0fµs per job: %.2fx the rate\n",
				workers, jobs/took[0], cpu[0]/jobs, float64(calls)/float64(max(trips, 1)), jobs/took[1], cpu[1]/jobs, took[1]/took[0])
		})
	}
}

// promoteFinish has workers take job ids from a queue and promote+finish each.
func promoteFinish(s *store.Store, jobIDs []string, workers int) error {
	queue := make(chan string, len(jobIDs))
	for _, id := range jobIDs {
		queue <- id
	}
	close(queue)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			holder := fmt.Sprintf("worker-%d", w)
			for id := range queue {
				c, err := s.Promote(ctx, id, hubA, holder)
				if err == nil {
					_, err = s.Finish(ctx, c, "done")
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// BenchmarkMemoryPerJob measures the Redis memory of a job with a 4 KiB manifest, finished
// (create, promote, finish: three history entries): MEMORY USAGE of its own keys, and the
// used_memory growth per job over 1,000 jobs (groups of one job, so each job also carries
// its group and index entries).
func BenchmarkMemoryPerJob(b *testing.B) {
	const jobs = 1000
	manifest := strings.Repeat("# a 4 KiB manifest line of YAML comment padding...............\n", 70)[:4096]
	s := benchStore(b, store.Options{}, nil)
	c := redis.NewClient(&redis.Options{Addr: single.Addr})
	defer c.Close()
	for n := 0; n < b.N; n++ {
		before := infoInt(b, c, "memory", "used_memory")
		jobIDs := benchJobs(b, s, jobs, 1, manifest)
		if err := promoteFinish(s, jobIDs, 4); err != nil {
			b.Fatal(err)
		}
		after := infoInt(b, c, "memory", "used_memory")
		var own int64
		for _, id := range jobIDs {
			for _, k := range []string{":job:", ":hist:"} {
				key := fmt.Sprintf("%s:{b:%02x}%s%s", s.Options().Prefix, model.Bucket(id), k, id)
				own += c.MemoryUsage(ctx, key, 0).Val()
			}
		}
		b.ReportMetric(float64(own)/jobs, "bytes/job(MEMORY-USAGE)")
		b.ReportMetric(float64(after-before)/jobs, "bytes/job(used_memory)")
		b.Logf("job with a 4 KiB manifest: MEMORY USAGE of job hash + history %.0f bytes; used_memory grew %.0f bytes per job over %d jobs",
			float64(own)/jobs, float64(after-before)/jobs, jobs)
	}
}

// BenchmarkBacklog measures what a metrics scrape costs the store: one Backlog read (a count
// per state, the oldest Created job, the outbox depth of all 256 buckets in one pipeline) with
// 1,000 jobs stored.
func BenchmarkBacklog(b *testing.B) {
	s := benchStore(b, store.Options{}, nil)
	benchJobs(b, s, 10, 100, "")
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		if _, err := s.Backlog(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
