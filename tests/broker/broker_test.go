package broker_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/go-cmp/cmp"

	function "github.com/ocm-jobs/ocm-jobs"
	"github.com/ocm-jobs/ocm-jobs/shared/events"
	"github.com/ocm-jobs/ocm-jobs/tests/broker"
)

func loadRepoTriggers(t *testing.T) ([]broker.Trigger, []broker.PingSource) {
	t.Helper()
	triggers, pings, err := broker.Load(filepath.Join("..", "..", "k8s", "base"))
	if err != nil {
		t.Fatal(err)
	}
	return triggers, pings
}

// TestTriggersMatchSubscriptions proves k8s/base routes every event type each function
// subscribes to (function.Subscriptions) to that function, and nothing else: a missing or
// misfiltered Trigger fails here.
func TestTriggersMatchSubscriptions(t *testing.T) {
	triggers, pings := loadRepoTriggers(t)
	if len(pings) != 1 {
		t.Fatalf("want one PingSource in k8s/base, got %d", len(pings))
	}
	types := map[string]bool{}
	for _, ts := range function.Subscriptions() {
		for _, typ := range ts {
			types[typ] = true
		}
	}
	got := map[string][]string{}
	for typ := range types {
		e := event.New()
		e.SetType(typ)
		e.SetID("x")
		e.SetSource("/ocm-jobs/hubs/test/jobs")
		if typ == events.Ping {
			e.SetSource(pings[0].Source())
		}
		for _, tr := range triggers {
			if tr.Matches(broker.Attributes(e)) {
				got[typ] = append(got[typ], tr.Subscriber)
			}
		}
	}
	want := map[string][]string{}
	for fn, types := range function.Subscriptions() {
		for _, typ := range types {
			want[typ] = append(want[typ], "ocm-jobs-"+fn)
		}
	}
	for _, m := range []map[string][]string{got, want} {
		for k := range m {
			sort.Strings(m[k])
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Triggers in k8s/base route (-want +got):\n%s", diff)
	}
	// A ping from another PingSource must not reach the sweep.
	other := event.New()
	other.SetType(events.Ping)
	other.SetSource("/apis/v1/namespaces/default/pingsources/someone-else")
	for _, tr := range triggers {
		if tr.Matches(broker.Attributes(other)) {
			t.Errorf("Trigger %s takes pings of another PingSource", tr.Name)
		}
	}
	for _, tr := range triggers {
		if tr.Delivery.DeadLetter == "" || tr.Delivery.Retry == 0 {
			t.Errorf("Trigger %s has no retry or dead-letter sink: %+v", tr.Name, tr.Delivery)
		}
	}
}

// subscriber is a test function that answers with the statuses it is given, in turn.
type subscriber struct {
	mu       sync.Mutex
	statuses []int
	got      []string
	reply    bool
}

func (s *subscriber) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, r.Header.Get("Ce-Type"))
	status := http.StatusOK
	if len(s.statuses) > 0 {
		status, s.statuses = s.statuses[0], s.statuses[1:]
	}
	if s.reply && status == http.StatusOK {
		w.Header().Set("Ce-Specversion", "1.0")
		w.Header().Set("Ce-Id", "reply-1")
		w.Header().Set("Ce-Source", "/test")
		w.Header().Set("Ce-Type", "test.reply")
	}
	w.WriteHeader(status)
}

func (s *subscriber) received() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.got...)
}

func TestDeliveryRetriesAndDeadLetters(t *testing.T) {
	fast := broker.Delivery{Retry: 3, Exponential: true, Delay: time.Millisecond, DeadLetter: "dls"}
	tests := map[string]struct {
		statuses  []int
		wantCalls int
		wantDead  int
	}{
		"success":                     {statuses: []int{200}, wantCalls: 1},
		"503 then success":            {statuses: []int{503, 503, 200}, wantCalls: 3},
		"422 is not retried":          {statuses: []int{422}, wantCalls: 1, wantDead: 1},
		"400 is not retried":          {statuses: []int{400}, wantCalls: 1, wantDead: 1},
		"retries run out":             {statuses: []int{500, 500, 500, 500}, wantCalls: 4, wantDead: 1},
		"429 is retried like Knative": {statuses: []int{429, 200}, wantCalls: 2},
		"404 is retried like Knative": {statuses: []int{404, 200}, wantCalls: 2},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			sub := &subscriber{statuses: tc.statuses}
			srv := httptest.NewServer(sub)
			defer srv.Close()
			dead := filepath.Join(t.TempDir(), "dead.jsonl")
			b := &broker.Broker{
				Triggers:    []broker.Trigger{{Name: "t", Filter: map[string]string{"type": "test.a"}, Subscriber: "fn", Delivery: fast}},
				Resolve:     func(string) (string, bool) { return srv.URL, true },
				DeadLetters: dead,
			}
			e := event.New()
			e.SetID("1")
			e.SetSource("/test")
			e.SetType("test.a")
			if err := b.Publish(context.Background(), e); err != nil {
				t.Fatal(err)
			}
			b.Wait()
			if n := len(sub.received()); n != tc.wantCalls {
				t.Errorf("deliveries = %d, want %d", n, tc.wantCalls)
			}
			if got := b.Stats().DeadLettered; got != tc.wantDead {
				t.Errorf("dead-lettered = %d, want %d", got, tc.wantDead)
			}
			raw, _ := os.ReadFile(dead)
			if lines := strings.Count(string(raw), "\n"); lines != tc.wantDead {
				t.Errorf("dead-letter file has %d records, want %d", lines, tc.wantDead)
			}
			if tc.wantDead > 0 {
				var rec struct {
					Event  map[string]any `json:"event"`
					Status int            `json:"status"`
				}
				if err := json.Unmarshal([]byte(strings.SplitN(string(raw), "\n", 2)[0]), &rec); err != nil || rec.Event["id"] != "1" {
					t.Errorf("dead letter does not keep the event: %s (%v)", raw, err)
				}
			}
		})
	}
}

func TestFilterAndReplies(t *testing.T) {
	a, z := &subscriber{reply: true}, &subscriber{}
	sa, sz := httptest.NewServer(a), httptest.NewServer(z)
	defer sa.Close()
	defer sz.Close()
	b := &broker.Broker{
		Triggers: []broker.Trigger{
			{Name: "a", Filter: map[string]string{"type": "test.a"}, Subscriber: "a"},
			{Name: "z", Filter: map[string]string{"type": "test.reply"}, Subscriber: "z"},
		},
		Resolve: func(s string) (string, bool) {
			return map[string]string{"a": sa.URL, "z": sz.URL}[s], true
		},
	}
	for _, typ := range []string{"test.a", "test.unrouted"} {
		e := event.New()
		e.SetID(typ)
		e.SetSource("/test")
		e.SetType(typ)
		_ = b.Publish(context.Background(), e)
	}
	b.Wait()
	if diff := cmp.Diff([]string{"test.a"}, a.received()); diff != "" {
		t.Errorf("subscriber a (-want +got): %s", diff)
	}
	// a's reply went back into the broker and reached the Trigger on its type.
	if diff := cmp.Diff([]string{"test.reply"}, z.received()); diff != "" {
		t.Errorf("subscriber of the reply type (-want +got): %s", diff)
	}
	if b.Stats().Unrouted != 1 {
		t.Errorf("unrouted = %d, want 1", b.Stats().Unrouted)
	}
}

func TestParseISODuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"PT0.5S": 500 * time.Millisecond, "PT1S": time.Second, "PT2M": 2 * time.Minute, "P1DT1H": 25 * time.Hour, "PT1M30S": 90 * time.Second,
	} {
		got, err := broker.ParseISODuration(in)
		if err != nil || got != want {
			t.Errorf("%s = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "P", "PT", "1s", "PT-1S"} {
		if _, err := broker.ParseISODuration(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// TestFaults: the injected delivery faults do what they say — duplicates reach the subscriber
// twice, refused attempts never reach it and are retried, dropped deliveries are lost — and
// every delivery's outcome is observed.
func TestFaults(t *testing.T) {
	fast := broker.Delivery{Retry: 50, Delay: time.Millisecond}
	cases := map[string]struct {
		dup, refuse, drop float64
		check             func(t *testing.T, got int, c broker.FaultCounts, outcomes map[int]int)
	}{
		"duplicates": {dup: 1, check: func(t *testing.T, got int, c broker.FaultCounts, o map[int]int) {
			if got != 40 || c.Duplicated != 20 || o[200] != 40 {
				t.Errorf("20 events, all duplicated: %d deliveries, %+v, outcomes %v", got, c, o)
			}
		}},
		"refused attempts are retried": {refuse: 0.5, check: func(t *testing.T, got int, c broker.FaultCounts, o map[int]int) {
			if got != 20 || c.Refused == 0 || o[200] != 20 {
				t.Errorf("half the attempts refused: %d deliveries, %+v, outcomes %v", got, c, o)
			}
		}},
		"dropped deliveries are lost": {drop: 1, check: func(t *testing.T, got int, c broker.FaultCounts, o map[int]int) {
			if got != 0 || c.Dropped != 20 || o[0] != 20 {
				t.Errorf("every delivery dropped: %d deliveries, %+v, outcomes %v", got, c, o)
			}
		}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			sub := &subscriber{}
			srv := httptest.NewServer(sub)
			defer srv.Close()
			var mu sync.Mutex
			outcomes := map[int]int{}
			f := broker.NewFaults(1, tc.dup, 5*time.Millisecond)
			f.SetRefuse(tc.refuse)
			f.SetDrop(tc.drop)
			b := &broker.Broker{
				Triggers: []broker.Trigger{{Name: "t", Filter: map[string]string{"type": "test.a"}, Subscriber: "fn", Delivery: fast}},
				Resolve:  func(string) (string, bool) { return srv.URL, true },
				Faults:   f,
				OnDelivery: func(_ broker.Trigger, _ event.Event, status int, _ *event.Event) {
					mu.Lock()
					outcomes[status]++
					mu.Unlock()
				},
			}
			for i := range 20 {
				e := event.New()
				e.SetID(strconv.Itoa(i))
				e.SetSource("/test")
				e.SetType("test.a")
				_ = b.Publish(context.Background(), e)
			}
			b.Wait()
			tc.check(t, len(sub.received()), f.Counts(), outcomes)
		})
	}
}
