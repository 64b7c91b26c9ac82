package eventing

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	workv1 "open-cluster-management.io/api/work/v1"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/ocm"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
	"github.com/ocm-jobs/ocm-jobs/tests/servers"
)

// BenchmarkStatusLatency measures, in one run, how long a job takes to follow its work agent's
// status write, at 10 changes/s: the clock starts when a watch on the hub (this benchmark's
// own) sees the first version of the work whose status carries the verdict (Applied and
// Available at the work's generation: the agent's status write), and stops at the job's
// Finished as the store recorded it (the history entry's time, Redis's clock on this same
// machine). Half the works' jobs are synced by the event path (the ApiServerSource, the
// broker, statussync's SyncWork) and half by a second statussync that only gets the cron tick
// (every 10 s, as `make run`'s PingSource), with its own store prefix; the event path's
// statussync gets every work's events (the tick path's jobs are not in its store). It prints
// p50 and p99 of each path and how many of N followed, and for the event path where the time
// went, per job, along the delivery during which its job changed: status write → broker
// ingress (knativearrivaltime: the ApiServerSource adapter and its send; slightly negative
// when the adapter's watch saw the write before this benchmark's), ingress → statussync
// (channel, dispatch, filter), statussync's handling up to the job's write (SyncWork: the
// job, a GET, the store write) and up to its answer (the outbox's publish) — plus the
// deliveries, their redeliveries and the non-2xx answers.
func BenchmarkStatusLatency(b *testing.B) {
	const perPath, rate, tickEvery = 30, 10, 10 * time.Second
	for i := 0; i < b.N; i++ {
		eventPrefix, tickPrefix := "be"+uuid.NewString()[:8], "bt"+uuid.NewString()[:8]
		tp := &tap{}
		statusEvents(b, eventPrefix, tp)
		ticker := servers.StartFunction(b, "../..", map[string]string{
			"FUNCTION": "statussync", "REDIS_URL": env.Redis.URL(), "KUBECONFIG": env.Hub.Kubeconfig,
			"STORE_PREFIX": tickPrefix, "K_SINK": "", "LOG_LEVEL": "warn", "AUTH_MODE": "none", "AUTH_CLOUDEVENTS": "false",
		})
		stopTicks := tick(b, ticker.URL, tickEvery)
		ctx := context.Background()
		hubID, err := env.Hub.HubID(ctx)
		if err != nil {
			b.Fatal(err)
		}
		stores := map[string]*store.Store{}
		for _, p := range []string{eventPrefix, tickPrefix} {
			rdb := redis.NewClient(&redis.Options{Addr: env.Redis.Addr, PoolSize: 16})
			b.Cleanup(func() { rdb.Close() })
			if stores[p], err = store.New(rdb, store.Options{Prefix: p}); err != nil {
				b.Fatal(err)
			}
		}
		writes := watchStatusWrites(b, "cluster1")
		// Warm up the event path: one job Finished through it before the clock runs.
		warm := promotedJob(b, stores[eventPrefix], hubID)
		if _, err := env.Hub.Work.WorkV1().ManifestWorks("cluster1").Create(ctx, workOf(b, warm, hubID), metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		waitJob(b, stores[eventPrefix], warm.ID, time.Minute, "Finished (warm-up)", func(j *model.Job) bool { return j.State == model.Finished })
		tp.reset()

		ids := map[string][]string{}
		for n := 0; n < 2*perPath; n++ {
			path := []string{eventPrefix, tickPrefix}[n%2]
			j := promotedJob(b, stores[path], hubID)
			if _, err := env.Hub.Work.WorkV1().ManifestWorks("cluster1").Create(ctx, workOf(b, j, hubID), metav1.CreateOptions{}); err != nil {
				b.Fatal(err)
			}
			ids[path] = append(ids[path], j.ID)
			time.Sleep(time.Second / rate)
		}
		// Wait (a minute at most) until every job is Finished; a job its path did not finish
		// is counted, not timed: on the event path that is an event lost on the way (in
		// production the tick catches it).
		finished := map[string]map[string]time.Time{}
		for _, p := range []string{eventPrefix, tickPrefix} {
			finished[p] = finishTimes(b, stores[p], ids[p], time.Now().Add(time.Minute))
		}
		stopTicks()
		b.Logf("status writes seen: %d; jobs finished: event path %d, tick path %d", writes.count(), len(finished[eventPrefix]), len(finished[tickPrefix]))
		for _, p := range []struct{ name, prefix string }{{"event", eventPrefix}, {"tick", tickPrefix}} {
			var lat []time.Duration
			for _, id := range ids[p.prefix] {
				at, ok := finished[p.prefix][id]
				w, seen := writes.at(ocm.WorkName(id))
				if ok && seen {
					lat = append(lat, at.Sub(w))
				}
			}
			p50, p99 := percentile(lat, 50), percentile(lat, 99)
			b.Logf("%s path: %d of %d status writes followed within a minute at %d changes/s (both paths): write → job Finished p50 %s p99 %s",
				p.name, len(lat), perPath, rate, p50.Round(time.Millisecond), p99.Round(time.Millisecond))
			b.ReportMetric(float64(perPath-len(lat)), p.name+"-unfollowed")
			b.ReportMetric(float64(p50.Milliseconds()), p.name+"-p50-ms")
			b.ReportMetric(float64(p99.Milliseconds()), p.name+"-p99-ms")
		}
		b.Logf("ticks answered: %s", tickAnswers())
		b.Logf("event path breakdown: %s", tp.breakdown(ids[eventPrefix], finished[eventPrefix], writes))
	}
}

// statusWrites are the times a watch on the hub first saw each work's status carry a verdict.
type statusWrites struct {
	mu   sync.Mutex
	seen map[string]statusWrite
}

// statusWrite is one work's status write: when the watch delivered it, and its resourceVersion.
type statusWrite struct {
	at time.Time
	rv string
}

func (s *statusWrites) at(work string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w, ok := s.seen[work]
	return w.at, ok
}

func (s *statusWrites) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.seen)
}

// watchStatusWrites watches ocm-jobs's ManifestWorks in namespace ns until the benchmark ends.
func watchStatusWrites(b *testing.B, ns string) *statusWrites {
	b.Helper()
	s := &statusWrites{seen: map[string]statusWrite{}}
	ctx, cancel := context.WithCancel(context.Background())
	// From the watch cache's own resourceVersion: a watch from "now" waits for the cache to
	// reach etcd's (other resources' writes move it), which here times out (504).
	sel := ocm.LabelManagedBy + "=" + ocm.ManagedBy
	list, err := env.Hub.Work.WorkV1().ManifestWorks(ns).List(ctx, metav1.ListOptions{LabelSelector: sel, ResourceVersion: "0"})
	var w watch.Interface
	if err == nil {
		w, err = env.Hub.Work.WorkV1().ManifestWorks(ns).Watch(ctx, metav1.ListOptions{LabelSelector: sel, ResourceVersion: list.ResourceVersion})
	}
	if err != nil {
		cancel()
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			mw, ok := ev.Object.(*workv1.ManifestWork)
			if !ok && ev.Type == watch.Error && ctx.Err() == nil {
				b.Errorf("watching ManifestWorks: %+v", ev.Object)
			}
			if !ok || (ev.Type != watch.Added && ev.Type != watch.Modified) || !verdictWritten(mw) {
				continue
			}
			at := time.Now()
			s.mu.Lock()
			if _, ok := s.seen[mw.Name]; !ok {
				s.seen[mw.Name] = statusWrite{at: at, rv: mw.ResourceVersion}
			}
			s.mu.Unlock()
		}
	}()
	// Cancelled first: the stream's end is then no error.
	b.Cleanup(func() { cancel(); w.Stop(); <-done })
	return s
}

// verdictWritten says the agent wrote a status with a verdict on the work's spec: Applied and
// Available True, at its generation when the agent says which (as ocm.Work.Condition reads).
func verdictWritten(mw *workv1.ManifestWork) bool {
	for _, t := range []string{workv1.WorkApplied, workv1.WorkAvailable} {
		c := meta.FindStatusCondition(mw.Status.Conditions, t)
		if c == nil || c.Status != metav1.ConditionTrue || (c.ObservedGeneration != 0 && c.ObservedGeneration != mw.Generation) {
			return false
		}
	}
	return true
}

// finishTimes waits until every job is Finished (polling each pending job every 100 ms), or
// until deadline, and returns when each was, by its history entry (Redis's clock).
func finishTimes(b *testing.B, st *store.Store, ids []string, deadline time.Time) map[string]time.Time {
	b.Helper()
	ctx := context.Background()
	pending := append([]string(nil), ids...)
	for len(pending) > 0 && time.Now().Before(deadline) {
		rest := pending[:0]
		for _, id := range pending {
			if j, err := st.GetJobStatus(ctx, id); err != nil || j.State != model.Finished {
				rest = append(rest, id)
			}
		}
		pending = rest
		time.Sleep(100 * time.Millisecond)
	}
	hist, err := st.RecentHistory(ctx, ids, 10)
	if err != nil {
		b.Fatal(err)
	}
	out := map[string]time.Time{}
	for id, es := range hist {
		for _, e := range es {
			if e.To == model.Finished && e.From != model.Finished {
				out[id] = e.At
				break
			}
		}
	}
	return out
}

// tap stands between the broker and statussync: it records every delivery (its job, when the
// broker's ingress took the event in, when it arrived, when and how statussync answered) and
// passes it on unchanged.
type tap struct {
	target string
	client *http.Client

	mu  sync.Mutex
	got []tapped
}

// tapped is one delivery through the tap.
type tapped struct {
	id, typ, job               string
	ingress, arrived, answered time.Time
	status                     int
}

// front serves the tap on a loopback port, passing deliveries on to target (http://host:port),
// and returns the tap's host:port.
func (tp *tap) front(t testing.TB, target string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tp.target = target
	tp.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	srv := &http.Server{Handler: tp, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return l.Addr().String()
}

func (tp *tap) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	d := tapped{arrived: time.Now(), id: r.Header.Get("Ce-Id"), typ: r.Header.Get("Ce-Type")}
	if at, err := time.Parse(time.RFC3339Nano, r.Header.Get("Ce-Knativearrivaltime")); err == nil {
		d.ingress = at
	}
	body, _ := io.ReadAll(r.Body)
	var ref struct{ Name string }
	if json.Unmarshal(body, &ref) == nil {
		d.job = strings.TrimPrefix(ref.Name, ocm.WorkName(""))
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, tp.target+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	req.Header = r.Header.Clone()
	resp, err := tp.client.Do(req)
	if err != nil {
		d.status = http.StatusBadGateway
		http.Error(w, err.Error(), d.status)
	} else {
		answer, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for k, vs := range resp.Header {
			w.Header()[k] = vs
		}
		d.status = resp.StatusCode
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(answer)
	}
	d.answered = time.Now()
	tp.mu.Lock()
	tp.got = append(tp.got, d)
	tp.mu.Unlock()
}

func (tp *tap) reset() {
	tp.mu.Lock()
	tp.got = nil
	tp.mu.Unlock()
}

// breakdown says where the event path's time went: per job, along the delivery during which
// its job changed (statussync got it before, and answered after, the change).
func (tp *tap) breakdown(ids []string, finished map[string]time.Time, writes *statusWrites) string {
	tp.mu.Lock()
	got := append([]tapped(nil), tp.got...)
	tp.mu.Unlock()
	mine := map[string]bool{}
	for _, id := range ids {
		mine[id] = true
	}
	var toIngress, toStatussync, toWrite, answer, lag []time.Duration
	deliveries, failed, attempts := 0, 0, map[string]int{}
	for _, d := range got {
		if !mine[d.job] {
			continue
		}
		deliveries++
		attempts[d.id]++
		if d.status < 200 || d.status > 299 {
			failed++
		}
	}
	redelivered := 0
	for _, n := range attempts {
		redelivered += n - 1
	}
	for _, id := range ids {
		fin, ok := finished[id]
		w, seen := writes.at(ocm.WorkName(id))
		if !ok || !seen {
			continue
		}
		for _, d := range got {
			// Redis's clock has ms; the tap's ns: allow the ms on both sides.
			if d.job != id || d.arrived.After(fin.Add(time.Millisecond)) || d.answered.Before(fin.Add(-time.Millisecond)) {
				continue
			}
			if !d.ingress.IsZero() {
				toIngress = append(toIngress, d.ingress.Sub(w))
				toStatussync = append(toStatussync, d.arrived.Sub(d.ingress))
			}
			toWrite = append(toWrite, fin.Sub(d.arrived))
			answer = append(answer, d.answered.Sub(d.arrived))
			lag = append(lag, fin.Sub(w))
			break
		}
	}
	pct := func(ds []time.Duration) string {
		return fmt.Sprintf("p50 %s p99 %s", percentile(ds, 50).Round(time.Millisecond), percentile(ds, 99).Round(time.Millisecond))
	}
	return fmt.Sprintf("%d jobs' changes found in a delivery; status write → broker ingress %s; ingress → statussync %s; statussync: delivery → job written %s, → answered %s; "+
		"%d deliveries for %d events (%d redelivered), %d answered non-2xx",
		len(lag), pct(toIngress), pct(toStatussync), pct(toWrite), pct(answer), deliveries, len(attempts), redelivered, failed)
}
