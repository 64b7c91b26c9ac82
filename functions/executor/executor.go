// Package executor is the deployment execution function: it promotes jobs to this hub (atomic, fenced) and executes them as ManifestWorks on the OCM hub.
package executor

import (
	"context"
	"net/http"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/protocol"
	"github.com/redis/go-redis/v9"

	"github.com/ocm-jobs/ocm-jobs/shared/config"
	"github.com/ocm-jobs/ocm-jobs/shared/events"
)

// Name is the function's name (FUNCTION, Knative Service suffix).
const Name = config.Executor

// Config is the executor function's configuration, from the environment.
type Config struct {
	config.Runtime
}

// Types are the event types the executor function handles.
var Types = []string{events.JobCreated, events.Ping}

// Function is the executor function.
type Function struct {
	cfg       Config
	redis     redis.UniversalClient
	publisher events.Publisher
}

// New builds the function from its configuration.
func New(_ context.Context, cfg Config, rdb redis.UniversalClient, pub events.Publisher) (*Function, error) {
	return &Function{cfg: cfg, redis: rdb, publisher: pub}, nil
}

// Routes are the function's HTTP routes besides CloudEvents.
func (f *Function) Routes() map[string]http.Handler { return nil }

// Handle handles one event routed here by its type.
func (f *Function) Handle(_ context.Context, e event.Event) (*event.Event, protocol.Result) {
	return nil, events.NotImplemented("function %s received %s; handling it arrives with issue 5", Name, e.Type())
}
