package events

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/protocol"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"knative.dev/pkg/logging"

	"github.com/ocm-jobs/ocm-jobs/shared/telemetry"
)

// Handler handles one CloudEvent. Its result says what the sender should do (see Done,
// Invalid, Unprocessable, Unavailable); the reply event, if any, is the answer's body.
type Handler interface {
	Handle(ctx context.Context, e event.Event) (*event.Event, protocol.Result)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, e event.Event) (*event.Event, protocol.Result)

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, e event.Event) (*event.Event, protocol.Result) {
	return f(ctx, e)
}

// Health endpoints, where Knative's func deployer expects them.
const (
	ReadinessPath = "/health/readiness"
	LivenessPath  = "/health/liveness"
)

// Server serves one process: CloudEvents on every path no other route claims, extra HTTP
// routes (the REST API), and the health endpoints.
type Server struct {
	// Handler receives every CloudEvent.
	Handler Handler
	// Routes are extra HTTP routes (ServeMux patterns); may be nil.
	Routes map[string]http.Handler
	// MaxBodyBytes caps request bodies; larger ones get 413.
	MaxBodyBytes int64
	// Ready reports whether the process can serve (e.g. Redis answers); nil means always.
	Ready func(ctx context.Context) error
	// Logger is put in every request's context.
	Logger *zap.SugaredLogger
	// EventsMiddleware, when set, wraps the CloudEvents endpoint (e.g. bearer-token checks).
	EventsMiddleware func(http.Handler) http.Handler
	// NoEvents serves no CloudEvents: every path but the routes and health is a 404 (the
	// public REST entry of an install).
	NoEvents bool
	// Telemetry, when set, serves /metrics (not with NoEvents: job counts and cluster names
	// stay inside), traces every event and REST request and counts them.
	Telemetry *telemetry.Telemetry
}

// HTTPHandler builds the process's http.Handler.
func (s *Server) HTTPHandler(ctx context.Context) (http.Handler, error) {
	if s.Logger == nil {
		s.Logger = logging.FromContext(ctx)
	}
	if s.MaxBodyBytes <= 0 {
		s.MaxBodyBytes = 1 << 20
	}
	mux := http.NewServeMux()
	mux.HandleFunc(LivenessPath, func(w http.ResponseWriter, _ *http.Request) {
		writeMessage(w, http.StatusOK, "alive")
	})
	mux.HandleFunc(ReadinessPath, func(w http.ResponseWriter, r *http.Request) {
		if s.Ready != nil {
			if err := s.Ready(r.Context()); err != nil {
				writeMessage(w, http.StatusServiceUnavailable, "not ready: "+err.Error())
				return
			}
		}
		writeMessage(w, http.StatusOK, "ready")
	})
	for pattern, h := range s.Routes {
		mux.Handle(pattern, s.traced(pattern, s.limitBody(h)))
	}
	if s.Telemetry != nil && !s.NoEvents {
		mux.Handle("GET "+telemetry.MetricsPath, s.Telemetry.Handler())
	}
	var events http.Handler = s.checkCloudEvent(s.receive)
	if s.EventsMiddleware != nil {
		events = s.EventsMiddleware(events)
	}
	if s.NoEvents {
		events = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, `{"error":"not found: this endpoint serves the REST API (/jobmanager/...) only"}`+"\n")
		})
	}
	mux.Handle("/", s.limitBody(noTextReplies(events)))
	return s.withLogger(restErrors(mux)), nil
}

// noTextReplies answers a delivery that asks for a reply (`Prefer: reply`, as Knative's broker
// filter and channels send) with an empty body when it succeeds without a reply event: the
// filter reads a 2xx body as the reply event, counts one it cannot parse as a failed delivery
// (502) and the channel retries an event that was handled. Failures keep their message, and a
// reply event (Ce- headers or a structured CloudEvent) is written as it is.
func noTextReplies(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Prefer") != "reply" {
			next.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(&replyWriter{ResponseWriter: w}, r)
	})
}

// replyWriter drops the body of a 2xx answer that is not a CloudEvent.
type replyWriter struct {
	http.ResponseWriter
	wrote, drop bool
}

func (w *replyWriter) WriteHeader(code int) {
	if !w.wrote {
		h := w.Header()
		w.wrote = true
		w.drop = code < 300 && h.Get("Ce-Id") == "" && !strings.HasPrefix(h.Get("Content-Type"), "application/cloudevents")
		if w.drop {
			h.Del("Content-Type")
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *replyWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if w.drop {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the writer underneath.
func (w *replyWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// receive handles the CloudEvent of one request (decoded and vetted by checkCloudEvent) in the
// request's own goroutine and context, and writes the answer: the result's status and message
// (plain text, as sdk-go answers), or the reply event. sdk-go's receive handler is not used:
// it hands requests to handler goroutines through one shared channel, and a sender that gave up
// before its goroutine read left a later request waiting forever, its event handled in another
// request's context.
func (s *Server) receive(w http.ResponseWriter, r *http.Request, e *event.Event) {
	ctx := r.Context()
	reply, result := s.invoke(ctx, *e)
	status := StatusOf(result)
	if reply != nil {
		if err := cehttp.WriteResponseWriter(ctx, (*binding.EventMessage)(reply), status, w); err != nil {
			logging.FromContext(ctx).Warnw("writing the reply event", "type", e.Type(), "id", e.ID(), "error", err)
		}
		return
	}
	w.WriteHeader(status)
	var hr *cehttp.Result
	if protocol.ResultAs(result, &hr) || !protocol.IsACK(result) {
		_, _ = io.WriteString(w, MessageOf(result))
	}
}

// invoke runs the handler, turning a panic into a logged stack and a 500. The event is one
// span, a child of the event's traceparent extension (else of the request's traceparent
// header), and is counted by its answer.
func (s *Server) invoke(ctx context.Context, e event.Event) (reply *event.Event, result protocol.Result) {
	if tp, ok := e.Extensions()[telemetry.ExtTraceparent].(string); ok {
		ctx = telemetry.WithTraceparent(ctx, tp)
	}
	ctx, span := s.Telemetry.Start(ctx, "event "+e.Type(), trace.SpanKindConsumer,
		attribute.String("cloudevents.event_type", e.Type()), attribute.String("cloudevents.event_source", e.Source()),
		attribute.String("cloudevents.event_id", e.ID()))
	log := logging.FromContext(ctx).With("type", e.Type(), "source", e.Source(), "id", e.ID())
	ctx = logging.WithLogger(ctx, log)
	defer func() {
		if r := recover(); r != nil {
			log.Errorw("handler panicked", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			reply, result = nil, Internal("internal error: the handler of %s panicked (see the function's log)", e.Type())
		}
		status := StatusOf(result)
		span.SetAttributes(attribute.Int("ocmjobs.answer_status", status))
		var failed error
		if status >= 500 {
			failed = fmt.Errorf("%d %s", status, MessageOf(result))
		}
		telemetry.End(span, failed)
		s.Telemetry.EventHandled(ctx, e.Type(), answerClass(status))
	}()
	reply, result = s.Handler.Handle(ctx, e)
	if status := StatusOf(result); status >= 500 {
		log.Warnw("event failed", "status", status, "error", MessageOf(result))
	} else {
		log.Debugw("event handled", "status", status)
	}
	return reply, result
}

// answerClass is what the sender of an event does with its answer.
func answerClass(status int) string {
	switch {
	case IsTransient(status):
		return telemetry.AnswerRetry
	case status >= 400:
		return telemetry.AnswerRefused
	default:
		return telemetry.AnswerDone
	}
}

// traced makes each request of a REST route one span named by the route, in the trace of the
// request's traceparent header, and counts it by route and status.
func (s *Server) traced(pattern string, next http.Handler) http.Handler {
	if s.Telemetry == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, span := s.Telemetry.Start(r.Context(), pattern, trace.SpanKindServer, attribute.String("http.route", pattern))
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, r.WithContext(ctx))
		span.SetAttributes(attribute.Int("http.response.status_code", sw.status))
		var failed error
		if sw.status >= 500 {
			failed = errors.New(http.StatusText(sw.status))
		}
		telemetry.End(span, failed)
		s.Telemetry.RESTRequest(ctx, pattern, sw.status)
	})
}

// statusWriter remembers the status a handler answered.
type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the writer underneath (flushes, deadlines).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (s *Server) withLogger(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := telemetry.FromHeader(logging.WithLogger(r.Context(), s.Logger), r.Header)
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// limitBody reads the whole body up to MaxBodyBytes, answering 413 past it, so handlers and
// the CloudEvents decoder see a complete body.
func (s *Server) limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > s.MaxBodyBytes {
			writeMessage(w, http.StatusRequestEntityTooLarge, tooLarge(r.ContentLength, s.MaxBodyBytes))
			return
		}
		if r.Body != nil {
			body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.MaxBodyBytes))
			if err != nil {
				var mbe *http.MaxBytesError
				if errors.As(err, &mbe) {
					writeMessage(w, http.StatusRequestEntityTooLarge, tooLarge(-1, s.MaxBodyBytes))
					return
				}
				writeMessage(w, http.StatusBadRequest, "reading the request body: "+err.Error())
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.ContentLength = int64(len(body))
		}
		next.ServeHTTP(w, r)
	})
}

func tooLarge(got, limit int64) string {
	size := "more than " + strconv.FormatInt(limit, 10)
	if got > 0 {
		size = strconv.FormatInt(got, 10)
	}
	return fmt.Sprintf("request body of %s bytes exceeds the limit of %d bytes (MAX_BODY_BYTES); "+
		"pass a large application descriptor by reference with the CloudEvents dataref extension (s3://bucket/key)", size, limit)
}

// checkCloudEvent decodes the request's CloudEvent and hands it to next, answering a request
// that is not a valid CloudEvent with a message saying what is wrong, before the SDK would
// answer it with a bare status.
func (s *Server) checkCloudEvent(next func(http.ResponseWriter, *http.Request, *event.Event)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			writeMessage(w, http.StatusMethodNotAllowed, "CloudEvents are POSTed; "+r.Method+" "+r.URL.Path+" is not a route")
			return
		}
		e, status, msg := decode(r)
		if status != 0 {
			writeMessage(w, status, msg)
			return
		}
		next(w, r, e)
	})
}

// decode decodes the request as a CloudEvent (reading its body); when it is not a valid one it
// returns a 4xx and a message instead.
func decode(r *http.Request) (*event.Event, int, string) {
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	binary := r.Header.Get("Ce-Specversion") != ""
	switch {
	case binary:
		var missing []string
		for _, h := range []string{"Ce-Id", "Ce-Source", "Ce-Type"} {
			if r.Header.Get(h) == "" {
				missing = append(missing, strings.ToLower(h))
			}
		}
		if len(missing) > 0 {
			return nil, http.StatusBadRequest, "not a valid CloudEvent (binary mode): missing required header(s) " + strings.Join(missing, ", ")
		}
	case ct == cloudevents.ApplicationCloudEventsBatchJSON:
		return nil, http.StatusUnsupportedMediaType, "batched CloudEvents (application/cloudevents-batch+json) are not accepted: send one event per request"
	case strings.HasPrefix(ct, "application/cloudevents"):
	default:
		return nil, http.StatusUnsupportedMediaType, "not a CloudEvent: send binary mode (headers ce-specversion, ce-id, ce-source, ce-type) " +
			"or structured mode (Content-Type: application/cloudevents+json); got Content-Type " + strconv.Quote(r.Header.Get("Content-Type")) + " and no ce-specversion header"
	}
	e, err := binding.ToEvent(r.Context(), cehttp.NewMessageFromHttpRequest(r))
	if err != nil {
		return nil, http.StatusBadRequest, "not a valid CloudEvent: " + err.Error()
	}
	if err := e.Validate(); err != nil {
		return nil, http.StatusBadRequest, "not a valid CloudEvent: " + err.Error()
	}
	return e, 0, ""
}

// writeMessage answers with msg: plain text for a success (the health endpoints), and
// `{"error": msg}` as JSON for a failure, which is what every ICOS client reads.
func writeMessage(w http.ResponseWriter, status int, msg string) {
	if status < 400 {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, msg+"\n")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// restPrefix is where the REST API lives: a path under it that no route serves is answered
// as the REST API answers, never handed to the CloudEvents endpoint.
const restPrefix = "/jobmanager/"

// restErrors answers the requests under restPrefix that no REST route serves — an unknown
// path (404) or a method the path does not take (405, with Allow) — with a JSON error, as the
// REST routes themselves do, instead of handing them to the CloudEvents endpoint (whose
// plain-text answers ICOS clients show as null).
func restErrors(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, restPrefix) {
			mux.ServeHTTP(w, r)
			return
		}
		if _, pattern := mux.Handler(r); pattern != "" && pattern != "/" {
			mux.ServeHTTP(w, r)
			return
		}
		var allowed []string
		for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
			probe := r.Clone(r.Context())
			probe.Method = m
			if _, pattern := mux.Handler(probe); pattern != "" && pattern != "/" {
				allowed = append(allowed, m)
			}
		}
		if len(allowed) > 0 {
			w.Header().Set("Allow", strings.Join(allowed, ", "))
			writeMessage(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s is not allowed on %s (allowed: %s)", r.Method, r.URL.Path, strings.Join(allowed, ", ")))
			return
		}
		writeMessage(w, http.StatusNotFound, fmt.Sprintf("no route %s %s in the Job Manager REST API", r.Method, r.URL.Path))
	})
}

// ListenAndServe serves on addr until ctx is done, then shuts down gracefully, letting
// requests in flight finish for up to grace.
func ListenAndServe(ctx context.Context, addr string, h http.Handler, grace time.Duration) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", addr, err)
	}
	return Serve(ctx, l, h, grace)
}

// Serve is ListenAndServe on a listener.
func Serve(ctx context.Context, l net.Listener, h http.Handler, grace time.Duration) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("graceful shutdown: %w", err)
	}
	return nil
}
