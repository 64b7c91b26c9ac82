// Package eventing proves, with Knative Eventing's own code (v0.46.0, built by `make tools`
// and run as processes against a real kube-apiserver by tests/servers), how a Broker and its
// Triggers deliver the events ocm-jobs relies on: a Trigger's filter excludes an event, a 5xx
// is retried, a delivery that keeps failing ends in the dead-letter sink, the PingSource ticks
// and an ApiServerSource announces a change of the objects it watches — and that status sync,
// driven by an ApiServerSource on ManifestWorks, degrades a job whose work is deleted within
// 2 s. One stack (with Redis and cluster1's real work agent) serves the whole binary.
package eventing

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ocm-jobs/ocm-jobs/tests/servers"
)

// ns is the namespace of the suite's broker, triggers and sources.
const ns = "eventing-test"

var env *servers.Env

func TestMain(m *testing.M) {
	servers.Main(m, servers.Need{Eventing: true, Brokers: []string{ns + "/default", ns + "/" + worksBroker}, Redis: true, Clusters: 1}, &env)
}

var (
	brokers    = schema.GroupVersionResource{Group: "eventing.knative.dev", Version: "v1", Resource: "brokers"}
	triggers   = schema.GroupVersionResource{Group: "eventing.knative.dev", Version: "v1", Resource: "triggers"}
	pings      = schema.GroupVersionResource{Group: "sources.knative.dev", Version: "v1", Resource: "pingsources"}
	apiSources = schema.GroupVersionResource{Group: "sources.knative.dev", Version: "v1", Resource: "apiserversources"}
)

var (
	brokerOnce sync.Once
	brokerErr  error
)

// broker creates the suite's Broker (once) as the webhook would leave it (class and channel
// config set) and waits until Knative reports it Ready.
func broker(t testing.TB) {
	t.Helper()
	brokerOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if brokerErr = env.Hub.EnsureNamespace(ctx, ns); brokerErr != nil {
			return
		}
		brokerErr = applyBroker(ctx, "default", "")
	})
	if brokerErr != nil {
		t.Fatalf("broker: %v", brokerErr)
	}
}

// waitReady waits until the object's Ready condition is True.
func waitReady(ctx context.Context, gvr schema.GroupVersionResource, name string) error {
	dc, err := dynamic.NewForConfig(env.Hub.Config)
	if err != nil {
		return err
	}
	last := "not found"
	for {
		u, err := dc.Resource(gvr).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			last = conditions(u)
			if strings.Contains(last, "Ready=True") {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s %s not Ready: %s\nKnative's pods:\n%s", gvr.Resource, name, last, env.Knative.PodLogs(800))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// conditions renders an object's status conditions (type=status reason: message).
func conditions(u *unstructured.Unstructured) string {
	cs, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	var out []string
	for _, c := range cs {
		m, _ := c.(map[string]any)
		out = append(out, fmt.Sprintf("%v=%v %v: %v", m["type"], m["status"], m["reason"], m["message"]))
	}
	return strings.Join(out, "; ")
}

// delivery is one request a receiver got.
type delivery struct {
	ID, Type, Source string
	Headers          http.Header
	Body             string
	At               time.Time
}

// receiver is an HTTP subscriber on this machine, named for Knative's components; it answers
// each request with the status answer returns (202 when nil).
type receiver struct {
	URL    string
	answer func(d delivery, attempt int) int

	mu   sync.Mutex
	got  []delivery
	seen map[string]int
	note chan struct{}
	srv  *http.Server
}

func newReceiver(t testing.TB, name string, answer func(d delivery, attempt int) int) *receiver {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &receiver{answer: answer, seen: map[string]int{}, note: make(chan struct{}, 1000)}
	r.srv = &http.Server{Handler: r, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = r.srv.Serve(l) }()
	t.Cleanup(func() { _ = r.srv.Close() })
	if r.URL, err = env.Knative.Expose(name+".receivers.test", l.Addr().String()); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	d := delivery{ID: req.Header.Get("Ce-Id"), Type: req.Header.Get("Ce-Type"), Source: req.Header.Get("Ce-Source"),
		Headers: req.Header.Clone(), Body: string(body), At: time.Now()}
	r.mu.Lock()
	r.seen[d.ID]++
	attempt := r.seen[d.ID]
	r.got = append(r.got, d)
	r.mu.Unlock()
	status := http.StatusAccepted
	if r.answer != nil {
		status = r.answer(d, attempt)
	}
	w.WriteHeader(status)
	select {
	case r.note <- struct{}{}:
	default:
	}
}

// deliveries returns what the receiver got so far.
func (r *receiver) deliveries() []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]delivery(nil), r.got...)
}

// waitFor waits until cond holds over the deliveries, or fails the test after timeout.
func (r *receiver) waitFor(t testing.TB, timeout time.Duration, what string, cond func([]delivery) bool) []delivery {
	t.Helper()
	deadline := time.After(timeout)
	for {
		got := r.deliveries()
		if cond(got) {
			return got
		}
		select {
		case <-r.note:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("%s: not within %s; got %d deliveries: %+v\nKnative's pods:\n%s", what, timeout, len(got), got, env.Knative.PodLogs(1500))
		}
	}
}

func count(ds []delivery, f func(delivery) bool) int {
	n := 0
	for _, d := range ds {
		if f(d) {
			n++
		}
	}
	return n
}

// send posts a binary-mode CloudEvent to the suite's broker ingress and wants 202; it retries
// while the ingress is not yet routing (a name just added resolves within Go's hosts cache).
func send(t testing.TB, id, typ, data string) {
	t.Helper()
	url := env.Knative.BrokerURL(ns, "default")
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(data))
		req.Header.Set("Ce-Specversion", "1.0")
		req.Header.Set("Ce-Id", id)
		req.Header.Set("Ce-Type", typ)
		req.Header.Set("Ce-Source", "/ocm-jobs/tests/eventing")
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		status := 0
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			status = resp.StatusCode
			if status == http.StatusAccepted {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("sending %s to %s: status %d, %v\nKnative's pods:\n%s", id, url, status, err, env.Knative.PodLogs(1500))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// tailOf is the end (up to n bytes) of a log file.
func tailOf(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// applyBroker creates the in-memory-channel Broker name in the suite's namespace with the
// extra annotations given (YAML lines under annotations, each ending in a newline) and waits
// until it is Ready. The objects carry what Knative's webhook (not run here) would default.
func applyBroker(ctx context.Context, name, annotations string) error {
	err := env.Knative.Apply(ctx, `
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: `+name+`
  namespace: `+ns+`
  annotations:
    eventing.knative.dev/broker.class: MTChannelBasedBroker
`+annotations+`spec:
  config:
    apiVersion: v1
    kind: ConfigMap
    name: config-br-default-channel
    namespace: knative-eventing
`)
	if err != nil {
		return err
	}
	return waitReady(ctx, brokers, name)
}
