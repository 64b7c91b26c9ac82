package eventing

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
)

// trigger applies a Trigger on the suite's broker (delivery as given, YAML under spec) and
// waits until it is Ready.
func trigger(t testing.TB, name, filterType, subscriber, delivery string) {
	t.Helper()
	broker(t)
	triggerOn(t, "default", name, filterType, subscriber, delivery)
}

// triggerOn applies a Trigger on the named broker of the suite's namespace (which exists) and
// waits until it is Ready.
func triggerOn(t testing.TB, brokerName, name, filterType, subscriber, delivery string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	filter := ""
	if filterType != "" {
		filter = "  filter:\n    attributes:\n      type: " + filterType + "\n"
	}
	err := env.Knative.Apply(ctx, `
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: `+name+`
  namespace: `+ns+`
spec:
  broker: `+brokerName+`
`+filter+`  subscriber:
    uri: `+subscriber+`
`+delivery)
	if err == nil {
		err = waitReady(ctx, triggers, name)
	}
	if err != nil {
		t.Fatal(err)
	}
	// A Trigger whose subscriber is gone would fail every later publish: the in-memory
	// channel answers the ingress only once every Trigger's delivery is done.
	t.Cleanup(func() { deleteTrigger(t, name) })
}

var (
	subscriptions = schema.GroupVersionResource{Group: "messaging.knative.dev", Version: "v1", Resource: "subscriptions"}
	channels      = schema.GroupVersionResource{Group: "messaging.knative.dev", Version: "v1", Resource: "inmemorychannels"}
)

// deleteTrigger deletes a Trigger and waits until the channel's dispatcher no longer
// delivers to it (its subscription left the channel's status), so that a later test's
// publish does not fail on a subscriber that is gone.
func deleteTrigger(t testing.TB, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dc, err := dynamic.NewForConfig(env.Hub.Config)
	if err != nil {
		t.Error(err)
		return
	}
	subs, err := dc.Resource(subscriptions).Namespace(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Error(err)
		return
	}
	gone := map[string]bool{}
	for _, sub := range subs.Items {
		for _, o := range sub.GetOwnerReferences() {
			if o.Kind == "Trigger" && o.Name == name {
				gone[string(sub.GetUID())] = true
			}
		}
	}
	deleteObject(t, triggers, name)
	for {
		still := false
		imcs, err := dc.Resource(channels).Namespace(ns).List(ctx, metav1.ListOptions{})
		if err == nil {
			for _, imc := range imcs.Items {
				list, _, _ := unstructured.NestedSlice(imc.Object, "status", "subscribers")
				for _, e := range list {
					if m, ok := e.(map[string]any); ok && gone[fmt.Sprint(m["uid"])] {
						still = true
					}
				}
			}
		}
		if err == nil && !still {
			return
		}
		select {
		case <-ctx.Done():
			t.Errorf("Trigger %s still subscribed after its delete", name)
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// deleteObject deletes a namespaced object of the suite.
func deleteObject(t testing.TB, gvr schema.GroupVersionResource, name string) {
	dc, err := dynamic.NewForConfig(env.Hub.Config)
	if err == nil {
		err = dc.Resource(gvr).Namespace(ns).Delete(context.Background(), name, metav1.DeleteOptions{})
	}
	if err != nil {
		t.Errorf("deleting %s %s: %v", gvr.Resource, name, err)
	}
}

// warmUp sends events of type typ until r gets one. A Trigger is Ready once its subscription
// is in the channel's status, which may be a moment before the channel's dispatcher fans out
// to it; an event published in between reaches the Triggers the dispatcher knew.
func warmUp(t testing.TB, r *receiver, typ string) {
	t.Helper()
	for i := 0; count(r.deliveries(), func(d delivery) bool { return strings.HasPrefix(d.ID, "warmup-") }) == 0; i++ {
		if i == 60 {
			t.Fatalf("no warm-up event of type %s reached its Trigger's subscriber\nKnative's pods:\n%s", typ, env.Knative.PodLogs(1500))
		}
		send(t, "warmup-"+typ+"-"+strconv.Itoa(i), typ, `{}`)
		time.Sleep(500 * time.Millisecond)
	}
}

// A Trigger's filter passes only its type: the filtered subscriber gets the matching event
// and never the other one, which an unfiltered Trigger on the same broker does get.
func TestTriggerFilterExcludesAnEvent(t *testing.T) {
	filtered := newReceiver(t, "filtered", nil)
	all := newReceiver(t, "all", nil)
	trigger(t, "filter-only-wanted", "eu.icos.test.wanted.v1", filtered.URL, "")
	trigger(t, "filter-all", "", all.URL, "")

	warmUp(t, all, "eu.icos.test.warmup.v1")
	send(t, "filter-unwanted", "eu.icos.test.unwanted.v1", `{}`)
	send(t, "filter-wanted", "eu.icos.test.wanted.v1", `{}`)

	all.waitFor(t, 30*time.Second, "the unfiltered trigger gets both events", func(ds []delivery) bool {
		return count(ds, func(d delivery) bool { return d.ID == "filter-unwanted" }) > 0 &&
			count(ds, func(d delivery) bool { return d.ID == "filter-wanted" }) > 0
	})
	got := filtered.waitFor(t, 30*time.Second, "the filtered trigger gets its event", func(ds []delivery) bool {
		return count(ds, func(d delivery) bool { return d.ID == "filter-wanted" }) > 0
	})
	if n := count(got, func(d delivery) bool { return d.ID == "filter-unwanted" }); n != 0 {
		t.Fatalf("the filter let eu.icos.test.unwanted.v1 through %d times: %+v", n, got)
	}
}

// A subscriber that answers 503 once gets the same event again and accepts it.
func TestRetryAfter5xx(t *testing.T) {
	flaky := newReceiver(t, "flaky", func(d delivery, attempt int) int {
		if attempt == 1 {
			return http.StatusServiceUnavailable
		}
		return http.StatusAccepted
	})
	trigger(t, "retry-503", "eu.icos.test.retry.v1", flaky.URL,
		"  delivery:\n    retry: 3\n    backoffPolicy: linear\n    backoffDelay: PT0.2S\n")
	warmUp(t, flaky, "eu.icos.test.retry.v1")

	send(t, "retry-1", "eu.icos.test.retry.v1", `{"n":1}`)
	got := flaky.waitFor(t, 30*time.Second, "the event delivered again after the 503", func(ds []delivery) bool {
		return count(ds, func(d delivery) bool { return d.ID == "retry-1" }) >= 2
	})
	if n := count(got, func(d delivery) bool { return d.ID == "retry-1" }); n != 2 {
		t.Fatalf("want exactly 2 deliveries (503, then 202), got %d", n)
	}
	for _, d := range got {
		if d.ID == "retry-1" && d.Body != `{"n":1}` {
			t.Fatalf("the retried delivery changed the data: %q", d.Body)
		}
	}
}

// A subscriber that keeps answering 500 gets the event 1 + retry times; then the event goes
// to the dead-letter sink, marked by Knative with the error code and the failed destination.
func TestDeadLetterAfterRetries(t *testing.T) {
	failing := newReceiver(t, "failing", func(delivery, int) int { return http.StatusInternalServerError })
	dead := newReceiver(t, "deadletter", nil)
	trigger(t, "deadletter-500", "eu.icos.test.fail.v1", failing.URL,
		"  delivery:\n    retry: 2\n    backoffPolicy: linear\n    backoffDelay: PT0.1S\n    deadLetterSink:\n      uri: "+dead.URL+"\n")
	warmUp(t, failing, "eu.icos.test.fail.v1")

	send(t, "fail-1", "eu.icos.test.fail.v1", `{}`)
	got := dead.waitFor(t, 30*time.Second, "the event in the dead-letter sink", func(ds []delivery) bool {
		return count(ds, func(d delivery) bool { return d.ID == "fail-1" }) > 0
	})
	if n := count(failing.deliveries(), func(d delivery) bool { return d.ID == "fail-1" }); n != 3 {
		t.Fatalf("want 3 attempts (1 + 2 retries) before the dead letter, got %d", n)
	}
	var d delivery
	for _, g := range got {
		if g.ID == "fail-1" {
			d = g
		}
	}
	if code := d.Headers.Get("Ce-Knativeerrorcode"); code != "500" {
		t.Fatalf("dead letter's knativeerrorcode = %q, want 500 (headers %v)", code, d.Headers)
	}
	if dest := d.Headers.Get("Ce-Knativeerrordest"); dest != failing.URL && dest != failing.URL+"/" {
		t.Fatalf("dead letter's knativeerrordest = %q, want the failing subscriber", dest)
	}
}

// The PingSource adapter (mtping) sends its ticks through the broker.
func TestPingSourceTicks(t *testing.T) {
	ticks := newReceiver(t, "ticks", nil)
	trigger(t, "ping-ticks", "dev.knative.sources.ping", ticks.URL, "")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := env.Knative.Apply(ctx, `
apiVersion: sources.knative.dev/v1
kind: PingSource
metadata:
  name: every-2s
  namespace: `+ns+`
spec:
  schedule: "*/2 * * * * *"
  contentType: application/json
  data: '{"tick":"ocm-jobs"}'
  sink:
    ref:
      apiVersion: eventing.knative.dev/v1
      kind: Broker
      name: default
`)
	if err == nil {
		err = waitReady(ctx, pings, "every-2s")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteObject(t, pings, "every-2s") })
	got := ticks.waitFor(t, time.Minute, "two ticks", func(ds []delivery) bool { return len(ds) >= 2 })
	if !strings.HasSuffix(got[0].Source, "/pingsources/every-2s") || got[0].Body != `{"tick":"ocm-jobs"}` {
		t.Fatalf("tick: source %q body %q", got[0].Source, got[0].Body)
	}
}

// An ApiServerSource on ConfigMaps labelled for it sends an event through the broker when one
// is created.
func TestApiServerSourceEvent(t *testing.T) {
	changes := newReceiver(t, "changes", nil)
	trigger(t, "apiserver-changes", "dev.knative.apiserver.ref.add", changes.URL, "")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The source's account may read what it watches (its controller checks, as RBAC says).
	err := env.Knative.Apply(ctx, `
apiVersion: v1
kind: ServiceAccount
metadata:
  name: watcher
  namespace: `+ns+`
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: watcher
  namespace: `+ns+`
rules:
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: watcher
  namespace: `+ns+`
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: watcher
subjects:
- kind: ServiceAccount
  name: watcher
  namespace: `+ns+`
---
apiVersion: sources.knative.dev/v1
kind: ApiServerSource
metadata:
  name: configmaps
  namespace: `+ns+`
spec:
  mode: Reference
  serviceAccountName: watcher
  resources:
  - apiVersion: v1
    kind: ConfigMap
    selector:
      matchLabels:
        ocm-jobs.test/watched: "true"
  sink:
    ref:
      apiVersion: eventing.knative.dev/v1
      kind: Broker
      name: default
`)
	if err == nil {
		err = waitReady(ctx, apiSources, "configmaps")
	}
	if err != nil {
		t.Fatal(err)
	}
	// Not watched: no label.
	_, err = env.Hub.Kube.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "unwatched"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The adapter's watch may start just after the source is Ready: create until one arrives.
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; ; i++ {
		name := "watched-" + strconv.Itoa(i)
		created := time.Now()
		_, err = env.Hub.Kube.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
			Name: name, Labels: map[string]string{"ocm-jobs.test/watched": "true"}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ok := false
		for end := time.Now().Add(3 * time.Second); time.Now().Before(end) && !ok; time.Sleep(20 * time.Millisecond) {
			for _, d := range changes.deliveries() {
				if strings.Contains(d.Body, `"name":"`+name+`"`) {
					ok = true
					t.Logf("ApiServerSource event for %s at the subscriber %s after the create", name, d.At.Sub(created).Round(time.Millisecond))
				}
			}
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ApiServerSource event; got %+v", changes.deliveries())
		}
	}
	for _, d := range changes.deliveries() {
		if strings.Contains(d.Body, `"name":"unwatched"`) {
			t.Fatalf("the source announced a ConfigMap without its label: %s", d.Body)
		}
	}
}
