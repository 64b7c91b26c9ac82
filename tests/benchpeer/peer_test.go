package benchpeer

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
	"github.com/ocm-jobs/ocm-jobs/tests/servers"
)

// batch is how many jobs (and tasks) one measurement moves; one benchmark op is one batch of
// each, so -benchtime 1x already gives real figures.
const batch = 4000

// BenchmarkVersusAsynq runs, against one redis-server (AOF everysec) and at concurrency
// 1, 4 and 16:
//   - ocm-jobs promote+finish of Created jobs (workers take job ids from a queue, promote each
//     to a hub and finish it: two fenced, indexed, history-keeping scripts per job);
//   - ocm-jobs end to end: producers create one-job groups and queue their ids, workers
//     promote+finish them (the analogue of enqueue+process);
//   - asynq enqueue+process of an empty task: producers enqueue, an asynq server with that
//     concurrency processes.
//
// It reports jobs/s, tasks/s and the ratios; the machine is shared, so only ratios from one
// run mean anything.
func BenchmarkVersusAsynq(b *testing.B) {
	r, err := servers.StartRedis(servers.RedisOptions{AppendFsync: "everysec"})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Stop()
	c := redis.NewClient(&redis.Options{Addr: r.Addr, PoolSize: 64})
	defer c.Close()
	s, err := store.New(c, store.Options{Prefix: "peer"})
	if err != nil {
		b.Fatal(err)
	}
	// The same store with every script call its own round trip (as before round trips were
	// shared), for the side-by-side figure of what sharing them gives.
	lone, err := store.New(c, store.Options{Prefix: "peer-lone", RoundTrips: -1})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := s.LoadScripts(ctx); err != nil {
		b.Fatal(err)
	}
	fmt.Printf("BenchmarkVersusAsynq: load average at start %s\n", servers.LoadAverage())
	defer func() { fmt.Printf("BenchmarkVersusAsynq: load average at end %s\n", servers.LoadAverage()) }()
	for _, n := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("concurrency=%d", n), func(b *testing.B) {
			var pf, e2e, e2eLone, aq, e2eCPU, loneCPU, aqCPU float64
			var trips, calls uint64
			for i := 0; i < b.N; i++ {
				pf += promoteFinishRate(b, s, n)
				cpu0 := redisCPU(b, c)
				t0, c0 := s.RoundTrips()
				e2e += endToEndRate(b, s, n)
				t1, c1 := s.RoundTrips()
				trips, calls = trips+t1-t0, calls+c1-c0
				cpu1 := redisCPU(b, c)
				aq += asynqRate(b, r.Addr, n)
				cpu2 := redisCPU(b, c)
				e2eLone += endToEndRate(b, lone, n)
				e2eCPU += (cpu1 - cpu0) / batch
				aqCPU += (cpu2 - cpu1) / batch
				loneCPU += (redisCPU(b, c) - cpu2) / batch
			}
			k := float64(b.N)
			pf, e2e, e2eLone, aq, e2eCPU, loneCPU, aqCPU = pf/k, e2e/k, e2eLone/k, aq/k, e2eCPU/k, loneCPU/k, aqCPU/k
			b.ReportMetric(pf, "jobs/s(promote+finish)")
			b.ReportMetric(e2e, "jobs/s(create+promote+finish)")
			b.ReportMetric(aq, "tasks/s(asynq)")
			b.ReportMetric(pf/aq, "ratio(promote+finish/asynq)")
			b.ReportMetric(e2e/aq, "ratio(create+promote+finish/asynq)")
			fmt.Printf("RATIO store/asynq, concurrency %d: create+promote+finish %.0f jobs/s / asynq enqueue+process %.0f tasks/s = %.2fx (goal ≥ 1.5x); promote+finish alone %.0f jobs/s = %.2fx; redis-server CPU per job %.0fµs, per asynq task %.0fµs (%.2fx)\n",
				n, e2e, aq, e2e/aq, pf, pf/aq, e2eCPU*1e6, aqCPU*1e6, e2eCPU/aqCPU)
			fmt.Printf("  round trips shared: %.2f script calls per round trip; every call its own round trip: %.0f jobs/s = %.2fx asynq, redis-server CPU per job %.0fµs\n",
				float64(calls)/float64(max(trips, 1)), e2eLone, e2eLone/aq, loneCPU*1e6)
		})
	}
}

// redisCPU is the CPU time the redis-server has used so far (INFO cpu, user + system), in
// seconds: what a job's life costs the server, whatever the machine's load.
func redisCPU(b *testing.B, c *redis.Client) float64 {
	b.Helper()
	info, err := c.Info(context.Background(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var sum float64
	for _, line := range strings.Split(info, "\r\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatalf("INFO cpu %s=%q: %v", k, v, err)
			}
			sum += f
		}
	}
	return sum
}

func newJobs(n int) []model.Job {
	jobs := make([]model.Job, n)
	for i := range jobs {
		jobs[i] = model.Job{Component: fmt.Sprintf("c%d", i), Namespace: "bench",
			Manifests: []model.PlainManifest{{YamlString: "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n"}},
			Targets:   &model.Target{ClusterName: "cluster1", Orchestrator: model.OCM}}
	}
	return jobs
}

// promoteFinishRate creates batch jobs (untimed), then times n workers promoting and
// finishing them.
func promoteFinishRate(b *testing.B, s *store.Store, n int) float64 {
	ctx := context.Background()
	queue := make(chan string, batch)
	for g := 0; g < batch/100; g++ {
		grp := &model.JobGroup{AppName: "bench", Jobs: newJobs(100)}
		if err := s.CreateGroup(ctx, grp, "bench"); err != nil {
			b.Fatal(err)
		}
		for _, j := range grp.Jobs {
			queue <- j.ID
		}
	}
	close(queue)
	start := time.Now()
	runWorkers(b, s, n, queue)
	return batch / time.Since(start).Seconds()
}

// endToEndRate times n producers creating one-job groups while n workers promote and finish
// them.
func endToEndRate(b *testing.B, s *store.Store, n int) float64 {
	ctx := context.Background()
	queue := make(chan string, batch)
	start := time.Now()
	var produced sync.WaitGroup
	for p := 0; p < n; p++ {
		produced.Add(1)
		go func() {
			defer produced.Done()
			for i := p; i < batch; i += n {
				grp := &model.JobGroup{AppName: "bench", Jobs: newJobs(1)}
				if err := s.CreateGroup(ctx, grp, "bench"); err != nil {
					b.Error(err)
					return
				}
				queue <- grp.Jobs[0].ID
			}
		}()
	}
	go func() { produced.Wait(); close(queue) }()
	runWorkers(b, s, n, queue)
	return batch / time.Since(start).Seconds()
}

func runWorkers(b *testing.B, s *store.Store, n int, queue <-chan string) {
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := 0; w < n; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			holder := fmt.Sprintf("worker-%d", w)
			for id := range queue {
				c, err := s.Promote(ctx, id, "hub", holder)
				if err == nil {
					_, err = s.Finish(ctx, c, "done")
				}
				if err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// asynqRate times n producers enqueueing batch empty tasks while an asynq server with
// concurrency n processes them, until the last one is done.
func asynqRate(b *testing.B, addr string, n int) float64 {
	opt := asynq.RedisClientOpt{Addr: addr, PoolSize: 64}
	client := asynq.NewClient(opt)
	defer client.Close()
	var done atomic.Int64
	finished := make(chan struct{})
	mux := asynq.NewServeMux()
	mux.HandleFunc("empty", func(context.Context, *asynq.Task) error {
		if done.Add(1) == batch {
			close(finished)
		}
		return nil
	})
	srv := asynq.NewServer(opt, asynq.Config{Concurrency: n, LogLevel: asynq.FatalLevel,
		TaskCheckInterval: 10 * time.Millisecond})
	start := time.Now()
	if err := srv.Start(mux); err != nil {
		b.Fatal(err)
	}
	defer srv.Shutdown()
	var wg sync.WaitGroup
	for p := 0; p < n; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := p; i < batch; i += n {
				if _, err := client.Enqueue(asynq.NewTask("empty", nil)); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	select {
	case <-finished:
	case <-time.After(5 * time.Minute):
		b.Fatalf("asynq processed %d of %d tasks in 5 minutes", done.Load(), batch)
	}
	return batch / time.Since(start).Seconds()
}
