// Package function is the root of ocm-jobs as Knative's func builds it: one image serving
// the four functions (jobs, incompliance, executor, statussync). Every incoming event is
// routed by its type to the function(s) subscribed to it; FUNCTION narrows a process to one
// function, so the same image runs as four Knative Services that scale separately.
//
// func.yaml says `invoke: http`: func's CloudEvents scaffolding (func-go's cloudevents
// package) serves nothing but CloudEvents at / and the health paths, while jobs and
// incompliance also serve the ICOS REST API from the same process. With the HTTP scaffolding,
// func-go calls Handle(w, r) for every request and this package's own server decodes the
// CloudEvents (sdk-go) and serves the REST routes.
package function

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/protocol"
	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"knative.dev/pkg/logging"

	"github.com/ocm-jobs/ocm-jobs/functions/executor"
	"github.com/ocm-jobs/ocm-jobs/functions/incompliance"
	"github.com/ocm-jobs/ocm-jobs/functions/jobs"
	"github.com/ocm-jobs/ocm-jobs/functions/statussync"
	"github.com/ocm-jobs/ocm-jobs/shared/auth"
	"github.com/ocm-jobs/ocm-jobs/shared/config"
	"github.com/ocm-jobs/ocm-jobs/shared/events"
	"github.com/ocm-jobs/ocm-jobs/shared/logs"
	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/ocm"
	"github.com/ocm-jobs/ocm-jobs/shared/platform"
	"github.com/ocm-jobs/ocm-jobs/shared/redisconn"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
	"github.com/ocm-jobs/ocm-jobs/shared/telemetry"
)

// component is what each function package's Function provides.
type component interface {
	events.Handler
	Routes() map[string]http.Handler
}

// entry describes one function: the event types it subscribes to, its configuration struct
// and how to build it.
type entry struct {
	types  []string
	config func() any
	build  func(ctx context.Context, p platform.Platform) (component, error)
}

// registry maps each function to its entry.
var registry = map[string]entry{
	config.Jobs:         register(jobs.Types, jobs.New),
	config.Incompliance: register(incompliance.Types, incompliance.New),
	config.Executor:     register(executor.Types, executor.New),
	config.StatusSync:   register(statussync.Types, statussync.New),
}

// register makes the entry of a function from its event types and its constructor: the
// configuration struct C is filled from the environment before the function is built.
func register[C any, F component](types []string, newFn func(context.Context, C, platform.Platform) (F, error)) entry {
	return entry{
		types:  types,
		config: func() any { return new(C) },
		build: func(ctx context.Context, p platform.Platform) (component, error) {
			var c C
			if err := config.Load(&c); err != nil {
				return nil, err
			}
			f, err := newFn(ctx, c, p)
			if err != nil {
				return nil, err // not f: a nil *Function in an interface is not nil
			}
			return f, nil
		},
	}
}

// ConfigSpecs returns a new, empty configuration struct of each function, by function name,
// for documentation generated from the structs' tags.
func ConfigSpecs() map[string]any {
	out := make(map[string]any, len(registry))
	for name, e := range registry {
		out[name] = e.config()
	}
	return out
}

// Subscriptions returns the event types each function subscribes to.
func Subscriptions() map[string][]string {
	out := make(map[string][]string, len(registry))
	for name, e := range registry {
		out[name] = append([]string(nil), e.types...)
	}
	return out
}

// route is one function subscribed to an event type.
type route struct {
	function string
	handler  events.Handler
}

// Function serves the enabled functions of this process.
type Function struct {
	Runtime  config.Runtime
	log      *zap.SugaredLogger
	platform platform.Platform
	relay    *events.Relay
	routes   map[string][]route
	http     map[string]http.Handler
	enabled  []string
	// eventsAuth checks bearer tokens on the CloudEvents endpoint (AUTH_CLOUDEVENTS).
	eventsAuth *auth.Verifier
	// handler serves Handle once Start has built it: func-go starts serving before Start ends.
	handler atomic.Pointer[http.Handler]
	// after counts the work a delivery left to do after its answer (publishing its events,
	// remembering its answer); Stop waits for it.
	after sync.WaitGroup
}

// later runs fn after the answer, counted for Stop. What runs here is never needed for the
// answer's correctness: an event that is not published stays in the outbox for the drain, an
// answer that is not remembered leaves a redelivery to the idempotent handler.
func (f *Function) later(fn func()) {
	f.after.Add(1)
	go func() {
		defer f.after.Done()
		fn()
	}()
}

// afterEvent gathers what the handlers of one event leave for after its answer (recording
// the execution, publishing the outbox, remembering the answer) and runs it in one goroutine,
// in the order it was left, once the event is handled: one goroutine per event, not one per
// piece (each new goroutine grows its stack again; stack growth was 8–13% of the executor's
// CPU in its profiles).
type afterEvent struct {
	f    *Function
	mu   sync.Mutex
	fns  []func()
	done bool
}

// add keeps fn for later, or runs it later at once when the event's pieces already went.
func (a *afterEvent) add(fn func()) {
	a.mu.Lock()
	if !a.done {
		a.fns = append(a.fns, fn)
		a.mu.Unlock()
		return
	}
	a.mu.Unlock()
	a.f.later(fn)
}

// run starts what was left, in one goroutine.
func (a *afterEvent) run() {
	a.mu.Lock()
	fns := a.fns
	a.fns, a.done = nil, true
	a.mu.Unlock()
	if len(fns) == 0 {
		return
	}
	a.f.later(func() {
		for _, fn := range fns {
			fn()
		}
	})
}

// New returns the root function; Start configures it from the environment.
func New() *Function { return &Function{} }

// Start reads the configuration from the environment, builds the platform the enabled
// functions share — one Redis store, one hub client and hub id, one object store client —
// and the functions on it.
func (f *Function) Start(ctx context.Context, _ map[string]string) error {
	if err := config.Load(&f.Runtime); err != nil {
		return err
	}
	if err := f.Runtime.Validate(); err != nil {
		return err
	}
	name := "ocm-jobs"
	if f.Runtime.Function != "" {
		name += "." + f.Runtime.Function
	}
	log, err := logs.New(f.Runtime.LogLevel, name)
	if err != nil {
		return err
	}
	f.log = log
	ctx = logging.WithLogger(ctx, log)
	tel, err := telemetry.New(ctx, name)
	if err != nil {
		return err
	}
	if f.platform, err = buildPlatform(ctx, f.Runtime, tel); err != nil {
		return err
	}
	if err := tel.ObserveBacklog(f.backlog); err != nil {
		return err
	}
	var pub events.Publisher = events.Discard{}
	if f.Runtime.Sink != "" {
		sp, err := events.NewSinkPublisher(f.Runtime.Sink, f.Runtime.PublishRetries, f.Runtime.PublishBackoff)
		if err != nil {
			return err
		}
		sp.TokenFile = f.Runtime.SinkTokenFile
		pub = sp
	} else {
		log.Warn("K_SINK is not set: emitted events are dropped")
	}
	f.relay = &events.Relay{Store: f.platform.Store, Publisher: pub, Age: f.Runtime.OutboxAge, Telemetry: tel}
	var ac auth.Config
	if err := config.Load(&ac); err != nil {
		return err
	}
	ec := f.Runtime.Events
	var hubClient *http.Client
	hubURL := ""
	if f.platform.Hub != nil {
		if hubClient, err = rest.HTTPClientFor(f.platform.Hub.Config); err != nil {
			return err
		}
		hubURL = f.platform.Hub.Config.Host
	}
	if f.eventsAuth, err = auth.NewEventsVerifier(ac, ec, hubClient, hubURL); err != nil {
		return err
	}
	if f.eventsAuth == nil {
		log.Warn("AUTH_CLOUDEVENTS=false (or AUTH_MODE=none): anyone who reaches this process may send it events; development only")
	}
	if err := f.build(ctx); err != nil {
		return err
	}
	h, err := f.Server().HTTPHandler(ctx)
	if err != nil {
		return err
	}
	f.handler.Store(&h)
	return nil
}

// buildPlatform connects to Redis, opens the store, builds the hub clients and resolves the
// hub id (once, for every function), and the object store client when one is configured.
// Redis and hub errors are counted by tel.
func buildPlatform(ctx context.Context, rt config.Runtime, tel *telemetry.Telemetry) (platform.Platform, error) {
	p := platform.Platform{Telemetry: tel}
	var sc config.Store
	if err := config.Load(&sc); err != nil {
		return p, err
	}
	var err error
	if p.Redis, err = redisconn.Connect(ctx, rt.RedisURL, 30*time.Second); err != nil {
		return p, err
	}
	p.Redis.AddHook(telemetry.RedisErrors(tel))
	if p.Objects, err = sc.Objects(ctx); err != nil {
		return p, err
	}
	p.Bucket = sc.S3Bucket
	if p.Store, err = sc.Open(p.Redis, p.Objects); err != nil {
		return p, err
	}
	p.HubID = rt.HubID
	rc, err := ocm.RestConfig()
	if err != nil {
		p.NoHub = err
		logging.FromContext(ctx).Warnw("no hub API server", "error", err)
		return p, nil
	}
	rc.Wrap(telemetry.HubErrors(tel))
	rc.QPS, rc.Burst = rt.HubQPS, rt.HubBurst
	if p.Hub, err = ocm.NewHub(rc); err != nil {
		return p, err
	}
	// The hub id is read once, waiting a while for a hub that is still starting.
	err = wait.PollUntilContextTimeout(ctx, time.Second, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		id, err := p.Hub.HubID(ctx, rt.HubID)
		if err != nil {
			logging.FromContext(ctx).Warnw("reading the hub id", "error", err)
			return false, nil
		}
		p.HubID = id
		return true, nil
	})
	if err != nil {
		return p, fmt.Errorf("the hub id (HUB_ID, or the UID of the hub's ClusterManager %q): %w", ocm.ClusterManagerName, err)
	}
	return p, nil
}

func (f *Function) build(ctx context.Context) error {
	f.routes = map[string][]route{}
	f.http = map[string]http.Handler{}
	names := make([]string, 0, len(registry))
	for name := range registry {
		if f.Runtime.Enabled(name) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		e := registry[name]
		c, err := e.build(ctx, f.platform)
		if err != nil {
			return fmt.Errorf("function %s: %w", name, err)
		}
		// Each function remembers its own answers: the cron tick reaches several functions
		// with the same source+id, and each must handle it once. And each remembers per hub:
		// another hub sharing the Redis (its executor, its status sync) decides for itself.
		scope := name + ":" + f.platform.HubID
		h := (&events.Deduper{
			Store: f.platform.Store, Scope: scope, TTL: f.Runtime.IdempotencyTTL, Pending: f.Runtime.IdempotencyPending,
		}).Wrap(f.announcing(c))
		for _, t := range e.types {
			f.routes[t] = append(f.routes[t], route{function: name, handler: h})
		}
		for pattern, rh := range c.Routes() {
			if _, dup := f.http[pattern]; dup {
				return fmt.Errorf("function %s: route %s is served twice", name, pattern)
			}
			f.http[pattern] = f.announcingHTTP(rh)
		}
		f.enabled = append(f.enabled, name)
	}
	f.log.Infow("functions started", "functions", f.enabled, "types", f.types())
	return nil
}

// announcing runs a handler and then publishes the events its changes appended to the
// outbox, after the answer: the broker's round trip is not the sender's wait. A publish that
// fails is not the handler's failure: the change is committed, and its event stays in the
// outbox for the next drain.
func (f *Function) announcing(next events.Handler) events.Handler {
	return events.HandlerFunc(func(ctx context.Context, e event.Event) (*event.Event, protocol.Result) {
		ctx, pending := store.WithPending(ctx)
		reply, result := next.Handle(ctx, e)
		bg := context.WithoutCancel(ctx)
		events.AfterAnswer(ctx, func() { f.flush(bg, pending) })
		return reply, result
	})
}

// announcingHTTP is announcing for a REST route.
func (f *Function) announcingHTTP(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, pending := store.WithPending(r.Context())
		next.ServeHTTP(w, r.WithContext(ctx))
		f.flush(ctx, pending)
	})
}

func (f *Function) flush(ctx context.Context, pending *store.Pending) {
	entries := pending.Take()
	if len(entries) == 0 {
		return
	}
	f.countTransitions(ctx, entries)
	if _, err := f.relay.Flush(context.WithoutCancel(ctx), entries); err != nil {
		logging.FromContext(ctx).Warnw("publishing events failed; they stay in the outbox for the next drain", "error", err)
	}
}

// countTransitions counts the changes of state this process committed: every outbox entry
// is one (the change and its announcement commit together).
func (f *Function) countTransitions(ctx context.Context, entries []store.OutboxEntry) {
	tel := f.platform.Telemetry
	for i := range entries {
		j := &entries[i].Job
		if entries[i].Type == "" {
			continue
		}
		cluster := ""
		if j.Targets != nil {
			cluster = j.Targets.ClusterName
		}
		tel.Transition(ctx, j.Type.String(), string(j.SubType), j.State.String(), cluster)
		if j.State == model.Degraded {
			reason := "Unknown"
			if j.Resource != nil {
				if c := j.Resource.Condition(model.ConditionDegraded); c != nil && c.Reason != "" {
					reason = c.Reason
				}
			}
			tel.Degraded(ctx, reason)
		}
	}
}

// backlog is what the store holds that waits, for the metrics read at scrape time.
func (f *Function) backlog(ctx context.Context) (telemetry.Backlog, error) {
	b, err := f.platform.Store.Backlog(ctx)
	if err != nil {
		return telemetry.Backlog{}, err
	}
	out := telemetry.Backlog{Jobs: make(map[string]int64, len(b.Jobs)), OldestCreated: b.OldestCreatedAge, OutboxDepth: b.OutboxDepth}
	for st, n := range b.Jobs {
		out.Jobs[st.String()] = n
	}
	return out, nil
}

func (f *Function) types() []string {
	out := make([]string, 0, len(f.routes))
	for t := range f.routes {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// Handle serves one HTTP request as Server does: CloudEvents, the functions' REST routes and
// the health endpoints. It is what func's HTTP scaffolding calls; until Start has finished it
// answers 503, so a sender retries.
func (f *Function) Handle(w http.ResponseWriter, r *http.Request) {
	h := f.handler.Load()
	if h == nil {
		http.Error(w, "starting", http.StatusServiceUnavailable)
		return
	}
	(*h).ServeHTTP(w, r)
}

// HandleEvent routes an event to the function(s) subscribed to its type; the error is a
// protocol.Result carrying the status.
func (f *Function) HandleEvent(ctx context.Context, e event.Event) (*event.Event, error) {
	reply, result := f.route(ctx, e)
	return reply, result
}

// route delivers e to every subscribed function. When several are subscribed (the cron
// tick), the answer is the most urgent: a transient failure makes the broker retry, and the
// functions that already handled the event answer the retry from memory.
func (f *Function) route(ctx context.Context, e event.Event) (*event.Event, protocol.Result) {
	// What a handler leaves for after its answer (events.AfterAnswer) runs in a goroutine the
	// process counts, so a graceful stop waits for it: one per event.
	after := &afterEvent{f: f}
	defer after.run()
	ctx = events.WithAfter(ctx, after.add)
	if e.Type() == events.Ping {
		// Every tick also publishes what the outboxes still hold (one process at a time).
		defer func() {
			if _, err := f.relay.Drain(context.WithoutCancel(ctx)); err != nil {
				logging.FromContext(ctx).Warnw("draining the outbox", "error", err)
			}
		}()
	}
	routes := f.routes[e.Type()]
	switch len(routes) {
	case 0:
		return nil, events.Invalid("event type %q is not handled by this process (functions %s; types %s)",
			e.Type(), strings.Join(f.enabled, ", "), strings.Join(f.types(), ", "))
	case 1:
		return routes[0].handler.Handle(ctx, e)
	}
	var (
		reply  *event.Event
		result protocol.Result
		worst  = -1
		notes  []string
	)
	for _, r := range routes {
		rep, res := r.handler.Handle(ctx, e)
		status := events.StatusOf(res)
		notes = append(notes, fmt.Sprintf("%s: %d %s", r.function, status, events.MessageOf(res)))
		if rank(status) > worst {
			worst, result, reply = rank(status), res, rep
		}
	}
	if worst == rank(200) {
		return reply, events.Done("%s", strings.Join(notes, "; "))
	}
	return reply, result
}

// rank orders statuses by what the sender must do: retry beats refusal beats success.
func rank(status int) int {
	switch {
	case events.IsTransient(status):
		return 2
	case status >= 400:
		return 1
	default:
		return 0
	}
}

// Server returns the HTTP server of this process: CloudEvents, the functions' REST routes and
// the health endpoints.
func (f *Function) Server() *events.Server {
	s := &events.Server{
		Handler:      events.HandlerFunc(f.route),
		Routes:       f.http,
		MaxBodyBytes: f.Runtime.MaxBodyBytes,
		NoEvents:     f.Runtime.RESTOnly,
		Telemetry:    f.platform.Telemetry,
		Ready:        func(ctx context.Context) error { _, err := f.Ready(ctx); return err },
		Logger:       f.log,
	}
	if f.eventsAuth != nil {
		s.EventsMiddleware = f.eventsAuth.Require()
	}
	return s
}

// Ready reports whether Redis answers.
func (f *Function) Ready(ctx context.Context) (bool, error) {
	if f.platform.Store == nil {
		return false, errors.New("not started")
	}
	if err := f.platform.Store.Ping(ctx); err != nil {
		return false, err
	}
	return true, nil
}

// Alive reports that the process is alive.
func (f *Function) Alive(context.Context) (bool, error) { return true, nil }

// Stop closes the Redis connection.
func (f *Function) Stop(ctx context.Context) error {
	done := make(chan struct{})
	go func() { f.after.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
	}
	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := f.platform.Telemetry.Shutdown(tctx); err != nil {
		f.log.Warnw("flushing telemetry", "error", err)
	}
	if f.platform.Redis != nil {
		return f.platform.Redis.Close()
	}
	return nil
}

// Logger is the process's logger (after Start).
func (f *Function) Logger() *zap.SugaredLogger { return f.log }
