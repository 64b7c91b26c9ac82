package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"

	"github.com/ocm-jobs/ocm-jobs/shared/events"
	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/tests/broker"
	"github.com/ocm-jobs/ocm-jobs/tests/chaos/invariants"
)

// workloadSource is the CloudEvents source of the workload's events.
const workloadSource = "/chaos/workload"

// Driver runs the plan's workload against the stack: the ICOS REST API of the jobs and
// incompliance processes, and events through the broker's ingress, as clients and the Policy
// Manager would, retrying what answers 5xx (and 409 while jobs are being executed).
type Driver struct {
	st     *Stack
	plan   *Plan
	client *http.Client
	// giveUp is when operations still retrying stop.
	giveUp time.Time

	mu      sync.Mutex
	groups  []*groupState
	creates []invariants.Create
	// byEvent maps a workload event's id to its op, for its delivery's outcome.
	byEvent map[string]*Op
	settled map[string]bool
	stats   map[string]*OpStats
	wg      sync.WaitGroup
	// calls bounds the requests in flight (not the operations: a delete waiting for its
	// undeploy holds none).
	calls chan struct{}
}

// OpStats count the outcomes of one kind of operation: answered 2xx (ok, or deduplicated:
// 202 for an incompliance), refused for good (4xx), failed (5xx, unreachable, dead-lettered
// or dropped after every retry), or skipped (its group was never acknowledged).
type OpStats struct {
	Sent, OK, Deduplicated, Refused, Failed, Skipped int
}

// groupState is what the workload knows of one of its groups.
type groupState struct {
	mu    sync.Mutex
	spec  GroupSpec
	id    string
	rev   int
	comps []ComponentSpec
}

// NewDriver prepares the workload of plan on st.
func NewDriver(st *Stack, plan *Plan) *Driver {
	d := &Driver{st: st, plan: plan, client: &http.Client{Timeout: 30 * time.Second},
		byEvent: map[string]*Op{}, settled: map[string]bool{}, stats: map[string]*OpStats{}, calls: make(chan struct{}, 16)}
	for _, g := range plan.Groups {
		d.groups = append(d.groups, &groupState{spec: g, comps: append([]ComponentSpec(nil), g.Components...)})
	}
	st.OnDelivery(d.delivered)
	return d
}

// Run sends every operation at its time from start, each in its own goroutine, and returns
// once all are sent; Wait waits for those still retrying (until giveUp).
func (d *Driver) Run(ctx context.Context, start, giveUp time.Time) {
	d.giveUp = giveUp
	for i := range d.plan.Ops {
		op := &d.plan.Ops[i]
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(start.Add(op.At))):
		}
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			d.do(ctx, op)
		}()
	}
}

// Wait waits for the operations still in flight.
func (d *Driver) Wait() { d.wg.Wait() }

func (d *Driver) stat(op *Op) *OpStats {
	k := string(op.Kind) + " (" + op.Via + ")"
	if op.Kind == OpDecidePlacement {
		k = string(op.Kind)
	}
	if d.stats[k] == nil {
		d.stats[k] = &OpStats{}
	}
	return d.stats[k]
}

func (d *Driver) count(op *Op, f func(*OpStats)) {
	d.mu.Lock()
	f(d.stat(op))
	d.mu.Unlock()
}

// Stats returns the outcomes by operation (kind and channel).
func (d *Driver) Stats() map[string]OpStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string]OpStats{}
	for k, v := range d.stats {
		out[k] = *v
	}
	return out
}

// Creates returns the acknowledged creates.
func (d *Driver) Creates() []invariants.Create {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := append([]invariants.Create(nil), d.creates...)
	sort.Slice(out, func(a, b int) bool { return out[a].At.Before(out[b].At) })
	return out
}

func (d *Driver) acknowledge(g *groupState, id, via string) {
	g.mu.Lock()
	g.id = id
	g.mu.Unlock()
	d.mu.Lock()
	d.creates = append(d.creates, invariants.Create{GroupID: id, At: time.Now(), Via: via})
	d.mu.Unlock()
}

// delivered learns the outcome of the workload's events: a create's group id from the jobs
// function's reply, and each event's first final answer.
func (d *Driver) delivered(t broker.Trigger, e event.Event, status int, reply *event.Event) {
	if e.Source() != workloadSource {
		return
	}
	d.mu.Lock()
	op := d.byEvent[e.ID()]
	first := op != nil && !d.settled[e.ID()]
	d.settled[e.ID()] = true
	d.mu.Unlock()
	if op == nil {
		return
	}
	if e.Type() == events.JobGroupCreate && status >= 200 && status < 300 && reply != nil {
		if id, _ := reply.Extensions()[events.ExtJobGroupID].(string); id != "" {
			d.acknowledge(d.groups[op.Group], id, "event")
		}
	}
	if first {
		d.count(op, func(s *OpStats) { classify(s, status) })
	}
}

func classify(s *OpStats, status int) {
	switch {
	case status == http.StatusAccepted:
		s.Deduplicated++
	case status >= 200 && status < 300:
		s.OK++
	case status >= 400 && status < 500:
		s.Refused++
	default:
		s.Failed++
	}
}

func (d *Driver) do(ctx context.Context, op *Op) {
	if op.Kind == OpDecidePlacement {
		d.count(op, func(s *OpStats) { s.Sent++ })
		err := d.st.decide(ctx, latePlacement, clusters)
		d.count(op, func(s *OpStats) {
			if err != nil {
				s.Failed++
			} else {
				s.OK++
			}
		})
		return
	}
	g := d.groups[op.Group]
	if op.Kind == OpCreate {
		d.create(ctx, op, g)
		return
	}
	g.mu.Lock()
	id := g.id
	g.mu.Unlock()
	if id == "" {
		d.count(op, func(s *OpStats) { s.Skipped++ })
		return
	}
	switch op.Kind {
	case OpUpdate, OpAddComponent, OpRemoveComponent:
		d.update(ctx, op, g, id)
	case OpStop:
		d.lifecycle(ctx, op, id, events.JobGroupStop, http.MethodPut, "/jobmanager/groups/undeploy/"+id)
	case OpStart:
		d.lifecycle(ctx, op, id, events.JobGroupStart, http.MethodPut, "/jobmanager/groups/deploy/"+id)
	case OpDelete:
		d.count(op, func(s *OpStats) { s.Sent++ })
		// Stop, then delete once every job is undeployed: while jobs run both answer 409.
		status := d.retry(ctx, d.giveUp, true, func() (int, []byte, error) {
			return d.call(ctx, http.MethodPut, d.st.Functions["jobs"].url+"/jobmanager/groups/undeploy/"+id, "", nil)
		})
		if status == http.StatusOK {
			status = d.retry(ctx, d.giveUp, true, func() (int, []byte, error) {
				return d.call(ctx, http.MethodDelete, d.st.Functions["jobs"].url+"/jobmanager/groups/"+id, "", nil)
			})
		}
		d.count(op, func(s *OpStats) { classify(s, status) })
	case OpIncompliance, OpStorm, OpDuplicate:
		d.incompliances(ctx, op, g, id)
	}
}

func (d *Driver) create(ctx context.Context, op *Op, g *groupState) {
	g.mu.Lock()
	desc, err := descriptor(g.spec, g.rev, g.comps)
	g.mu.Unlock()
	if err != nil {
		panic(err) // the plan's own descriptors always encode
	}
	d.count(op, func(s *OpStats) { s.Sent++ })
	if op.Via == "event" {
		d.send(ctx, op, events.JobGroupCreate, "application/yaml", desc)
		return
	}
	var body []byte
	status := d.retry(ctx, time.Now().Add(30*time.Second), false, func() (int, []byte, error) {
		st, b, err := d.call(ctx, http.MethodPost, d.st.Functions["jobs"].url+"/jobmanager/groups", "application/yaml", desc)
		body = b
		return st, b, err
	})
	if status == http.StatusCreated {
		var gr struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(body, &gr) == nil && gr.ID != "" {
			d.acknowledge(g, gr.ID, "rest")
		}
	}
	d.count(op, func(s *OpStats) { classify(s, status) })
}

// update sends the group's descriptor after the op's change: a new revision of every
// component (a replace), one component more, or one fewer.
func (d *Driver) update(ctx context.Context, op *Op, g *groupState, id string) {
	g.mu.Lock()
	switch op.Kind {
	case OpUpdate:
		g.rev++
		for i, c := range g.comps {
			g.comps[i] = revised(d.plan.Seed, g.spec, c, g.rev)
		}
	case OpAddComponent:
		rnd := rand.New(rand.NewSource(op.Key))
		c := ComponentSpec{Name: op.Component, Base: randomSpec(rnd)}
		if g.spec.Placement == "" && len(g.comps) > 0 && g.comps[0].Cluster != "" {
			c.Cluster = clusters[rnd.Intn(2)]
		}
		g.comps = append(g.comps, c)
	case OpRemoveComponent:
		var keep []ComponentSpec
		for _, c := range g.comps {
			if c.Name != op.Component {
				keep = append(keep, c)
			}
		}
		g.comps = keep
	}
	desc, err := descriptor(g.spec, g.rev, g.comps)
	g.mu.Unlock()
	if err != nil {
		panic(err)
	}
	body, _ := json.Marshal(map[string]string{"id": id, "descriptor": string(desc)})
	d.count(op, func(s *OpStats) { s.Sent++ })
	if op.Via == "event" {
		d.send(ctx, op, events.JobGroupUpdate, "application/json", body)
		return
	}
	status := d.retry(ctx, time.Now().Add(30*time.Second), true, func() (int, []byte, error) {
		return d.call(ctx, http.MethodPut, d.st.Functions["jobs"].url+"/jobmanager/groups", "application/json", body)
	})
	d.count(op, func(s *OpStats) { classify(s, status) })
}

func (d *Driver) lifecycle(ctx context.Context, op *Op, id, typ, method, path string) {
	d.count(op, func(s *OpStats) { s.Sent++ })
	if op.Via == "event" {
		body, _ := json.Marshal(map[string]string{"id": id})
		d.send(ctx, op, typ, "application/json", body)
		return
	}
	status := d.retry(ctx, time.Now().Add(30*time.Second), true, func() (int, []byte, error) {
		return d.call(ctx, method, d.st.Functions["jobs"].url+path, "", nil)
	})
	d.count(op, func(s *OpStats) { classify(s, status) })
}

// incompliances sends what the op says: one incompliance, a storm of them (the same policy
// firing again and again, each with its own id), or one twice (the same id, by both channels).
func (d *Driver) incompliances(ctx context.Context, op *Op, g *groupState, id string) {
	rnd := rand.New(rand.NewSource(op.Key))
	n := 1
	if op.Kind == OpStorm {
		n = op.Count
	}
	for i := range n {
		inc := d.incompliance(rnd, op, g, id)
		vias := []string{op.Via}
		if op.Kind == OpDuplicate {
			vias = append(vias, map[string]string{"rest": "event", "event": "rest"}[op.Via])
		}
		for k, via := range vias {
			if i+k > 0 {
				time.Sleep(150 * time.Millisecond)
			}
			d.count(op, func(s *OpStats) { s.Sent++ })
			if via == "event" {
				d.send(ctx, op, events.PolicyIncompliance, "application/json", inc)
				continue
			}
			status := d.retry(ctx, time.Now().Add(30*time.Second), false, func() (int, []byte, error) {
				return d.call(ctx, http.MethodPost, d.st.Functions["incompliance"].url+"/jobmanager/policies/incompliance", "application/json", inc)
			})
			d.count(op, func(s *OpStats) { classify(s, status) })
		}
	}
}

// incompliance is a Policy Manager incompliance about one component of the group, with
// what its remediation needs.
func (d *Driver) incompliance(rnd *rand.Rand, op *Op, g *groupState, id string) []byte {
	u, _ := uuid.NewRandomFromReader(rnd)
	in := map[string]any{
		"id": u.String(), "policyName": "chaos-" + string(op.Remediation), "remediation": op.Remediation,
		"currentValue": 90 + rnd.Intn(10), "threshold": 80,
		"subject": map[string]any{"type": "app", "appName": g.spec.Name, "appComponent": op.Component, "appInstance": id},
	}
	switch op.Remediation {
	case model.Patch:
		in["patch"] = map[string]any{"metadata": map[string]any{"labels": map[string]any{"chaos-patch": fmt.Sprint(rnd.Intn(1000))}}}
	case model.Secure:
		in["image"] = "registry.invalid/chaos/secure:1"
	case model.Reallocation:
		if rnd.Intn(2) == 0 {
			in["targetCluster"] = clusters[rnd.Intn(2)]
		}
	}
	raw, _ := json.Marshal(in)
	return raw
}

// send publishes a workload event (binary mode) through the broker's ingress, retrying
// while it refuses; its delivery's outcome arrives through delivered.
func (d *Driver) send(ctx context.Context, op *Op, typ, contentType string, data []byte) {
	id := uuid.NewString()
	d.mu.Lock()
	d.byEvent[id] = op
	d.mu.Unlock()
	headers := map[string]string{"Ce-Specversion": "1.0", "Ce-Id": id, "Ce-Source": workloadSource, "Ce-Type": typ, "Content-Type": contentType}
	status := d.retry(ctx, time.Now().Add(30*time.Second), false, func() (int, []byte, error) {
		return d.callWith(ctx, http.MethodPost, d.st.ingress.URL, headers, data)
	})
	if status != http.StatusAccepted {
		d.count(op, func(s *OpStats) { s.Failed++ })
	}
}

// call makes one HTTP request with the workload's bearer token.
func (d *Driver) call(ctx context.Context, method, url, contentType string, body []byte) (int, []byte, error) {
	return d.callWith(ctx, method, url, map[string]string{"Content-Type": contentType}, body)
}

// callWith makes one HTTP request with the workload's bearer token and headers.
func (d *Driver) callWith(ctx context.Context, method, url string, headers map[string]string, body []byte) (int, []byte, error) {
	d.calls <- struct{}{}
	defer func() { <-d.calls }()
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+d.st.Token)
	for k, v := range headers {
		if v != "" {
			req.Header.Set(k, v)
		}
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return resp.StatusCode, raw, err
}

// retry calls f until it answers something other than a network error or 5xx (or 409, when
// conflicts are to be waited out) or until passes; it returns the last status (0: no answer).
func (d *Driver) retry(ctx context.Context, until time.Time, waitConflicts bool, f func() (int, []byte, error)) int {
	backoff := 200 * time.Millisecond
	for {
		status, _, err := f()
		again := err != nil || status >= 500 || (waitConflicts && status == http.StatusConflict)
		if !again || time.Now().Add(backoff).After(until) {
			return status
		}
		select {
		case <-ctx.Done():
			return status
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 3*time.Second)
	}
}
