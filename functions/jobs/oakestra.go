package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"net/http"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/protocol"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/google/uuid"
	"knative.dev/pkg/apis"
	"sigs.k8s.io/yaml"

	"github.com/ocm-jobs/ocm-jobs/shared/events"
	"github.com/ocm-jobs/ocm-jobs/shared/model"
)

// An Oakestra SLA descriptor (sla_version v2.0) is taken where an application descriptor is:
// each application becomes a job group, each microservice a component — a Deployment (a
// batch Job for one_shot) and a Service for its ports, requests from memory and vcpus, a
// `direct` constraint's cluster as the component's target (no constraint: the Placement).
// What has no equivalent here is refused, each path listed, when it asks for something
// (non-zero, non-empty), unless the caller says to ignore it.

// oakestraSLA is the descriptor (Oakestra's SM/sla/schema.py).
type oakestraSLA struct {
	SLAVersion   string                `json:"sla_version"`
	CustomerID   string                `json:"customerID"`
	Args         []string              `json:"args"`
	Applications []oakestraApplication `json:"applications"`
}

type oakestraApplication struct {
	ApplicationID string                 `json:"applicationID"`
	Name          string                 `json:"application_name"`
	Namespace     string                 `json:"application_namespace"`
	Description   string                 `json:"application_desc"`
	Microservices []oakestraMicroservice `json:"microservices"`
}

type oakestraMicroservice struct {
	ID             string               `json:"microserviceID"`
	Name           string               `json:"microservice_name"`
	Namespace      string               `json:"microservice_namespace"`
	Virtualization string               `json:"virtualization"`
	Cmd            []string             `json:"cmd"`
	Environment    []string             `json:"environment"`
	Memory         float64              `json:"memory"`
	VCPUs          float64              `json:"vcpus"`
	Code           string               `json:"code"`
	Port           string               `json:"port"`
	OneShot        bool                 `json:"one_shot"`
	Constraints    []oakestraConstraint `json:"constraints"`
}

type oakestraConstraint struct {
	Type    string `json:"type"`
	Cluster string `json:"cluster"`
}

// oakestraKnown are the microservice fields that are read.
var oakestraKnown = map[string]bool{"microserviceID": true, "microservice_name": true, "microservice_namespace": true,
	"virtualization": true, "cmd": true, "environment": true, "memory": true, "vcpus": true, "vcpu": true, "code": true,
	"port": true, "one_shot": true, "constraints": true}

var oakestraName = regexp.MustCompile(`^[a-zA-Z0-9]{1,30}$`)

// IsOakestraSLA says whether a descriptor is an Oakestra SLA: a top-level sla_version.
func IsOakestraSLA(data []byte) bool {
	if !bytes.Contains(data, []byte("sla_version")) {
		return false
	}
	var head map[string]any
	if err := yaml.Unmarshal(data, &head); err != nil {
		return false
	}
	_, ok := head["sla_version"]
	return ok
}

// ParseOakestraSLA turns an Oakestra SLA into one ICOS application descriptor per
// application (JSON, the layout that names each manifest). Every problem of every
// application is reported at once, with its path.
func ParseOakestraSLA(data []byte, ignoreUnsupported bool) ([][]byte, *apis.FieldError) {
	var raw map[string]any
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return nil, &apis.FieldError{Message: "the Oakestra SLA does not parse as JSON or YAML: " + err.Error(), Paths: []string{apis.CurrentField}}
	}
	var sla oakestraSLA
	j, _ := json.Marshal(raw)
	if err := json.Unmarshal(j, &sla); err != nil {
		return nil, &apis.FieldError{Message: "the Oakestra SLA does not match its schema: " + err.Error(), Paths: []string{apis.CurrentField}}
	}
	var errs *apis.FieldError
	if sla.SLAVersion != "v2.0" {
		errs = errs.Also(apis.ErrInvalidValue(sla.SLAVersion, "sla_version", `only "v2.0" is supported`))
	}
	if len(sla.Applications) == 0 {
		errs = errs.Also(apis.ErrMissingField("applications"))
	}
	if len(sla.Args) > 0 && !ignoreUnsupported {
		errs = errs.Also(unsupported("args"))
	}
	rawApps, _ := raw["applications"].([]any)
	var out [][]byte
	seen := map[string]bool{}
	for i, app := range sla.Applications {
		var rawApp map[string]any
		if i < len(rawApps) {
			rawApp, _ = rawApps[i].(map[string]any)
		}
		d, ferr := oakestraApp(app, rawApp, ignoreUnsupported)
		key := strings.ToLower(app.Name + "-" + app.Namespace)
		if seen[key] {
			ferr = ferr.Also(apis.ErrGeneric("application_name and application_namespace appear twice in the SLA", "application_name"))
		}
		seen[key] = true
		errs = errs.Also(ferr.ViaFieldIndex("applications", i))
		out = append(out, d)
	}
	if errs != nil {
		return nil, errs
	}
	return out, nil
}

func unsupported(path string) *apis.FieldError {
	return &apis.FieldError{Message: "not supported by ocm-jobs (no equivalent); send it empty or zero, or ignore it with ignoreUnsupported", Paths: []string{path}}
}

// asksFor says whether a value asks for something: not null, false, zero or empty.
func asksFor(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case bool:
		return x
	case float64:
		return x != 0
	case string:
		return x != ""
	case []any:
		for _, e := range x {
			if asksFor(e) {
				return true
			}
		}
		return false
	case map[string]any:
		for _, e := range x {
			if asksFor(e) {
				return true
			}
		}
		return false
	}
	return true
}

func oakestraApp(app oakestraApplication, raw map[string]any, ignore bool) ([]byte, *apis.FieldError) {
	var errs *apis.FieldError
	if !oakestraName.MatchString(app.Name) {
		errs = errs.Also(apis.ErrInvalidValue(app.Name, "application_name", "want 1 to 30 letters or digits"))
	}
	if !oakestraName.MatchString(app.Namespace) {
		errs = errs.Also(apis.ErrInvalidValue(app.Namespace, "application_namespace", "want 1 to 30 letters or digits"))
	}
	if len(app.Microservices) == 0 {
		errs = errs.Also(apis.ErrMissingField("microservices"))
	}
	name := strings.ToLower(app.Name)
	d := map[string]any{"name": name, "description": app.Description,
		// Oakestra's usual namespace "default" is refused by the manifest policy: the
		// application's own namespace is its name and namespace.
		"namespace": strings.ToLower(app.Name + "-" + app.Namespace)}
	var components, manifests []any
	rawSvcs, _ := raw["microservices"].([]any)
	for i, ms := range app.Microservices {
		var rawMS map[string]any
		if i < len(rawSvcs) {
			rawMS, _ = rawSvcs[i].(map[string]any)
		}
		c, objs, ferr := oakestraMicroserviceComponent(ms, rawMS, ignore)
		errs = errs.Also(ferr.ViaFieldIndex("microservices", i))
		components = append(components, c)
		manifests = append(manifests, objs...)
	}
	d["components"], d["manifests"] = components, manifests
	if errs != nil {
		return nil, errs
	}
	b, err := json.Marshal(d)
	if err != nil {
		return nil, apis.ErrGeneric(err.Error())
	}
	return b, nil
}

func oakestraMicroserviceComponent(ms oakestraMicroservice, raw map[string]any, ignore bool) (map[string]any, []any, *apis.FieldError) {
	var errs *apis.FieldError
	for k, v := range raw {
		known := oakestraKnown[k]
		if !known && !ignore && asksFor(v) {
			errs = errs.Also(unsupported(k))
		}
	}
	if ms.ID != "" {
		errs = errs.Also(apis.ErrInvalidValue(ms.ID, "microserviceID", "must be empty: the id is chosen here"))
	}
	if !oakestraName.MatchString(ms.Name) {
		errs = errs.Also(apis.ErrInvalidValue(ms.Name, "microservice_name", "want 1 to 30 letters or digits"))
	}
	if !oakestraName.MatchString(ms.Namespace) {
		errs = errs.Also(apis.ErrInvalidValue(ms.Namespace, "microservice_namespace", "want 1 to 30 letters or digits"))
	}
	switch ms.Virtualization {
	case "container", "docker":
	case "":
		errs = errs.Also(apis.ErrMissingField("virtualization"))
	default:
		if !ignore {
			errs = errs.Also(apis.ErrInvalidValue(ms.Virtualization, "virtualization", "only container is supported"))
		}
	}
	if ms.Code == "" {
		errs = errs.Also(apis.ErrMissingField("code"))
	}
	if ms.Memory < 0 {
		errs = errs.Also(apis.ErrInvalidValue(ms.Memory, "memory", "want MB, not negative"))
	}
	vcpus := ms.VCPUs
	if v, ok := raw["vcpu"].(float64); ok && vcpus == 0 {
		vcpus = v // the documentation's spelling
	}
	if vcpus < 0 {
		errs = errs.Also(apis.ErrInvalidValue(ms.VCPUs, "vcpus", "want cores, not negative"))
	}
	var target map[string]any
	for i, c := range ms.Constraints {
		switch {
		case c.Type == "direct" && c.Cluster != "" && target == nil:
			target = map[string]any{"cluster_name": c.Cluster, "orchestrator": "ocm"}
		case c.Type == "direct" && c.Cluster == "":
			errs = errs.Also(apis.ErrMissingField("cluster").ViaFieldIndex("constraints", i))
		case c.Type == "direct":
			errs = errs.Also(apis.ErrGeneric("only one direct constraint (one cluster) per microservice", "type").ViaFieldIndex("constraints", i))
		case !ignore:
			errs = errs.Also(unsupported("type").ViaFieldIndex("constraints", i))
		}
	}
	if rc, ok := raw["constraints"].([]any); ok && !ignore {
		for i, c := range rc {
			if cm, ok := c.(map[string]any); ok && asksFor(cm["node"]) {
				errs = errs.Also(unsupported("node").ViaFieldIndex("constraints", i))
			}
		}
	}
	ports, ferr := oakestraPorts(ms.Port)
	errs = errs.Also(ferr)
	if errs != nil {
		return nil, nil, errs
	}
	name := strings.ToLower(ms.Name)
	labels := map[string]any{"app": name}
	container := map[string]any{"name": name, "image": ms.Code}
	if len(ms.Cmd) > 0 {
		container["command"] = ms.Cmd
	}
	var env []any
	for _, e := range ms.Environment {
		k, v, _ := strings.Cut(e, "=")
		env = append(env, map[string]any{"name": k, "value": v})
	}
	if len(env) > 0 {
		container["env"] = env
	}
	requests := map[string]any{}
	if ms.Memory > 0 {
		requests["memory"] = strconv.FormatFloat(ms.Memory, 'f', -1, 64) + "Mi"
	}
	if vcpus > 0 {
		requests["cpu"] = strconv.FormatFloat(vcpus, 'f', -1, 64)
	}
	if len(requests) > 0 {
		container["resources"] = map[string]any{"requests": requests}
	}
	var cports []any
	for _, p := range ports {
		cports = append(cports, map[string]any{"containerPort": p.target, "protocol": p.protocol})
	}
	if len(cports) > 0 {
		container["ports"] = cports
	}
	pod := map[string]any{"containers": []any{container}}
	var workload map[string]any
	if ms.OneShot {
		pod["restartPolicy"] = "Never"
		workload = map[string]any{"apiVersion": "batch/v1", "kind": "Job", "metadata": map[string]any{"name": name, "labels": labels},
			"spec": map[string]any{"backoffLimit": 0, "template": map[string]any{"metadata": map[string]any{"labels": labels}, "spec": pod}}}
	} else {
		workload = map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": map[string]any{"name": name, "labels": labels},
			"spec": map[string]any{"replicas": 1, "selector": map[string]any{"matchLabels": labels},
				"template": map[string]any{"metadata": map[string]any{"labels": labels}, "spec": pod}}}
	}
	refs := []any{map[string]any{"name": name + "-workload"}}
	objs := []any{map[string]any{"name": name + "-workload", "manifest": workload}}
	if len(ports) > 0 {
		var sp []any
		for i, p := range ports {
			sp = append(sp, map[string]any{"name": fmt.Sprintf("p%d-%s", i, strings.ToLower(p.protocol)), "port": p.port, "targetPort": p.target, "protocol": p.protocol})
		}
		svc := map[string]any{"apiVersion": "v1", "kind": "Service", "metadata": map[string]any{"name": name, "labels": labels},
			"spec": map[string]any{"selector": labels, "ports": sp}}
		refs = append(refs, map[string]any{"name": name + "-service"})
		objs = append(objs, map[string]any{"name": name + "-service", "manifest": svc})
	}
	c := map[string]any{"name": name, "manifests": refs}
	if target != nil {
		c["targets"] = target
	}
	return c, objs, nil
}

type oakestraPort struct {
	port, target int
	protocol     string
}

// oakestraPorts reads `port`: entries "host:container[/proto]" (or one port) separated by ";".
func oakestraPorts(s string) ([]oakestraPort, *apis.FieldError) {
	var out []oakestraPort
	for _, e := range strings.Split(s, ";") {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		spec, proto, _ := strings.Cut(e, "/")
		p := oakestraPort{protocol: strings.ToUpper(proto)}
		if p.protocol == "" {
			p.protocol = "TCP"
		}
		host, cont, two := strings.Cut(spec, ":")
		var err1, err2 error
		p.port, err1 = strconv.Atoi(host)
		p.target = p.port
		if two {
			p.target, err2 = strconv.Atoi(cont)
		}
		if err1 != nil || err2 != nil || p.port < 1 || p.port > 65535 || p.target < 1 || p.target > 65535 || (p.protocol != "TCP" && p.protocol != "UDP") {
			return nil, apis.ErrInvalidValue(e, "port", `want "host:container[/tcp|udp]" entries separated by ";", or one port`)
		}
		out = append(out, p)
	}
	return out, nil
}

// createOakestra creates one group per application of an Oakestra SLA: every application is
// converted and checked (limits, manifest policy) before the first is stored, so an SLA with
// one bad application stores nothing. id, when set (an event's group id), derives each
// group's id, so a redelivery finds the groups it made.
func (s *service) createOakestra(ctx context.Context, data []byte, id, by string, ignoreUnsupported bool) ([]*model.JobGroup, *Failure) {
	descs, ferr := ParseOakestraSLA(data, ignoreUnsupported)
	if ferr != nil {
		return nil, fail(http.StatusUnprocessableEntity, "the Oakestra SLA cannot be deployed as it is: %v", ferr)
	}
	for i, d := range descs {
		if _, fl := s.parse(d); fl != nil {
			return nil, fail(fl.Status, "applications[%d]: %s", i, fl.Message)
		}
	}
	var out []*model.JobGroup
	for i, d := range descs {
		gid := id
		if id != "" && i > 0 {
			gid = uuid.NewSHA1(uuid.NameSpaceURL, []byte(id+"/"+strconv.Itoa(i))).String()
		}
		g, fl := s.createGroup(ctx, d, gid, by)
		if fl != nil {
			return out, fl
		}
		out = append(out, g)
	}
	return out, nil
}

// ExtIgnoreUnsupported is the create event's extension that ignores an Oakestra SLA's fields
// with no equivalent ("true"), as ?ignoreUnsupported=true does for POST /groups.
const ExtIgnoreUnsupported = "ignoreunsupported"

// createOakestra is POST /groups with an Oakestra SLA: 201 with the group (one application)
// or the list of groups (several).
func (f *Function) createOakestra(w http.ResponseWriter, r *http.Request, body []byte) {
	ignore, _ := strconv.ParseBool(r.URL.Query().Get("ignoreUnsupported"))
	gs, fl := f.svc.createOakestra(r.Context(), body, "", caller(r), ignore)
	if len(gs) == 1 {
		answer(w, http.StatusCreated, gs[0], fl, false)
		return
	}
	answer(w, http.StatusCreated, gs, fl, len(gs) > 0)
}

// createOakestraEvent is a create event carrying an Oakestra SLA: the reply's data is the
// list of groups.
func (f *Function) createOakestraEvent(ctx context.Context, e event.Event, data []byte) (*event.Event, protocol.Result) {
	ignore, _ := strconv.ParseBool(fmt.Sprint(e.Extensions()[ExtIgnoreUnsupported]))
	gs, fl := f.svc.createOakestra(ctx, data, groupID(e.Source(), e.ID()), e.Source(), ignore)
	if fl != nil {
		status := fl.Status
		if status == http.StatusConflict {
			status = http.StatusServiceUnavailable
		}
		return nil, cehttp.NewResult(status, "%s", fl.Message)
	}
	reply := event.New()
	reply.SetID(e.ID())
	reply.SetSource(events.Source(f.svc.hubID, Name))
	reply.SetType("eu.icos.jobgroup.accepted.v1")
	if err := reply.SetData(cloudevents.ApplicationJSON, gs); err != nil {
		return nil, events.Internal("encoding the groups: %v", err)
	}
	return &reply, events.Done("%d groups from an Oakestra SLA", len(gs))
}
