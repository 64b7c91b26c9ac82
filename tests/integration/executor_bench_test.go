package integration

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/tests/servers"
)

// icosTick is how often the ICOS Deploy Manager polls for jobs: its latency floor.
const icosTick = 15 * time.Second

// benchCluster is a ManagedCluster without an agent: the benchmark measures the hub side.
const benchCluster = "benchcluster"

// BenchmarkExecutor measures, for 1,000 jobs with real Redis and the real API server, the
// latency from a job.created event accepted by an executor to its ManifestWork stored on the
// hub (the executor answers once the ManifestWork is applied), p50 and p99, and the
// throughput with 1 and 4 executor processes; p99 is compared with the ICOS 15 s tick. One
// sender measures the latency of a job alone; eight keep the executors busy (throughput), at
// the price of queueing on this machine's two cores.
func BenchmarkExecutor(b *testing.B) {
	for _, run := range []struct{ procs, senders int }{{1, 1}, {1, 8}, {4, 8}} {
		procs, senders := run.procs, run.senders
		b.Run(fmt.Sprintf("processes=%d/senders=%d", procs, senders), func(b *testing.B) {
			if err := servers.RegisterCluster(context.Background(), env.Hub, benchCluster); err != nil {
				b.Fatal(err)
			}
			prefix := "bx" + model.NewID()[:8]
			st := newStore(b, prefix)
			var ps []*process
			for i := 0; i < procs; i++ {
				ps = append(ps, startProcess(b, baseEnv(prefix, "executor")))
			}
			const n = 1000
			var jobs []model.Job
			for len(jobs) < n {
				jobs = append(jobs, createJobs(b, st, 100, benchCluster, "")...)
			}
			lat := make([]time.Duration, n)
			next := make(chan int)
			var wg sync.WaitGroup
			start := time.Now()
			for s := 0; s < senders; s++ {
				wg.Add(1)
				go func(s int) {
					defer wg.Done()
					for i := range next {
						t0 := time.Now()
						if status := deliver(b, ps[i%procs].url, "bench-"+jobs[i].ID, jobs[i]); status != 200 {
							b.Errorf("job %d: %d", i, status)
						}
						lat[i] = time.Since(t0)
					}
				}(s)
			}
			for i := 0; i < n; i++ {
				next <- i
			}
			close(next)
			wg.Wait()
			total := time.Since(start)
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			p50, p99 := lat[n/2], lat[n*99/100]
			stored := 0
			for _, j := range jobs[:20] {
				if worksOf(b, benchCluster, j.ID) == 1 {
					stored++
				}
			}
			if stored != 20 {
				b.Errorf("only %d of 20 sampled jobs have their ManifestWork", stored)
			}
			b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
			b.ReportMetric(float64(n)/total.Seconds(), "jobs/s")
			b.ReportMetric(float64(icosTick)/float64(p99), "x-faster-than-icos-tick")
			fmt.Printf("executor, %d process(es), %d senders: %d jobs in %s = %.0f jobs/s; job.created→ManifestWork p50 %s p99 %s; ICOS picks a job up on a %s tick: our p99 is %.0fx shorter (target p99 < 50ms)\n",
				procs, senders, n, total.Round(time.Millisecond), float64(n)/total.Seconds(), p50.Round(time.Microsecond), p99.Round(time.Microsecond), icosTick, float64(icosTick)/float64(p99))
			_ = env.Hub.Work.WorkV1().ManifestWorks(benchCluster).DeleteCollection(context.Background(), metav1.DeleteOptions{}, metav1.ListOptions{})
		})
	}
}
