// Package incompliance is the incompliance intake function: it records policy incompliances and turns each into a remediation (UpdateDeployment) job, de-duplicating alert storms.
package incompliance

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
const Name = config.Incompliance

// Config is the incompliance function's configuration, from the environment.
type Config struct {
	config.Runtime
}

// Types are the event types the incompliance function handles.
var Types = []string{events.PolicyIncompliance}

// Function is the incompliance function.
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
	return nil, events.NotImplemented("function %s received %s; handling it arrives with issue 4", Name, e.Type())
}
