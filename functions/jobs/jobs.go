// Package jobs is the job creation function: it parses application descriptors, resolves
// targets, stores a job group with one job per component, and serves the ICOS Job Manager
// REST API.
package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/protocol"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"knative.dev/pkg/logging"
	"sigs.k8s.io/yaml"

	"github.com/ocm-jobs/ocm-jobs/shared/auth"
	"github.com/ocm-jobs/ocm-jobs/shared/config"
	"github.com/ocm-jobs/ocm-jobs/shared/events"
	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/objectstore"
	"github.com/ocm-jobs/ocm-jobs/shared/platform"
	"github.com/ocm-jobs/ocm-jobs/shared/policy"
)

// Name is the function's name (FUNCTION, Knative Service suffix).
const Name = config.Jobs

// Config is the jobs function's configuration, from the environment.
type Config struct {
	config.Runtime
	config.Store
	auth.Config
	config.Placement
	config.Policy
	config.PolicyManager
	MaxDataRefBytes       int64  `envconfig:"MAX_DATAREF_BYTES" default:"67108864" desc:"largest application descriptor read through a dataref (s3://bucket/key); a larger object is refused (422)"`
	DataRefAllowed        string `envconfig:"DATAREF_ALLOWED" desc:"where a dataref may point: comma-separated bucket or bucket/prefix; empty: S3_BUCKET. Any other bucket, or a key with empty, . or .. path elements, is refused (422)"`
	ArchivePrefix         string `envconfig:"ARCHIVE_PREFIX" default:"archive" desc:"key prefix of archived job groups in S3_BUCKET: <prefix>/<yyyy>/<mm>/<group id>.json; without S3_BUCKET deleted groups are not archived"`
	MatchmakingURL        string `envconfig:"MATCHMAKING_URL" desc:"ICOS matchmaker asked for targets when neither the component nor a Placement gives one (POST $MATCHMAKING_URL/matchmake)"`
	MaxComponents         int    `envconfig:"MAX_COMPONENTS" default:"100" desc:"most components (jobs) one application may have; more is refused (422)"`
	MaxComponentManifests int    `envconfig:"MAX_COMPONENT_MANIFESTS" default:"100" desc:"most manifests one component may have; more is refused (422)"`
	MaxExpandedBytes      int    `envconfig:"MAX_EXPANDED_BYTES" default:"8388608" desc:"most bytes all components' manifests may total, a manifest shared by several components counted once per component (what the jobs will hold); more is refused (422) before anything is copied"`
}

// Types are the event types the jobs function handles (and the cron tick, to re-resolve
// the targets of jobs still awaiting one).
var Types = []string{events.JobGroupCreate, events.JobGroupUpdate, events.JobGroupStop, events.JobGroupStart, events.JobGroupDelete, events.JobGroupRestart, events.Ping}

// Function is the jobs function.
type Function struct {
	cfg      Config
	svc      *service
	verifier *auth.Verifier
	// objects fetches descriptors passed by reference; nil without an object store.
	objects *objectstore.Client
	// bucket is the install's own bucket (S3_BUCKET).
	bucket string
}

// New builds the function on the platform's store, hub (for Placements; without a hub,
// components need their own targets or a matchmaker) and object store.
func New(ctx context.Context, cfg Config, p platform.Platform) (*Function, error) {
	v, err := auth.NewVerifier(cfg.Config)
	if err != nil {
		return nil, err
	}
	t := &Targeter{Hub: p.Hub, DefaultPlacement: cfg.DefaultPlacement, PlacementNamespace: cfg.PlacementNamespace, MatchmakingURL: cfg.MatchmakingURL}
	if p.Hub == nil {
		logging.FromContext(ctx).Warnw("no hub API server: Placements cannot be used to choose targets", "error", p.NoHub)
	}
	st := p.Store.As(events.Source(p.HubID, Name))
	limits := Limits{Components: cfg.MaxComponents, ComponentManifests: cfg.MaxComponentManifests, ExpandedBytes: cfg.MaxExpandedBytes}
	pol, err := policy.Load(cfg.ManifestPolicy)
	if err != nil {
		return nil, err
	}
	pm, err := newSender(ctx, cfg.PolicyManager, st)
	if err != nil {
		return nil, err
	}
	f := &Function{cfg: cfg, verifier: v, svc: &service{limits: limits, policy: pol, store: st, targeter: t, hubID: p.HubID, pm: pm}, objects: p.Objects, bucket: p.Bucket}
	if p.Objects != nil {
		if cfg.MaxDataRefBytes <= 0 {
			return nil, fmt.Errorf("MAX_DATAREF_BYTES=%d: must be positive", cfg.MaxDataRefBytes)
		}
		if p.Bucket != "" && cfg.ArchivePrefix == "" {
			return nil, fmt.Errorf("ARCHIVE_PREFIX: must not be empty with S3_BUCKET set")
		}
		if p.Bucket != "" {
			f.svc.archiver = &archiver{store: st, objects: p.Objects, bucket: p.Bucket, prefix: cfg.ArchivePrefix}
		}
	}
	return f, nil
}

// Handle handles a job group event.
func (f *Function) Handle(ctx context.Context, e event.Event) (*event.Event, protocol.Result) {
	by := e.Source()
	var (
		g    *model.JobGroup
		fail *Failure
	)
	switch e.Type() {
	case events.Ping:
		pm := f.svc.policyManagerTick(ctx)
		n, err := f.svc.retarget(ctx)
		if err != nil {
			return nil, events.Unavailable("re-resolving targets: %v", err)
		}
		orders, err := f.svc.carryOut(ctx)
		if err != nil {
			return nil, events.Unavailable("carrying out pending group orders: %v", err)
		}
		if f.svc.archiver == nil {
			return nil, events.Done("%d jobs got a target, %d pending orders carried out%s", n, orders, pm)
		}
		// A failed archive is kept for the next tick; a redelivered tick would do no better.
		archived, err := f.svc.archiver.sweep(ctx, f.svc)
		if err != nil {
			logging.FromContext(ctx).Warnw("archiving deleted groups: some are kept for the next tick", "error", err)
		}
		return nil, events.Done("%d jobs got a target, %d groups archived%s", n, archived, pm)
	case events.JobGroupCreate:
		data, res := f.descriptorData(ctx, e)
		if res != nil {
			return nil, res
		}
		if IsOakestraSLA(data) {
			return f.createOakestraEvent(ctx, e, data)
		}
		rollout, fl := rolloutOf(e)
		if fl != nil {
			return nil, events.Unprocessable("%s", fl.Message)
		}
		g, fail = f.svc.createGroupRolledOut(ctx, data, groupID(e.Source(), e.ID()), by, rollout)
	case events.JobGroupUpdate:
		id, data, res := f.updateData(ctx, e)
		if res != nil {
			return nil, res
		}
		rollout, fl := rolloutOf(e)
		if fl != nil {
			return nil, events.Unprocessable("%s", fl.Message)
		}
		g, fail = f.svc.updateGroupRolledOut(ctx, id, data, by, rollout)
	case events.JobGroupRestart:
		id, component, err := restartRef(e)
		if err != nil {
			return nil, events.Unprocessable("%v", err)
		}
		g, fail = f.svc.restartGroup(ctx, id, component, eventOrder(e.Source(), e.ID()), by)
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
	if fail != nil && fail.Status == http.StatusAccepted {
		return nil, events.Done("%s", fail.Message)
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

// descriptorData returns an event's descriptor: YAML or JSON data, or the object its
// dataref extension names (s3://bucket/key: the claim check, for descriptors larger than a
// broker carries). A reference that cannot be read for good — no such object, no access, too
// large, not matching its content address — is 422; an unreachable object store is 503, so
// the broker retries.
func (f *Function) descriptorData(ctx context.Context, e event.Event) ([]byte, protocol.Result) {
	if ref, ok := e.Extensions()[events.ExtDataRef]; ok {
		return f.fetchDescriptor(ctx, fmt.Sprint(ref))
	}
	if len(e.Data()) == 0 {
		return nil, events.Unprocessable("the event carries no application descriptor")
	}
	ct := e.DataContentType()
	if ct != "" && !strings.Contains(ct, "yaml") && !strings.Contains(ct, "json") && !strings.HasPrefix(ct, "text/") {
		return nil, events.Unprocessable("datacontenttype %q: send the descriptor as application/yaml or application/json", ct)
	}
	return e.Data(), nil
}

// fetchDescriptor reads the descriptor a dataref names, at most MAX_DATAREF_BYTES of it.
// Whether it is a descriptor is decided by the parser, as for one carried inline.
func (f *Function) fetchDescriptor(ctx context.Context, dataref string) ([]byte, protocol.Result) {
	if f.objects == nil {
		return nil, events.Unprocessable("descriptors passed by reference (dataref %s) need an object store, which this deployment does not configure (S3_ENDPOINT, S3_BUCKET)", dataref)
	}
	ref, err := objectstore.ParseRef(dataref)
	if err != nil {
		return nil, events.Unprocessable("%v", err)
	}
	if !f.datarefAllowed(ref) {
		return nil, events.Unprocessable("dataref %s: descriptors are read only from %s (DATAREF_ALLOWED)", dataref, strings.Join(f.datarefPlaces(), ", "))
	}
	data, err := f.objects.Get(ctx, ref, f.cfg.MaxDataRefBytes)
	switch {
	case errors.Is(err, objectstore.ErrUnavailable):
		return nil, events.Unavailable("fetching the descriptor: %v", err)
	case err != nil:
		return nil, events.Unprocessable("fetching the descriptor: %v", err)
	case len(data) == 0:
		return nil, events.Unprocessable("dataref %s: the object is empty, not an application descriptor", dataref)
	}
	return data, nil
}

// datarefPlaces are where a dataref may point: DATAREF_ALLOWED (bucket or bucket/prefix,
// comma-separated), else the install's own bucket.
func (f *Function) datarefPlaces() []string {
	var out []string
	for _, p := range strings.Split(f.cfg.DataRefAllowed, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	if len(out) == 0 && f.bucket != "" {
		out = []string{f.bucket}
	}
	return out
}

// datarefAllowed says whether a dataref points inside an allowed bucket and prefix. The key
// is taken as it is: a "..", "." or empty path element never counts as inside a prefix.
func (f *Function) datarefAllowed(ref objectstore.Ref) bool {
	for _, el := range strings.Split(ref.Key, "/") {
		if el == "" || el == "." || el == ".." {
			return false
		}
	}
	for _, place := range f.datarefPlaces() {
		bucket, prefix, _ := strings.Cut(place, "/")
		if ref.Bucket == bucket && strings.HasPrefix(ref.Key, prefix) {
			return true
		}
	}
	return false
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
// descriptor as data (or by dataref) with the group id as the event subject.
func (f *Function) updateData(ctx context.Context, e event.Event) (string, []byte, protocol.Result) {
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
		return "", nil, events.Unprocessable("an update names its group: data {\"id\": …, \"descriptor\": …}, or the descriptor as data and the group id as subject")
	}
	data, res := f.descriptorData(ctx, e)
	return e.Subject(), data, res
}
