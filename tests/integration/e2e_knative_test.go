package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/ocm-jobs/ocm-jobs/shared/config"
	"github.com/ocm-jobs/ocm-jobs/shared/events"
	"github.com/ocm-jobs/ocm-jobs/tests/servers"
)

// The end-to-end tests' events go through the real Knative Eventing (v0.46.0, OIDC sender
// identity on, as `make run`): each test takes a Broker of its own from a pool declared when
// the suite's stack starts (so its channel's name resolves), on which the Triggers of
// k8s/base are applied with the test's functions as subscriber.

// knNamespace is the namespace of k8s/base's eventing, and of the suite's brokers.
const knNamespace = "ocm-jobs"

// functionsAccount is the service account whose token the functions present to the broker
// (the SinkBinding's, in a cluster).
const functionsAccount = "ocm-jobs-functions"

// e2eBrokers is the pool of broker names, one per end-to-end test.
var e2eBrokers = func() []string {
	var out []string
	for i := 0; i < 24; i++ {
		out = append(out, fmt.Sprintf("e2e-%02d", i))
	}
	return out
}()

// suiteBrokers is the pool as servers.Need names it.
func suiteBrokers() []string {
	var out []string
	for _, b := range e2eBrokers {
		out = append(out, knNamespace+"/"+b)
	}
	return out
}

var nextBroker atomic.Int32

// functionAudiences are the OIDC audiences of k8s/base's Triggers' subscribers (the filter
// presents a token for one of them): the one process of the e2e tests accepts them all.
func functionAudiences() string {
	var out []string
	for _, fn := range config.Functions {
		out = append(out, "ocm-jobs-"+fn)
	}
	return strings.Join(out, ",")
}

var (
	knTriggers = schema.GroupVersionResource{Group: "eventing.knative.dev", Version: "v1", Resource: "triggers"}
	knBrokers  = schema.GroupVersionResource{Group: "eventing.knative.dev", Version: "v1", Resource: "brokers"}
)

// knBroker is a test's own Broker on the real Knative Eventing.
type knBroker struct {
	name      string
	url       string                // the ingress, as this machine reaches it
	tokenFile string                // the functions' token for the ingress (SINK_TOKEN_FILE)
	publisher *events.SinkPublisher // to the ingress, with the functions' token
	ingress   *ingress              // the recording pass-through, when the functions publish through one
}

// takeBroker takes the next broker of the pool and writes the functions' token for its
// ingress: the broker's audience is known before it exists, so the functions start first.
func takeBroker(t *testing.T) *knBroker {
	t.Helper()
	i := int(nextBroker.Add(1)) - 1
	if i >= len(e2eBrokers) {
		t.Fatalf("the suite's pool of %d brokers is used up: add names to e2eBrokers", len(e2eBrokers))
	}
	b := &knBroker{name: e2eBrokers[i], url: env.Knative.BrokerURL(knNamespace, e2eBrokers[i])}
	ctx := context.Background()
	if _, err := env.Hub.SenderIdentity(ctx, knNamespace, functionsAccount); err != nil {
		t.Fatal(err)
	}
	tok, err := env.Hub.Token(ctx, knNamespace, functionsAccount, "eventing.knative.dev/broker/"+knNamespace+"/"+b.name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b.tokenFile = filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(b.tokenFile, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	if b.publisher, err = events.NewSinkPublisher(b.url, 5, 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	b.publisher.TokenFile = b.tokenFile
	return b
}

// route says where a Trigger of k8s/base delivers (its subscriber ref's name, e.g.
// ocm-jobs-jobs, and its filter's type): the URL by which Knative reaches the function, or
// false to leave the Trigger out.
type route func(subscriber, filterType string) (string, bool)

// expose gives a server of this machine (host:port of rawURL) an address Knative's
// components reach, and returns it.
func expose(t *testing.T, name, rawURL string) string {
	t.Helper()
	u, err := env.Knative.Expose(name+".functions.test", hostPort(rawURL))
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// run creates the broker and k8s/base's Triggers on it, delivering as route says, waits
// until they are Ready and the channel delivers, and deletes them when the test ends.
func (b *knBroker) run(t *testing.T, to route) {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dead := &receiver{}
	deadURL := dead.serve(t, b.name+"-deadletter.functions.test")
	manifest, names, err := brokerManifest(b.name, to, deadURL)
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Knative.Apply(ctx, manifest); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.remove(names) })
	if err := waitKnReady(ctx, knBrokers, []string{b.name}); err != nil {
		t.Fatal(err)
	}
	if err := waitKnReady(ctx, knTriggers, names); err != nil {
		t.Fatal(err)
	}
	if err := env.Knative.AliasBrokerChannel(ctx, knNamespace, b.name); err != nil {
		t.Fatal(err)
	}
	// A Trigger is Ready once its subscription is in the channel's status, which may be a
	// moment before the dispatcher fans out to it: a last Trigger, to a warm-up receiver,
	// proves the dispatcher has the others too.
	warm := &receiver{}
	warmURL := warm.serve(t, b.name+"-warmup.functions.test")
	warmName := b.name + "-warmup"
	if err := env.Knative.Apply(ctx, fmt.Sprintf(`apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: %s, namespace: %s}
spec:
  broker: %s
  filter: {attributes: {type: eu.icos.test.warmup.v1}}
  subscriber: {uri: %q}
`, warmName, knNamespace, b.name, warmURL)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.remove([]string{warmName}) })
	if err := waitKnReady(ctx, knTriggers, []string{warmName}); err != nil {
		t.Fatal(err)
	}
	for i := 0; warm.count() == 0; i++ {
		if i == 120 {
			t.Fatalf("no warm-up event reached broker %s's Triggers\nKnative's pods:\n%s", b.name, env.Knative.PodLogs(1500))
		}
		e := event.New()
		e.SetID(fmt.Sprintf("warmup-%s-%d", b.name, i))
		e.SetType("eu.icos.test.warmup.v1")
		e.SetSource("/ocm-jobs/tests/integration")
		_ = b.publisher.Publish(ctx, e)
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("broker %s: Broker and %d Triggers Ready and delivering in %s", b.name, len(names), time.Since(start).Round(10*time.Millisecond))
	// Registered last, so run first when the test ends (after what the test itself registered,
	// its ticks): nothing is taken down while events are on their way.
	t.Cleanup(func() { b.settle(t) })
}

// remove deletes the broker's Triggers (the broker stays: a later test takes another).
func (b *knBroker) remove(names []string) {
	dc, err := dynamic.NewForConfig(env.Hub.Config)
	if err != nil {
		return
	}
	for _, n := range names {
		_ = dc.Resource(knTriggers).Namespace(knNamespace).Delete(context.Background(), n, metav1.DeleteOptions{})
	}
}

// tick sends the cron tick to the broker, as k8s/base's PingSource does; the broker answers
// once every Trigger's delivery is done.
func (b *knBroker) tick() error {
	e := event.New()
	e.SetID(uuid.NewString())
	e.SetType("dev.knative.sources.ping")
	e.SetSource("/apis/v1/namespaces/" + knNamespace + "/pingsources/ocm-jobs-cron")
	_ = e.SetData("application/json", []byte(`{"tick":"ocm-jobs"}`))
	return b.publisher.Publish(context.Background(), e)
}

// brokerManifest is k8s/base's ocm-jobs Broker and its Triggers, renamed for broker name:
// each Trigger's subscriber is where to routes it (with its audience kept), every dead-letter sink
// deadURL, and the Broker carries what Knative's webhook (not run here) would default. It
// returns the manifest and the Triggers' names. The Triggers of the ocm-jobs-work-events
// broker are left out: only the ApiServerSource (not run here) publishes to it.
func brokerManifest(name string, to route, deadURL string) (string, []string, error) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "k8s", "base", "eventing.yaml"))
	if err != nil {
		return "", nil, err
	}
	var docs []string
	var names []string
	for _, doc := range strings.Split(string(raw), "\n---") {
		var o map[string]any
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			return "", nil, fmt.Errorf("k8s/base/eventing.yaml: %w", err)
		}
		u := unstructured.Unstructured{Object: o}
		spec, _ := o["spec"].(map[string]any)
		if spec == nil {
			continue
		}
		switch {
		case u.GetKind() == "Broker" && u.GetName() == "ocm-jobs":
			u.SetAnnotations(map[string]string{"eventing.knative.dev/broker.class": "MTChannelBasedBroker"})
			spec["config"] = map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "name": "config-br-default-channel", "namespace": servers.KnativeNamespace}
		case u.GetKind() == "Trigger" && spec["broker"] == "ocm-jobs":
			sub, _ := spec["subscriber"].(map[string]any)
			ref, _ := sub["ref"].(map[string]any)
			typ, _, _ := unstructured.NestedString(spec, "filter", "attributes", "type")
			fnURL, ok := to(fmt.Sprint(ref["name"]), typ)
			if !ok {
				continue
			}
			spec["subscriber"] = map[string]any{"uri": fnURL, "audience": sub["audience"]}
			spec["broker"] = name
			u.SetName(name + "-" + strings.TrimPrefix(u.GetName(), "ocm-jobs-"))
			names = append(names, u.GetName())
		default:
			continue
		}
		if d, ok := spec["delivery"].(map[string]any); ok {
			d["deadLetterSink"] = map[string]any{"uri": deadURL}
		}
		if u.GetKind() == "Broker" {
			u.SetName(name)
		}
		u.SetNamespace(knNamespace)
		out, err := yaml.Marshal(u.Object)
		if err != nil {
			return "", nil, err
		}
		docs = append(docs, string(out))
	}
	if len(names) == 0 {
		return "", nil, fmt.Errorf("k8s/base/eventing.yaml: no Trigger on the ocm-jobs broker")
	}
	return strings.Join(docs, "---\n"), names, nil
}

// waitKnReady waits until each named object is Ready, touching a Trigger that stays not Ready
// once its Broker is (one reconciled before its Broker had an address is queued again only
// hours later).
func waitKnReady(ctx context.Context, gvr schema.GroupVersionResource, names []string) error {
	dc, err := dynamic.NewForConfig(env.Hub.Config)
	if err != nil {
		return err
	}
	var nudged time.Time
	for {
		var waiting []string
		for _, n := range names {
			u, err := dc.Resource(gvr).Namespace(knNamespace).Get(ctx, n, metav1.GetOptions{})
			if err != nil {
				waiting = append(waiting, n+": "+err.Error())
				continue
			}
			if status, why := servers.ReadyCondition(u); status != "True" {
				waiting = append(waiting, n+": "+why)
			}
		}
		if len(waiting) == 0 {
			return nil
		}
		if gvr == knTriggers && time.Since(nudged) > 3*time.Second {
			if !nudged.IsZero() {
				patch := []byte(fmt.Sprintf(`{"metadata":{"annotations":{"ocm-jobs.icos.eu/reconcile":%q}}}`, time.Now().Format(time.RFC3339Nano)))
				for _, w := range waiting {
					n, _, _ := strings.Cut(w, ":")
					_, _ = dc.Resource(gvr).Namespace(knNamespace).Patch(ctx, n, types.MergePatchType, patch, metav1.PatchOptions{})
				}
			}
			nudged = time.Now()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not Ready: %s\nKnative's pods:\n%s", gvr.Resource, strings.Join(waiting, "; "), env.Knative.PodLogs(1500))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// receiver counts the requests Knative delivers to it (a dead-letter sink, the warm-up
// Trigger's subscriber) and answers 202.
type receiver struct {
	mu sync.Mutex
	n  int
}

// serve serves the receiver on loopback and returns its URL as Knative's components reach it.
func (r *receiver) serve(t *testing.T, name string) string {
	t.Helper()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, _ = io.Copy(io.Discard, req.Body)
		r.mu.Lock()
		r.n++
		r.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}), ReadHeaderTimeout: 10 * time.Second}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	u, err := env.Knative.Expose(name, l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func (r *receiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

// ingress is the recording pass-through in front of a test's broker (the functions' K_SINK):
// it hands each request to record, posts it on to the broker's ingress and copies the answer
// back. It counts the publishes on their way, for settle.
type ingress struct {
	srv    *httptest.Server
	cancel context.CancelFunc

	mu       sync.Mutex
	inFlight int
	last     time.Time // when the last publish ended
}

// recordingIngress starts the broker's pass-through and returns its URL.
func (b *knBroker) recordingIngress(t *testing.T, record func(r *http.Request, raw []byte)) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	in := &ingress{cancel: cancel, last: time.Now()}
	in.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		in.mu.Lock()
		in.inFlight++
		in.mu.Unlock()
		defer func() {
			in.mu.Lock()
			in.inFlight--
			in.last = time.Now()
			in.mu.Unlock()
		}()
		raw, _ := io.ReadAll(r.Body)
		record(r, raw)
		forward(w, r, raw, b.url)
	}))
	// Every request's context ends with ctx: once the test settled, a late publish is turned
	// away (it stays in its outbox) instead of holding the server's Close.
	in.srv.Config.BaseContext = func(net.Listener) context.Context { return ctx }
	in.srv.Start()
	t.Cleanup(func() { cancel(); in.srv.Close() })
	b.ingress = in
	return in.srv.URL
}

// settle waits, when the test ends, until nothing the functions published is on its way
// (no publish in flight through the ingress for a second), before the teardown deletes the
// broker's Triggers and stops the functions; later publishes are then turned away.
//
// Why (the hang of TestOakestraImport in a whole-suite run): the teardown deleted the
// Triggers while a tick's delivery was still running the outbox drain, which publishes from
// inside the delivery. The drain's publish went through this ingress to the broker, whose
// in-memory channel is synchronous (as k8s/base's ocm-jobs broker: its answer means
// delivered, which the outbox relies on) and fans out to every Subscription it still had;
// the filter answered 404 ("Unable to find the Trigger") for the deleted ones, and Knative
// retries a 404 with the Trigger's own backoff — job.created eight times from 1 s, 8.5 min,
// each publish after the first meeting the same. The channel held the ingress's answer, the
// pass-through (no deadline) held the drain, the drain held the tick's delivery, and the
// functions' server waited in Close for that delivery. A deadline on the pass-through (or the
// publisher's AttemptTimeout) would only cut each wait at its bound and leave the cause in
// place; an asynchronous channel for these brokers would test another broker than the one
// k8s/base declares; and the drain inside the tick's delivery is what makes a tick's answer
// mean "the outbox was published", in a cluster too. What was wrong is the order: parts of
// the path were taken down while events were on it.
func (b *knBroker) settle(t *testing.T) {
	in := b.ingress
	if in == nil {
		return
	}
	defer in.cancel()
	const quiet, bound = time.Second, 2 * time.Minute
	start := time.Now()
	deadline := start.Add(bound)
	for {
		in.mu.Lock()
		n, idle := in.inFlight, time.Since(in.last)
		in.mu.Unlock()
		if n == 0 && idle >= quiet {
			t.Logf("broker %s: nothing on its way after %s", b.name, time.Since(start).Round(10*time.Millisecond))
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("broker %s: %d publishes still on their way %s after the test ended\nKnative's pods:\n%s", b.name, n, bound, env.Knative.PodLogs(1500))
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// forward posts the request's body and headers to target and copies the answer back.
func forward(w http.ResponseWriter, r *http.Request, body []byte, target string) {
	req, err := http.NewRequestWithContext(r.Context(), r.Method, target, bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	req.Header = r.Header.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

// hostPort is the host:port of a URL.
func hostPort(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	return u.Host
}

// TestE2ETeardownLeavesNoEventOnTheWay: a test that ends while its jobs' events are still on
// their way through its broker (a group just created, the tick running) is torn down only
// once they arrived, so no delivery meets a Trigger the teardown already deleted (no 404 of
// the filter for its Triggers). The broker's
// channel is synchronous, as k8s/base's ocm-jobs broker: a delivery to a deleted Trigger gets
// the filter's 404, which Knative retries with the Trigger's own backoff (eight times from
// 1 s for job.created, 8.5 min), and the publish that waits for it held the teardown.
func TestE2ETeardownLeavesNoEventOnTheWay(t *testing.T) {
	var broker string
	t.Run("ends with events on the way", func(t *testing.T) {
		s := startE2E(t, nil)
		broker = s.broker.name
		s.ticking(t, 200*time.Millisecond)
		// The functions publish what an event's handling changed after their answer: the
		// groups' jobs are on their way when the test ends.
		for i := 1; i <= 3; i++ {
			name := fmt.Sprintf("teardown%d", i)
			if r := s.event(t, events.JobGroupCreate, name, "application/yaml", []byte(workloadApp(name))); r.status != http.StatusOK {
				t.Fatalf("create event: %d %s", r.status, r.body)
			}
		}
	})
	if lines := deletedTriggerDeliveries(broker); len(lines) > 0 {
		t.Errorf("%d deliveries on broker %s met a deleted Trigger (the filter's 404):\n%s", len(lines), broker, strings.Join(lines, "\n"))
	}
}

// deletedTriggerDeliveries are the broker filter's log lines of deliveries to a Trigger of
// broker that no longer existed.
func deletedTriggerDeliveries(broker string) []string {
	logs, _ := filepath.Glob(filepath.Join(env.Knative.Dir, "pods", "*mt-broker-filter*.log"))
	var out []string
	for _, l := range logs {
		raw, err := os.ReadFile(l)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(raw), "\n") {
			if strings.Contains(line, "Unable to find the Trigger") && strings.Contains(line, `"triggerRef":"`+knNamespace+"/"+broker+"-") {
				out = append(out, line)
			}
		}
	}
	return out
}
