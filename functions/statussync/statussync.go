// Package statussync is the status sync function: it reads the status of this hub's ManifestWorks and brings it back into resource conditions and job state.
package statussync

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
const Name = config.StatusSync

// Config is the statussync function's configuration, from the environment.
type Config struct {
	config.Runtime
}

// Types are the event types the statussync function handles.
var Types = []string{events.JobProgressing, events.Ping}

// Function is the statussync function.
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
	return nil, events.NotImplemented("function %s received %s; handling it arrives with issue 6", Name, e.Type())
}
