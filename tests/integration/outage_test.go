package integration

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
)

// manyComponents is a descriptor of n components, each one ConfigMap, all on cluster.
func manyComponents(name string, n int, cluster string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "name: %s\ncomponents:\n", name)
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "  - name: c%d\n    manifests: [{name: cfg%d}]\n    targets: {cluster_name: %s, orchestrator: ocm}\n", i, i, cluster)
	}
	b.WriteString("manifests:\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "  - apiVersion: v1\n    kind: ConfigMap\n    metadata: {name: cfg%d}\n    data: {n: \"%d\"}\n", i, i)
	}
	return b.String()
}

// TestPublishOutage: the broker refuses every delivery while 500 jobs go from Created to
// Finished (driven by the cron ticks alone, as the events are lost). Once it is back, every
// transition's event arrives at least once — job.created, job.progressing and job.finished
// of every job — and no event is invented: each names a transition its job's history shows.
func TestPublishOutage(t *testing.T) {
	const groups, perGroup = 10, 50
	prefix := "o" + model.NewID()[:8]
	st := newStore(t, prefix)
	sink := newOutage(t)
	sink.down.Store(true)
	vars := func(function string) map[string]string {
		v := baseEnv(prefix, function)
		v["K_SINK"], v["PUBLISH_RETRIES"], v["PUBLISH_BACKOFF"], v["OUTBOX_AGE"] = sink.srv.URL, "1", "5ms", "1s"
		return v
	}
	jobs := startFunctions(t, map[string]string{"FUNCTION": "jobs", "STORE_PREFIX": prefix, "K_SINK": sink.srv.URL,
		"PUBLISH_RETRIES": "1", "PUBLISH_BACKOFF": "5ms"})
	exec := startProcess(t, vars("executor"))
	sync := startProcess(t, vars("statussync"))

	var all []model.Job
	for g := 0; g < groups; g++ {
		r := jobs.rest(t, http.MethodPost, "/jobmanager/groups", manyComponents(fmt.Sprintf("outage%d", g), perGroup, "cluster1"), jobs.token)
		if r.status != http.StatusCreated {
			t.Fatalf("POST /groups: %d %s", r.status, r.body)
		}
		var got model.JobGroup
		r.decode(t, &got)
		all = append(all, got.Jobs...)
	}
	finishedAll := func() bool {
		for _, j := range all {
			got, err := st.GetJobStatus(context.Background(), j.ID)
			if err != nil || got.State != model.Finished {
				return false
			}
		}
		return true
	}
	if !tickUntil(t, 5*time.Minute, finishedAll, exec.url, sync.url) {
		t.Fatal("the jobs did not all finish while the broker was down")
	}
	if n := sink.count(); n != 0 {
		t.Fatalf("the broker was down but accepted %d events", n)
	}
	depth, err := st.OutboxDepth(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d jobs finished while the broker refused everything; %d events wait in the outbox", len(all), depth)

	sink.down.Store(false)
	want := []string{"eu.icos.job.created.v1", "eu.icos.job.progressing.v1", "eu.icos.job.finished.v1"}
	delivered := func() bool {
		for _, j := range all {
			for _, typ := range want {
				if sink.about(typ, j.ID) == 0 {
					return false
				}
			}
		}
		return true
	}
	if !tickUntil(t, 2*time.Minute, delivered, exec.url, sync.url) {
		missing := 0
		for _, j := range all {
			for _, typ := range want {
				if sink.about(typ, j.ID) == 0 {
					missing++
				}
			}
		}
		t.Fatalf("%d of %d events never arrived after the broker came back", missing, len(all)*len(want))
	}
	// None invented: every event names a job of this test and a transition its history shows.
	ours := map[string]bool{}
	for _, j := range all {
		ours[j.ID] = true
	}
	actions := map[string][]string{"eu.icos.job.created.v1": {"create", "target", "reopen-5"},
		"eu.icos.job.progressing.v1": {"promote", "takeover", "progress"}, "eu.icos.job.finished.v1": {"finish"},
		"eu.icos.job.degraded.v1": {"degrade"}}
	sink.mu.Lock()
	received := append([]eventRecord(nil), records(sink)...)
	sink.mu.Unlock()
	degradedShown := 0
	for _, e := range received {
		if !ours[e.job] {
			t.Errorf("event %s about job %q, which is none of the test's", e.typ, e.job)
			continue
		}
		h, err := st.History(context.Background(), e.job)
		if err != nil {
			t.Fatal(err)
		}
		if !historyHas(h, actions[e.typ]) {
			t.Errorf("event %s of job %s names no transition of its history", e.typ, e.job)
		}
		if e.typ == "eu.icos.job.degraded.v1" && degradedShown < 3 {
			degradedShown++
			for _, x := range h {
				if x.Action == "degrade" || x.Action == "finish" {
					t.Logf("job %s on its way: %s %s→%s: %s", e.job, x.Action, x.From, x.To, x.Why)
				}
			}
		}
	}
	if d, _ := st.OutboxDepth(context.Background()); d != 0 {
		t.Errorf("%d events still in the outbox after the broker came back", d)
	}
	t.Logf("after the outage: %d events delivered for %d jobs (%d transitions)", len(received), len(all), len(all)*len(want))
}

type eventRecord struct{ typ, job string }

func records(o *outage) []eventRecord {
	out := make([]eventRecord, 0, len(o.events))
	for _, e := range o.events {
		id, _ := e.Extensions()["jobid"].(string)
		out = append(out, eventRecord{typ: e.Type(), job: id})
	}
	return out
}

func historyHas(h []model.HistoryEntry, actions []string) bool {
	for _, e := range h {
		for _, a := range actions {
			if e.Action == a {
				return true
			}
		}
	}
	return false
}
