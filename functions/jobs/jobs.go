// Package jobs is the job creation function: it parses application descriptors, resolves
// targets, stores a job group with one job per component, and serves the ICOS Job Manager
// REST API.
package jobs

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/protocol"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/redis/go-redis/v9"
	"knative.dev/pkg/logging"
	"sigs.k8s.io/yaml"

	"github.com/ocm-jobs/ocm-jobs/shared/auth"
	"github.com/ocm-jobs/ocm-jobs/shared/config"
	"github.com/ocm-jobs/ocm-jobs/shared/events"
	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/ocm"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
)

// Name is the function's name (FUNCTION, Knative Service suffix).
const Name = config.Jobs

// Config is the jobs function's configuration, from the environment.
type Config struct {
	config.Runtime
	config.Store
	auth.Config
	config.Placement
	MatchmakingURL string `envconfig:"MATCHMAKING_URL" desc:"ICOS matchmaker asked for targets when neither the component nor a Placement gives one (POST $MATCHMAKING_URL/matchmake)"`
}

// Types are the event types the jobs function handles (and the cron tick, to re-resolve
// the targets of jobs still awaiting one).
var Types = []string{events.JobGroupCreate, events.JobGroupUpdate, events.JobGroupStop, events.JobGroupStart, events.JobGroupDelete, events.Ping}

// Function is the jobs function.
type Function struct {
	cfg      Config
	svc      *service
	verifier *auth.Verifier
}

// New builds the function: the store on rdb, the hub from KUBECONFIG or in-cluster (for
// Placements; without a hub, components need their own targets or a matchmaker).
func New(ctx context.Context, cfg Config, rdb redis.UniversalClient, pub events.Publisher) (*Function, error) {
	st, err := store.New(rdb, cfg.Store.Options())
	if err != nil {
		return nil, err
	}
	v, err := auth.NewVerifier(cfg.Config)
	if err != nil {
		return nil, err
	}
	t := &Targeter{DefaultPlacement: cfg.DefaultPlacement, PlacementNamespace: cfg.PlacementNamespace, MatchmakingURL: cfg.MatchmakingURL}
	log := logging.FromContext(ctx)
	hubID := cfg.HubID
	if rc, err := ocm.RestConfig(); err == nil {
		if t.Hub, err = ocm.NewHub(rc); err != nil {
			return nil, err
		}
		if id, err := t.Hub.HubID(ctx, cfg.HubID); err == nil {
			hubID = id
		}
	} else {
		log.Warnw("no hub API server: Placements cannot be used to choose targets", "error", err)
	}
	return &Function{cfg: cfg, verifier: v, svc: &service{store: st, targeter: t, publisher: pub, hubID: hubID}}, nil
}

// Store is the function's store (for the REST API of the other functions in this process).
func (f *Function) Store() *store.Store { return f.svc.store }

// Handle handles a job group event.
func (f *Function) Handle(ctx context.Context, e event.Event) (*event.Event, protocol.Result) {
	by := e.Source()
	var (
		g    *model.JobGroup
		fail *Failure
	)
	switch e.Type() {
	case events.Ping:
		n, err := f.svc.retarget(ctx)
		if err != nil {
			return nil, events.Unavailable("re-resolving targets: %v", err)
		}
		return nil, events.Done("%d jobs got a target", n)
	case events.JobGroupCreate:
		data, err := descriptorData(e)
		if err != nil {
			return nil, events.Unprocessable("%v", err)
		}
		g, fail = f.svc.createGroup(ctx, data, groupID(e.Source(), e.ID()), by)
	case events.JobGroupUpdate:
		id, data, err := updateData(e)
		if err != nil {
			return nil, events.Unprocessable("%v", err)
		}
		g, fail = f.svc.updateGroup(ctx, id, data, by)
	case events.JobGroupStop, events.JobGroupStart, events.JobGroupDelete:
		id, err := groupRef(e)
		if err != nil {
			return nil, events.Unprocessable("%v", err)
		}
		switch e.Type() {
		case events.JobGroupStop:
			g, fail = f.svc.stopGroup(ctx, id, by)
		case events.JobGroupStart:
			g, fail = f.svc.startGroup(ctx, id, by)
		default:
			if fail = f.svc.deleteGroup(ctx, id, by); fail == nil {
				return nil, events.Done("group %s deleted", id)
			}
		}
	default:
		return nil, events.Invalid("the jobs function does not handle %s", e.Type())
	}
	if fail != nil {
		status := fail.Status
		// A group event about jobs still being executed succeeds later: let the broker retry.
		if status == http.StatusConflict && e.Type() != events.JobGroupDelete {
			status = http.StatusServiceUnavailable
		}
		return nil, cehttp.NewResult(status, "%s", fail.Message)
	}
	reply := event.New()
	reply.SetID(e.ID())
	reply.SetSource(events.Source(f.svc.hubID, Name))
	// A reply type no Trigger subscribes to: the broker drops it after the sender reads it.
	reply.SetType("eu.icos.jobgroup.accepted.v1")
	reply.SetSubject(g.ID)
	reply.SetExtension(events.ExtJobGroupID, g.ID)
	if err := reply.SetData(cloudevents.ApplicationJSON, g); err != nil {
		return nil, events.Internal("encoding the group: %v", err)
	}
	return &reply, events.Done("group %s: %d jobs", g.ID, len(g.Jobs))
}

// descriptorData returns an event's descriptor: YAML or JSON data. (A descriptor passed by
// reference, dataref=s3://…, is fetched by the claim-check step; see issue 8.)
func descriptorData(e event.Event) ([]byte, error) {
	if ref, ok := e.Extensions()[events.ExtDataRef]; ok {
		return nil, fmt.Errorf("descriptors passed by reference (dataref %v) need an object store, which this deployment does not configure", ref)
	}
	if len(e.Data()) == 0 {
		return nil, fmt.Errorf("the event carries no application descriptor")
	}
	ct := e.DataContentType()
	if ct != "" && !strings.Contains(ct, "yaml") && !strings.Contains(ct, "json") && !strings.HasPrefix(ct, "text/") {
		return nil, fmt.Errorf("datacontenttype %q: send the descriptor as application/yaml or application/json", ct)
	}
	return e.Data(), nil
}

// groupRef reads {"id": "<group id>"} (or the id as the event subject).
func groupRef(e event.Event) (string, error) {
	var ref struct {
		ID string `json:"id"`
	}
	if len(e.Data()) > 0 {
		if err := yaml.Unmarshal(e.Data(), &ref); err != nil {
			return "", fmt.Errorf("data is not {\"id\": \"<group id>\"}: %v", err)
		}
	}
	if ref.ID == "" {
		ref.ID = e.Subject()
	}
	if ref.ID == "" {
		return "", fmt.Errorf("missing field(s): id (the job group id, in the data or as the event subject)")
	}
	return ref.ID, nil
}

// updateData reads an update: {"id": …, "descriptor": <YAML string or object>}, or the
// descriptor as data with the group id as the event subject.
func updateData(e event.Event) (string, []byte, error) {
	var u struct {
		ID         string          `json:"id"`
		Descriptor json.RawMessage `json:"descriptor"`
	}
	if err := yaml.Unmarshal(e.Data(), &u); err == nil && u.ID != "" && len(u.Descriptor) > 0 {
		var s string
		if json.Unmarshal(u.Descriptor, &s) == nil {
			return u.ID, []byte(s), nil
		}
		return u.ID, u.Descriptor, nil
	}
	if e.Subject() == "" {
		return "", nil, fmt.Errorf("an update names its group: data {\"id\": …, \"descriptor\": …}, or the descriptor as data and the group id as subject")
	}
	data, err := descriptorData(e)
	return e.Subject(), data, err
}
