package model

import (
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"knative.dev/pkg/apis"
)

// Condition is a resource condition, in the shape and with the semantics of metav1.Condition
// (ICOS types Progressing, Applied, Available, Degraded; status True, False or Unknown).
type Condition = metav1.Condition

// The ICOS condition types.
const (
	ConditionProgressing = "Progressing"
	ConditionApplied     = "Applied"
	ConditionAvailable   = "Available"
	ConditionDegraded    = "Degraded"
)

// Reasons of the Progressing=False condition of a Created job that waits to be placed. They
// describe a job that is not executed yet, so status sync drops them once the job runs.
const (
	// ReasonAwaitingTarget: no target source (component, Placement, matchmaker) gave the job a
	// cluster yet.
	ReasonAwaitingTarget = "AwaitingTarget"
	// ReasonNoManagingHub: no hub sharing this store manages the job's cluster.
	ReasonNoManagingHub = "NoManagingHub"
)

// Waiting reports whether c says a Created job waits to be placed.
func Waiting(c Condition) bool {
	return c.Type == ConditionProgressing && (c.Reason == ReasonAwaitingTarget || c.Reason == ReasonNoManagingHub)
}

// Resource is what a job deployed and how it is doing (ICOS `Resource`), plus what status
// sync reads from the job's ManifestWork.
type Resource struct {
	ID           string      `json:"id"`
	JobID        string      `json:"job_id"`
	ResourceUUID string      `json:"resource_uuid"`
	ResourceName string      `json:"resource_name"`
	Conditions   []Condition `json:"conditions"`

	// ClusterName is the managed cluster the ManifestWork is for.
	ClusterName string `json:"cluster_name,omitempty"`
	// ManifestWorkName and ManifestWorkUID name the ManifestWork on the hub.
	ManifestWorkName string `json:"manifestwork_name,omitempty"`
	ManifestWorkUID  string `json:"manifestwork_uid,omitempty"`
	// Workloads are the status feedback values per workload (replica counts).
	Workloads []WorkloadStatus `json:"workloads,omitempty"`
	// ReportedBy is the deployment manager (owner id) that reported on the job through the
	// REST API: it executed the job and its reports are the job's verdict; status sync only
	// mirrors the ManifestWork it named (or created from resource_name) onto the resource.
	ReportedBy string `json:"reported_by,omitempty"`
}

// WorkloadStatus is the status feedback of one workload (Deployment, StatefulSet) of a job.
type WorkloadStatus struct {
	Kind              string `json:"kind"`
	Namespace         string `json:"namespace,omitempty"`
	Name              string `json:"name"`
	Replicas          *int64 `json:"replicas,omitempty"`
	ReadyReplicas     *int64 `json:"readyReplicas,omitempty"`
	AvailableReplicas *int64 `json:"availableReplicas,omitempty"`
}

// Identified is the resource of job j with its identity complete (a copy when it changes):
// id and job_id the job's id, resource_uuid the job's id (how a deployment manager that knows
// only the resource finds its job), resource_name the job's component. A nil resource is the
// resource of a job not executed yet.
func (r *Resource) Identified(j *Job) *Resource {
	if r != nil && r.ID != "" && r.JobID != "" && r.ResourceUUID != "" && r.ResourceName != "" {
		return r
	}
	out := &Resource{}
	if r != nil {
		c := *r
		out = &c
	}
	if out.ID == "" {
		out.ID = j.ID
	}
	if out.JobID == "" {
		out.JobID = j.ID
	}
	if out.ResourceUUID == "" {
		out.ResourceUUID = j.ID
	}
	if out.ResourceName == "" {
		out.ResourceName = j.Component
	}
	if out.Conditions == nil {
		out.Conditions = []Condition{}
	}
	return out
}

// SetCondition sets c on the resource: one condition per type, replaced in place, and its
// lastTransitionTime kept unless the status changes. It reports whether anything changed.
func (r *Resource) SetCondition(c Condition) bool {
	return meta.SetStatusCondition(&r.Conditions, c)
}

// Condition returns the condition of type t, or nil.
func (r *Resource) Condition(t string) *Condition {
	return meta.FindStatusCondition(r.Conditions, t)
}

// UnmarshalJSON reads a resource, taking its id from `id` or `ID`.
func (r *Resource) UnmarshalJSON(b []byte) error {
	type plain Resource
	*r = Resource{}
	return decodeWithID(b, (*plain)(r), &r.ID)
}

// MaxConditions is the most conditions a resource keeps (one per type: the ICOS ones, the
// work's, and those a deployment manager reports).
const MaxConditions = 32

// Validate checks the conditions: at most MaxConditions, a type and a status of True, False
// or Unknown each, and no type twice.
func (r *Resource) Validate() *apis.FieldError {
	var errs *apis.FieldError
	if len(r.Conditions) > MaxConditions {
		errs = errs.Also(apis.ErrOutOfBoundsValue(len(r.Conditions), 0, MaxConditions, "conditions"))
	}
	seen := map[string]bool{}
	for i, c := range r.Conditions {
		if c.Type == "" {
			errs = errs.Also(apis.ErrMissingField("type").ViaFieldIndex("conditions", i))
		} else if seen[c.Type] {
			errs = errs.Also(apis.ErrInvalidValue(c.Type, "type", "a condition type appears once").ViaFieldIndex("conditions", i))
		}
		seen[c.Type] = true
		switch c.Status {
		case metav1.ConditionTrue, metav1.ConditionFalse, metav1.ConditionUnknown:
		case "":
			errs = errs.Also(apis.ErrMissingField("status").ViaFieldIndex("conditions", i))
		default:
			errs = errs.Also(apis.ErrInvalidValue(string(c.Status), "status", "want True, False or Unknown").ViaFieldIndex("conditions", i))
		}
	}
	return errs
}
