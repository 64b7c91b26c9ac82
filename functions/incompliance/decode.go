package incompliance

import (
	"encoding/json"
	"strings"

	"knative.dev/pkg/apis"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
)

// extras are the remediation details a policy may carry beside the ICOS incompliance, as
// top-level fields (or as extraLabels, the Policy Manager's only free-form field).
// serverOnly are the fields of a recorded incompliance that only the server sets.
var serverOnly = []string{"outcome", "reason", "job_id", "received_at"}

type extras struct {
	Patch     json.RawMessage `json:"patch,omitempty"`
	Image     string          `json:"image,omitempty"`
	Workload  string          `json:"workload,omitempty"`
	Target    *model.Target   `json:"target,omitempty"`
	TargetRaw string          `json:"targetCluster,omitempty"`
}

// Request is a decoded incompliance and what its remediation needs.
type Request struct {
	Incompliance model.Incompliance
	Remediation  model.Remediation
}

// Decode reads an incompliance in the Job Manager's shape (subject.resourceId) or the Policy
// Manager's webhook shape (subject.appInstance + subject.appComponent), and the remediation's
// payload: a patch document (`patch`, a JSON object or a string of JSON/YAML), an image
// (`image`), a workload (`workload`, "Kind/name") and a target cluster (`target` or
// `targetCluster`), each also accepted as the extraLabels of the same name. Every problem is
// returned at once.
func Decode(data []byte) (*Request, *apis.FieldError) {
	var in model.Incompliance
	if err := json.Unmarshal(data, &in); err != nil {
		return nil, &apis.FieldError{Message: "the incompliance is not valid JSON: " + err.Error(), Paths: []string{apis.CurrentField}}
	}
	var fields map[string]json.RawMessage
	_ = json.Unmarshal(data, &fields)
	var serverFields *apis.FieldError
	for _, f := range serverOnly {
		if _, set := fields[f]; set {
			serverFields = serverFields.Also(&apis.FieldError{Message: "set by the server, not the sender", Paths: []string{f}})
		}
	}
	if serverFields != nil {
		return nil, serverFields
	}
	var p extras
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, &apis.FieldError{Message: "the remediation details are not valid: " + err.Error(), Paths: []string{apis.CurrentField}}
	}
	errs := in.Validate()
	s := in.Subject
	if s.ResourceID == "" && (s.AppInstance == "" || s.AppComponent == "") {
		errs = errs.Also(&apis.FieldError{
			Message: "the subject names no job: send subject.resourceId (a job id), or subject.appInstance (the job group id) and subject.appComponent",
			Paths:   []string{"subject"},
		})
	}
	label := func(k string) string { return in.ExtraLabels[k] }
	// The job's remediation is the sub-type the name means (migrate is a reallocation); the
	// record keeps the name as sent.
	r := model.Remediation{IncomplianceID: in.ID, Action: in.Remediation.Canonical(), Image: firstOf(p.Image, label("image")),
		Workload: firstOf(p.Workload, label("workload"))}
	if len(p.Patch) > 0 && string(p.Patch) != "null" {
		var str string
		if json.Unmarshal(p.Patch, &str) == nil {
			r.Patch = str
		} else {
			r.Patch = string(p.Patch)
		}
	} else if l := label("patch"); l != "" {
		r.Patch = l
	}
	switch {
	case p.Target != nil:
		r.Target = p.Target
	case firstOf(p.TargetRaw, label("targetCluster"), label("target_cluster")) != "":
		r.Target = &model.Target{ClusterName: firstOf(p.TargetRaw, label("targetCluster"), label("target_cluster")), Orchestrator: model.OCM}
	}
	if r.Target != nil && r.Target.Orchestrator == "" {
		r.Target.Orchestrator = model.OCM
	}
	if r.Workload != "" && !strings.Contains(r.Workload, "/") {
		errs = errs.Also(apis.ErrInvalidValue(r.Workload, "workload", `want "Kind/name", e.g. "Deployment/web"`))
	}
	if in.Remediation.ValidRemediation() {
		// What the remediation needs; reallocation may leave the target to the Placement,
		// so only a named target is checked here.
		switch in.Remediation.Canonical() {
		case model.Patch:
			if r.Patch == "" {
				errs = errs.Also(apis.ErrMissingField("patch"))
			}
		case model.Reallocation:
			if r.Target != nil {
				errs = errs.Also(r.Target.Validate().ViaField("target"))
			}
		}
	}
	if errs != nil {
		return nil, errs
	}
	return &Request{Incompliance: in, Remediation: r}, nil
}

func firstOf(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}
