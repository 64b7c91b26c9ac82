package store_test

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
	"github.com/ocm-jobs/ocm-jobs/tests/servers"
)

// growthLevels are the numbers of Finished jobs in Redis the cost growth is measured at;
// GROWTH_LEVELS (comma-separated) overrides them.
var growthLevels = []int{1000, 10000, 100000}

// growth is what one level measured.
type growth struct {
	jobs                           int
	create, promote, finish        time.Duration // per transition, one caller
	usedPerJob, ownPerJob          float64       // bytes
	executable, progressing, owned time.Duration // one query, median
}

// BenchmarkCostGrowth fills one redis-server with 1k, 10k and 100k Finished jobs of one hub
// (next to 100 Created jobs waiting for it and 100 it is executing, the same at every level)
// and measures at each level:
//   - the time of one create (a one-job group), one promote and one finish, by one caller
//     (the median over 1,000 jobs);
//   - Redis bytes per job: used_memory growth over all the jobs, and MEMORY USAGE of a job's
//     own keys (hash and history);
//   - the sweep's queries: the executable jobs (ExecutableJobStatus) and the hub's Progressing
//     jobs (ProgressingJobStatusOfOwner), next to every job the hub owns (JobStatusOfOwner,
//     which status sync reads and which grows with the Finished jobs by design).
//
// It prints each figure at 100k over the same at 1k: per-transition time and bytes per job
// should stay near 1, the sweep's queries far below the 100× growth of the Finished jobs.
func BenchmarkCostGrowth(b *testing.B) {
	fmt.Printf("BenchmarkCostGrowth: load average at start %s\n", servers.LoadAverage())
	defer func() { fmt.Printf("BenchmarkCostGrowth: load average at end %s\n", servers.LoadAverage()) }()
	levels := growthLevels
	if v := os.Getenv("GROWTH_LEVELS"); v != "" {
		levels = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(f)
			if err != nil || n < 1000 {
				b.Fatalf("GROWTH_LEVELS=%q: want numbers ≥ 1000", v)
			}
			levels = append(levels, n)
		}
	}
	for n := 0; n < b.N; n++ {
		s := benchStore(b, store.Options{LeaseTTL: time.Hour}, nil)
		c := redis.NewClient(&redis.Options{Addr: single.Addr})
		defer c.Close()
		base := infoInt(b, c, "memory", "used_memory")
		// The constant part: 100 Created jobs with a target, 100 Progressing of hub-a.
		benchJobs(b, s, 1, 100, "")
		for _, id := range benchJobs(b, s, 1, 100, "") {
			if _, err := s.Promote(ctx, id, hubA, "e"); err != nil {
				b.Fatal(err)
			}
		}
		var rows []growth
		// A warm-up (connections, the scripts' first runs), not timed; the jobs count.
		timeTransitions(b, s, 200)
		finished := 200
		for _, level := range levels {
			// Fill up to level Finished jobs, less the 1,000 the level times itself.
			if fill := level - 1000 - finished; fill > 0 {
				ids := benchJobs(b, s, fill/100, 100, "")
				if err := promoteFinish(s, ids, 8); err != nil {
					b.Fatal(err)
				}
				finished += len(ids)
			}
			g := growth{jobs: level}
			g.create, g.promote, g.finish = timeTransitions(b, s, 1000)
			finished += 1000
			// The relay publishes and deletes the outbox entries; nobody does here, so they are
			// acked (deleted) before the memory is read, as they would be in steady state.
			drainOutbox(b, s)
			g.usedPerJob = float64(infoInt(b, c, "memory", "used_memory")-base) / float64(finished+200)
			g.ownPerJob = ownBytes(b, c, s, 200)
			g.executable = medianOf(b, func() int {
				js, err := s.ExecutableJobStatus(ctx, model.OCM, hubA)
				if err != nil {
					b.Fatal(err)
				}
				return len(js)
			}, 100)
			g.progressing = medianOf(b, func() int {
				js, err := s.ProgressingJobStatusOfOwner(ctx, hubA)
				if err != nil {
					b.Fatal(err)
				}
				return len(js)
			}, 100)
			g.owned = medianOf(b, func() int {
				js, err := s.JobStatusOfOwner(ctx, hubA)
				if err != nil {
					b.Fatal(err)
				}
				return len(js)
			}, finished+100)
			rows = append(rows, g)
			fmt.Printf("cost growth, %6d Finished jobs: create %s promote %s finish %s per transition; %.0f bytes/job (used_memory), %.0f bytes/job (MEMORY USAGE of job + history); executable query %s, Progressing-of-hub query %s, all jobs of the hub %s\n",
				level, us(g.create), us(g.promote), us(g.finish), g.usedPerJob, g.ownPerJob, us(g.executable), us(g.progressing), us(g.owned))
		}
		if len(rows) < 2 {
			continue
		}
		lo, hi := rows[0], rows[len(rows)-1]
		grow := float64(hi.jobs) / float64(lo.jobs)
		ratio := func(a, b time.Duration) float64 { return float64(a) / float64(b) }
		fmt.Printf("cost growth %d → %d Finished jobs (%.0fx): per transition (median) create %.2fx promote %.2fx finish %.2fx, bytes/job %.2fx by MEMORY USAGE, %.2fx by used_memory (goal: flat, ~1x); executable query %.2fx, Progressing-of-hub query %.2fx (goal: sub-linear, far below %.0fx); all jobs of the hub %.2fx (linear by design)\n",
			lo.jobs, hi.jobs, grow, ratio(hi.create, lo.create), ratio(hi.promote, lo.promote), ratio(hi.finish, lo.finish),
			hi.ownPerJob/lo.ownPerJob, hi.usedPerJob/lo.usedPerJob, ratio(hi.executable, lo.executable), ratio(hi.progressing, lo.progressing), grow, ratio(hi.owned, lo.owned))
		b.ReportMetric(ratio(hi.promote+hi.finish+hi.create, lo.promote+lo.finish+lo.create), "x-transition-time")
		b.ReportMetric(hi.ownPerJob/lo.ownPerJob, "x-bytes/job")
		b.ReportMetric(ratio(hi.executable, lo.executable), "x-executable-query")
		b.ReportMetric(ratio(hi.progressing, lo.progressing), "x-progressing-query")
	}
}

// timeTransitions creates n one-job groups, then promotes them, then finishes them, one at a
// time, and returns the median time of each (the median: a shared machine's load spikes
// weigh on a mean).
func timeTransitions(b *testing.B, s *store.Store, n int) (create, promote, finish time.Duration) {
	b.Helper()
	jobIDs := make([]string, 0, n)
	took := make([]time.Duration, n)
	for i := 0; i < n; i++ {
		grp := newGroup(newJob("t", true))
		t0 := time.Now()
		if err := s.CreateGroup(ctx, grp, "bench"); err != nil {
			b.Fatal(err)
		}
		took[i] = time.Since(t0)
		jobIDs = append(jobIDs, grp.Jobs[0].ID)
	}
	create = median(took)
	claims := make([]store.Claim, n)
	for i, id := range jobIDs {
		t0 := time.Now()
		var err error
		if claims[i], err = s.Promote(ctx, id, hubA, "e"); err != nil {
			b.Fatal(err)
		}
		took[i] = time.Since(t0)
	}
	promote = median(took)
	for i, c := range claims {
		t0 := time.Now()
		if _, err := s.Finish(ctx, c, "done"); err != nil {
			b.Fatal(err)
		}
		took[i] = time.Since(t0)
	}
	return create, promote, median(took)
}

func median(ts []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ts...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// drainOutbox acks every outbox entry, as the relay does once the broker has them.
func drainOutbox(b *testing.B, s *store.Store) {
	b.Helper()
	for {
		due, err := s.OutboxDue(ctx, 0, 20)
		if err != nil {
			b.Fatal(err)
		}
		if len(due) == 0 {
			return
		}
		if err := s.AckOutbox(ctx, due); err != nil {
			b.Fatal(err)
		}
	}
}

// ownBytes is the mean MEMORY USAGE of the hash and history of n of the hub's jobs.
func ownBytes(b *testing.B, c *redis.Client, s *store.Store, n int) float64 {
	b.Helper()
	js, err := s.JobStatusOfOwner(ctx, hubA)
	if err != nil {
		b.Fatal(err)
	}
	if len(js) > n {
		js = js[len(js)-n:]
	}
	var own int64
	for _, j := range js {
		for _, k := range []string{":job:", ":hist:"} {
			own += c.MemoryUsage(context.Background(), fmt.Sprintf("%s:{b:%02x}%s%s", s.Options().Prefix, model.Bucket(j.ID), k, j.ID), 0).Val()
		}
	}
	return float64(own) / float64(len(js))
}

// medianOf runs query once untimed, then 5 times, and returns the median time; it must
// answer want items.
func medianOf(b *testing.B, query func() int, want int) time.Duration {
	b.Helper()
	query()
	var ts []time.Duration
	for i := 0; i < 5; i++ {
		t0 := time.Now()
		if got := query(); got != want {
			b.Fatalf("the query answered %d items, want %d", got, want)
		}
		ts = append(ts, time.Since(t0))
	}
	return median(ts)
}

func us(d time.Duration) string { return d.Round(time.Microsecond).String() }
