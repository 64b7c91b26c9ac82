// Package config holds the configuration every function shares, filled from the environment
// with envconfig. Each function embeds Runtime in its own Config struct, so every knob of a
// process is visible in one place and `config/` can list them all.
package config

import (
	"fmt"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/ocm-jobs/ocm-jobs/shared/auth"
)

// Function names, as FUNCTION takes them and as the Knative Services are named.
const (
	Jobs         = "jobs"
	Incompliance = "incompliance"
	Executor     = "executor"
	StatusSync   = "statussync"
)

// Functions lists every function, in the order of the flow.
var Functions = []string{Jobs, Incompliance, Executor, StatusSync}

// Runtime is the configuration of the CloudEvents runtime every function process shares.
type Runtime struct {
	Port     int    `envconfig:"PORT" default:"8080" desc:"HTTP port the process listens on (CloudEvents, REST, health)"`
	Function string `envconfig:"FUNCTION" desc:"restrict the process to one function, or a comma-separated few: jobs, incompliance, executor, statussync (empty: all four)"`
	RESTOnly bool   `envconfig:"REST_ONLY" default:"false" desc:"serve only the REST API (/jobmanager/...) and the health paths, never CloudEvents: the public entry of an install, whose function Services are cluster-local"`
	RedisURL string `envconfig:"REDIS_URL" desc:"Redis holding job state: redis://host:port/db, redis+sentinel://host:port?master_name=NAME&addr=…, redis+cluster://host:port?addr=…"`
	Sink     string `envconfig:"K_SINK" desc:"where emitted events are sent (the broker; set by a Knative SinkBinding); empty: events are not published"`
	// SinkTokenFile is the token Knative's SinkBinding mounts when OIDC sender identity is on.
	SinkTokenFile string  `envconfig:"SINK_TOKEN_FILE" default:"/oidc/token" desc:"bearer token presented to K_SINK, read again when the file changes (Knative's SinkBinding mounts one for the broker's audience with OIDC on); no such file: no token is sent"`
	HubID         string  `envconfig:"HUB_ID" desc:"owner id of this hub; empty: the UID of the hub's ClusterManager cluster-manager"`
	HubQPS        float32 `envconfig:"HUB_QPS" default:"0" desc:"most requests per second a process sends to the hub's API server; 0: no client-side limit, the API server's priority and fairness bounds the functions (as SIG API Machinery and controller-runtime recommend: a client-side limit only caps the executor below what the API server takes)"`
	HubBurst      int     `envconfig:"HUB_BURST" default:"0" desc:"requests a process may send at once above HUB_QPS; 0: twice HUB_QPS"`

	MaxBodyBytes       int64         `envconfig:"MAX_BODY_BYTES" default:"1048576" desc:"largest request body accepted; larger bodies get 413"`
	IdempotencyTTL     time.Duration `envconfig:"IDEMPOTENCY_TTL" default:"24h" desc:"how long the answer to an event (source+id) is remembered, so a redelivery answers as the first delivery did"`
	IdempotencyPending time.Duration `envconfig:"IDEMPOTENCY_PENDING_TTL" default:"2m" desc:"how long a delivery being handled blocks a concurrent duplicate (answered 503, retried) before it counts as lost"`
	PublishRetries     int           `envconfig:"PUBLISH_RETRIES" default:"5" desc:"retries of an emitted event the sink answers 429/5xx or cannot be reached"`
	PublishBackoff     time.Duration `envconfig:"PUBLISH_BACKOFF" default:"100ms" desc:"first delay between publish retries (doubles each retry)"`
	OutboxAge          time.Duration `envconfig:"OUTBOX_AGE" default:"5s" desc:"how long an event waits in the outbox before a cron tick publishes it (the handler whose change appended it publishes it at once; the tick publishes what a failed or dead handler left)"`
	ShutdownTimeout    time.Duration `envconfig:"SHUTDOWN_TIMEOUT" default:"30s" desc:"grace period for requests in flight on SIGTERM"`
	// Events is how CloudEvents deliveries are authenticated (every function takes events).
	auth.Events
	LogLevel string `envconfig:"LOG_LEVEL" default:"info" desc:"debug, info, warn or error"`
}

// Validate checks what envconfig cannot.
func (r Runtime) Validate() error {
	for _, f := range r.functions() {
		if !IsFunction(f) {
			return fmt.Errorf("FUNCTION=%q: want one or more of %v, comma-separated, or empty", r.Function, Functions)
		}
	}
	if r.MaxBodyBytes <= 0 {
		return fmt.Errorf("MAX_BODY_BYTES=%d: must be positive", r.MaxBodyBytes)
	}
	if r.Port < 0 || r.Port > 65535 {
		return fmt.Errorf("PORT=%d: not a port", r.Port)
	}
	return nil
}

// Enabled reports whether this process serves function name.
func (r Runtime) Enabled(name string) bool {
	fs := r.functions()
	if len(fs) == 0 {
		return true
	}
	for _, f := range fs {
		if f == name {
			return true
		}
	}
	return false
}

// functions are the names FUNCTION lists.
func (r Runtime) functions() []string {
	var out []string
	for _, f := range strings.Split(r.Function, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// IsFunction reports whether name is one of the four functions.
func IsFunction(name string) bool {
	for _, f := range Functions {
		if f == name {
			return true
		}
	}
	return false
}

// Load fills spec (a pointer to a struct with envconfig tags) from the environment.
func Load(spec any) error {
	if err := envconfig.Process("", spec); err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	return nil
}

// Verdict is how a ManifestWork's status becomes a verdict (ocm.VerdictOf), for the executor
// and status sync alike.
type Verdict struct {
	SyncGrace time.Duration `envconfig:"SYNC_GRACE" default:"30s" desc:"how long a ManifestWork may report Applied=False or Available=False before it counts as failed (the work agent retries meanwhile): its job goes Degraded, a reallocation rolls back"`
}

// Policy names the manifest policy (shared/policy) the jobs function checks at intake and
// the executor again before it applies a job on its cluster.
type Policy struct {
	ManifestPolicy string `envconfig:"MANIFEST_POLICY" desc:"file (a mounted ConfigMap) with the manifest policy: which kinds in which namespaces on which clusters an application may deploy (see shared/policy); empty: the default policy (namespaced application kinds in the application's own namespace, never kube-*, open-cluster-management*, default or ocm-jobs)"`
}

// Placement names the OCM Placement that chooses clusters when nothing else does.
type Placement struct {
	DefaultPlacement   string `envconfig:"DEFAULT_PLACEMENT" desc:"OCM Placement (namespace/name or name) that chooses clusters: for components with no targets when the descriptor names no placement (jobs), and for reallocations that name no cluster (executor)"`
	PlacementNamespace string `envconfig:"PLACEMENT_NAMESPACE" default:"ocm-jobs" desc:"namespace of Placements named without one"`
}
