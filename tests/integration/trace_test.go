package integration

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/google/uuid"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/ocm-jobs/ocm-jobs/shared/events"
)

// otlpReceiver is an in-process OTLP/HTTP receiver: it keeps every span the function
// processes export, with the service that exported it. (An ExportTraceServiceRequest has the
// wire format of TracesData: its resource spans are field 1 of both.)
type otlpReceiver struct {
	srv     *httptest.Server
	mu      sync.Mutex
	spans   []receivedSpan
	metrics int // OTLP metric pushes received
}

type receivedSpan struct {
	service, name, traceID string
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	r := &otlpReceiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var body io.Reader = req.Body
		if req.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(req.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = zr
		}
		raw, err := io.ReadAll(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		switch req.URL.Path {
		case "/v1/traces":
			var td tracepb.TracesData
			if err := proto.Unmarshal(raw, &td); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			r.mu.Lock()
			for _, rs := range td.GetResourceSpans() {
				service := ""
				for _, a := range rs.GetResource().GetAttributes() {
					if a.GetKey() == "service.name" {
						service = a.GetValue().GetStringValue()
					}
				}
				for _, ss := range rs.GetScopeSpans() {
					for _, s := range ss.GetSpans() {
						r.spans = append(r.spans, receivedSpan{service: service, name: s.GetName(), traceID: hex.EncodeToString(s.GetTraceId())})
					}
				}
			}
			r.mu.Unlock()
		case "/v1/metrics":
			r.mu.Lock()
			r.metrics++
			r.mu.Unlock()
		default:
			http.NotFound(w, req)
			return
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// inTrace lists, by service, the names of the spans of trace traceID received so far.
func (r *otlpReceiver) inTrace(traceID string) map[string][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string][]string{}
	for _, s := range r.spans {
		if s.traceID == traceID {
			out[s.service] = append(out[s.service], s.name)
		}
	}
	return out
}

// published records the events the functions publish to the broker's ingress.
type published struct {
	mu     sync.Mutex
	events []event.Event
}

func (p *published) add(e event.Event) {
	p.mu.Lock()
	p.events = append(p.events, e)
	p.mu.Unlock()
}

// of returns the recorded events of type typ about job id.
func (p *published) of(typ, jobID string) []event.Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []event.Event
	for _, e := range p.events {
		if id, _ := e.Extensions()[events.ExtJobID].(string); e.Type() == typ && id == jobID {
			out = append(out, e)
		}
	}
	return out
}

// jobsOf returns the ids of the jobs of the group named name announced so far.
func (p *published) jobsOf(name string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	seen := map[string]bool{}
	var out []string
	for _, e := range p.events {
		var j struct {
			Name string `json:"job_group_name"`
		}
		id, _ := e.Extensions()[events.ExtJobID].(string)
		if json.Unmarshal(e.Data(), &j) == nil && j.Name == name && id != "" && !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// tracedStack is the four functions as four processes behind a broker of the real Knative
// Eventing (e2e_knative_test.go, event authentication on), each exporting OTLP to an
// in-process receiver, against the suite's Redis, hub and work agents, with the cron tick
// every 2 s.
type tracedStack struct {
	recv  *otlpReceiver
	b     *knBroker
	pub   *published
	procs map[string]*process
}

// startTracedStack starts it; keep says which Triggers of k8s/base (by subscriber, e.g.
// ocm-jobs-jobs, and filter type) the broker gets.
func startTracedStack(t *testing.T, keep func(subscriber, filterType string) bool) *tracedStack {
	t.Helper()
	recv := newOTLPReceiver(t)
	b := takeBroker(t)
	pub := &published{}
	sinkURL := b.recordingIngress(t, func(r *http.Request, raw []byte) {
		probe := r.Clone(r.Context())
		probe.Body = io.NopCloser(bytes.NewReader(raw))
		if e, err := binding.ToEvent(r.Context(), cehttp.NewMessageFromHttpRequest(probe)); err == nil {
			pub.add(*e)
		}
	})

	prefix := "tr" + uuid.NewString()[:8]
	procs := map[string]*process{}
	urls := map[string]string{}
	for _, fn := range []string{"jobs", "incompliance", "executor", "statussync"} {
		vars := baseEnv(prefix, fn)
		vars["K_SINK"], vars["SINK_TOKEN_FILE"] = sinkURL, b.tokenFile
		vars["AUTH_CLOUDEVENTS"], vars["EVENTS_OIDC_ISSUER"], vars["EVENTS_AUDIENCES"] = "true", "hub", "ocm-jobs-"+fn
		vars["OTEL_EXPORTER_OTLP_ENDPOINT"] = recv.srv.URL
		vars["OTEL_BSP_SCHEDULE_DELAY"] = "100"
		vars["OTEL_METRIC_EXPORT_INTERVAL"] = "1000"
		vars["LEASE_TTL"] = "3s"
		procs[fn] = startProcess(t, vars)
		urls["ocm-jobs-"+fn] = expose(t, b.name+"-"+fn, procs[fn].url)
	}
	b.run(t, func(subscriber, filterType string) (string, bool) {
		u, ok := urls[subscriber]
		return u, ok && keep(subscriber, filterType)
	})
	tickEvery(t, b, 2*time.Second)
	return &tracedStack{recv: recv, b: b, pub: pub, procs: procs}
}

// createGroup publishes a guestbook group (named name) in the trace traceID, as a traced client
// would, and waits until both of its jobs finished; it returns their ids.
func (s *tracedStack) createGroup(t *testing.T, name, traceID string) []string {
	t.Helper()
	create := event.New()
	create.SetID(uuid.NewString())
	create.SetType(events.JobGroupCreate)
	create.SetSource("/tests/integration/trace")
	create.SetExtension("traceparent", "00-"+traceID+"-"+traceID[:16]+"-01")
	descriptor := strings.Replace(string(guestbook(t)), "name: guestbook", "name: "+name, 1)
	if err := create.SetData("application/yaml", []byte(descriptor)); err != nil {
		t.Fatal(err)
	}
	if err := s.b.publisher.Publish(context.Background(), create); err != nil {
		t.Fatal(err)
	}
	var jobs []string
	waitUntil(t, 90*time.Second, "the group's two jobs finished", func() bool {
		jobs = s.pub.jobsOf(name)
		if len(jobs) != 2 {
			return false
		}
		for _, id := range jobs {
			if len(s.pub.of(events.JobFinished, id)) == 0 {
				return false
			}
		}
		return true
	})
	return jobs
}

// checkEventsCarry checks that every job.created, job.progressing and job.finished of jobs
// carries the trace traceID.
func (s *tracedStack) checkEventsCarry(t *testing.T, jobs []string, traceID string) {
	t.Helper()
	for _, typ := range []string{events.JobCreated, events.JobProgressing, events.JobFinished} {
		for _, id := range jobs {
			for _, e := range s.pub.of(typ, id) {
				tp, _ := e.Extensions()["traceparent"].(string)
				if !strings.HasPrefix(tp, "00-"+traceID+"-") {
					t.Errorf("%s of job %s carries traceparent %q, not the group's trace %s", typ, id, tp, traceID)
				}
			}
		}
	}
}

func newTraceID() string { return strings.ReplaceAll(uuid.NewString(), "-", "") }

// TestOneTraceAcrossTheFunctions: on the traced stack, a group created by a traced client,
// and then an incompliance about one of its jobs sent in the same trace, show spans of all
// four services under that one trace id; every job.created, job.progressing and job.finished
// of the group carries it; and each process's /metrics serves its ocmjobs_ families (and
// OTLP metric pushes arrive).
func TestOneTraceAcrossTheFunctions(t *testing.T) {
	s := startTracedStack(t, func(string, string) bool { return true })
	traceID := newTraceID()
	jobs := s.createGroup(t, "traced-"+uuid.NewString()[:8], traceID)

	// An incompliance about the first job, in the same trace: it re-opens the job (scale-out).
	inc := event.New()
	inc.SetID(uuid.NewString())
	inc.SetType(events.PolicyIncompliance)
	inc.SetSource("/tests/integration/trace")
	inc.SetExtension("traceparent", "00-"+traceID+"-"+traceID[16:]+"-01")
	_ = inc.SetData("application/json", []byte(fmt.Sprintf(`{"id":%q,"policyName":"cpu","remediation":"scale-out","currentValue":95,"threshold":80,"subject":{"resourceId":%q}}`,
		uuid.NewString(), jobs[0])))
	if err := s.b.publisher.Publish(context.Background(), inc); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 90*time.Second, "the remediation finished", func() bool {
		return len(s.pub.of(events.JobFinished, jobs[0])) >= 2 && len(s.pub.of(events.JobCreated, jobs[0])) >= 2
	})

	services := []string{"ocm-jobs.jobs", "ocm-jobs.incompliance", "ocm-jobs.executor", "ocm-jobs.statussync"}
	waitUntil(t, 30*time.Second, "spans of all four services under the trace id", func() bool {
		got := s.recv.inTrace(traceID)
		for _, svc := range services {
			if len(got[svc]) == 0 {
				return false
			}
		}
		return true
	})
	got := s.recv.inTrace(traceID)
	for _, svc := range services {
		t.Logf("%s: %d spans in the trace (%s)", svc, len(got[svc]), strings.Join(firstNames(got[svc], 6), ", "))
	}
	s.checkEventsCarry(t, jobs, traceID)

	want := map[string][]string{
		"jobs":         {"ocmjobs_events_handled_total", "ocmjobs_job_transitions_total", "ocmjobs_events_published_total", "ocmjobs_jobs", "ocmjobs_outbox_depth", "ocmjobs_oldest_created_job_age_seconds"},
		"incompliance": {"ocmjobs_incompliances_total", "ocmjobs_events_handled_total", "ocmjobs_job_transitions_total"},
		"executor":     {"ocmjobs_execution_applied_seconds_bucket", "ocmjobs_job_transitions_total", "ocmjobs_events_published_total"},
		"statussync":   {"ocmjobs_statussync_tick_duration_seconds_bucket", "ocmjobs_statussync_works_listed_total", "ocmjobs_statussync_writes_total", "ocmjobs_execution_available_seconds_bucket"},
	}
	for fn, families := range want {
		// The tick's families appear with the first tick that went through.
		var missing []string
		waitUntil(t, 30*time.Second, fn+"'s /metrics", func() bool {
			resp, err := http.Get(s.procs[fn].url + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s /metrics: %d", fn, resp.StatusCode)
			}
			missing = nil
			for _, f := range families {
				if !bytes.Contains(raw, []byte("\n"+f+"{")) && !bytes.Contains(raw, []byte("\n"+f+" ")) {
					missing = append(missing, f)
				}
			}
			return len(missing) == 0
		}, func() {
			logs, _ := os.ReadFile(s.procs[fn].log)
			t.Logf("%s /metrics lacks %v; its log ends:\n%s", fn, missing, tail(string(logs), 30))
		})
	}
	s.recv.mu.Lock()
	pushes := s.recv.metrics
	s.recv.mu.Unlock()
	if pushes == 0 {
		t.Errorf("no OTLP metric push received although OTEL_EXPORTER_OTLP_ENDPOINT is set")
	}
}

// TestTickFinishesInTheGroupsTrace: with no Trigger of job.progressing for status sync, only
// its cron tick — each tick a trace of its own — finishes the jobs, and job.finished is still
// announced in the group's trace: status sync's publish spans are in it.
func TestTickFinishesInTheGroupsTrace(t *testing.T) {
	s := startTracedStack(t, func(subscriber, filterType string) bool {
		return !(subscriber == "ocm-jobs-statussync" && filterType == events.JobProgressing)
	})
	traceID := newTraceID()
	jobs := s.createGroup(t, "ticked-"+uuid.NewString()[:8], traceID)
	s.checkEventsCarry(t, jobs, traceID)
	waitUntil(t, 30*time.Second, "status sync's publish of job.finished in the group's trace", func() bool {
		for _, name := range s.recv.inTrace(traceID)["ocm-jobs.statussync"] {
			if name == "publish "+events.JobFinished {
				return true
			}
		}
		return false
	})
	if got := s.recv.inTrace(traceID)["ocm-jobs.statussync"]; len(got) == 0 {
		t.Error("no status sync span in the group's trace")
	} else {
		t.Logf("status sync's spans in the group's trace: %s", strings.Join(firstNames(got, 6), ", "))
	}
	for _, n := range s.recv.inTrace(traceID)["ocm-jobs.statussync"] {
		if n == "event "+events.JobProgressing {
			t.Errorf("status sync handled job.progressing although no Trigger routes it there")
		}
	}
}

func firstNames(names []string, n int) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range names {
		if !seen[s] && len(out) < n {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// tickEvery sends the cron tick through the broker every interval until the test ends.
func tickEvery(t *testing.T, b *knBroker, interval time.Duration) {
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tk := time.NewTicker(interval)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
				_ = b.tick()
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
}

// waitUntil polls cond until it holds, failing the test after timeout (after explain, if
// given, has said why).
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool, explain ...func()) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			for _, e := range explain {
				e()
			}
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
