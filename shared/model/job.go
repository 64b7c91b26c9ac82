package model

import (
	"encoding/json"
	"fmt"
	"time"

	"knative.dev/pkg/apis"
)

// JobGroup is an application: one job per component (ICOS `JobGroup`).
type JobGroup struct {
	ID             string `json:"id"`
	AppName        string `json:"appName"`
	AppDescription string `json:"appDescription"`
	Jobs           []Job  `json:"jobs"`
	// Pending is an order (stop, start) accepted while some of the group's jobs were being
	// executed, carried out once they end (an addition to ICOS).
	Pending string `json:"pending,omitempty"`
	// Rollout is the change rolled out (or last rolled out) across the group's clusters in
	// waves, when the group chose a progressive or canary strategy (an addition to ICOS).
	Rollout *Rollout `json:"rollout,omitempty"`
}

// Job is one component of an application and what to do with it (ICOS `Job`).
type Job struct {
	ID                  string          `json:"id"`
	JobGroupID          string          `json:"job_group_id"`
	OwnerID             string          `json:"owner_id"`
	JobGroupName        string          `json:"job_group_name"`
	JobGroupDescription string          `json:"job_group_description"`
	Type                JobType         `json:"type"`
	SubType             SubType         `json:"sub_type"`
	State               JobState        `json:"state"`
	Manifests           []PlainManifest `json:"manifests"`
	Targets             *Target         `json:"targets"`
	Orchestrator        Orchestrator    `json:"orchestrator"`
	Resource            *Resource       `json:"resource"`
	Namespace           string          `json:"namespace"`
	CreatedAt           time.Time       `json:"created_at"`
	UpdatedAt           time.Time       `json:"updated_at"`

	// Component is the name of the descriptor component the job deploys (the incompliance
	// subject's appComponent finds the job by it).
	Component string `json:"component,omitempty"`
	// Fence is the fencing token of the job's current owner: it grows on every promote, and
	// a write carrying an older one is refused.
	Fence uint64 `json:"fence,omitempty"`
	// Remediation is what an UpdateDeployment job opened by an incompliance must change.
	Remediation *Remediation `json:"remediation,omitempty"`

	// Move is the reallocation in progress, while its owner carries it from one cluster to
	// another (make-before-break, one step per delivery or tick).
	Move *Move `json:"move,omitempty"`

	// LeaseHolder is the execution that holds (or last held) the job's lease.
	LeaseHolder string `json:"-"`
	// LeaseUntil is when that lease lapses (or lapsed).
	LeaseUntil time.Time `json:"-"`
	// Applied is the fence of the last execution that did on the hub what the job asked and
	// recorded it; an execution whose fence is not Applied may have died half-way.
	Applied uint64 `json:"-"`
	// Remediated is the fence of the execution whose remediation result the job's manifests
	// are: it is computed once per execution and stored before it is applied, so an execution
	// that is resumed applies the same result again instead of remediating twice.
	Remediated uint64 `json:"-"`
}

// Move is a reallocation in progress: make-before-break, each phase idempotent.
type Move struct {
	// From and To are the clusters the job moves between.
	From string `json:"from"`
	To   string `json:"to"`
	// Phase is where the move stands (MoveApply, MoveRemoveOld, MoveRollback).
	Phase MovePhase `json:"phase"`
	// Deadline is when a move whose new ManifestWork is not Available yet is given up.
	Deadline time.Time `json:"deadline"`
	// Why says why a move rolls back.
	Why string `json:"why,omitempty"`
}

// MovePhase is a step of a reallocation.
type MovePhase string

// The phases of a reallocation.
const (
	// MoveApply: the ManifestWork is applied on the new cluster; the move waits until it is
	// Available there (or the deadline passes).
	MoveApply MovePhase = "apply"
	// MoveRemoveOld: the job runs on the new cluster (its target); the old ManifestWork is
	// deleted and the move waits until it is gone.
	MoveRemoveOld MovePhase = "remove-old"
	// MoveRollback: the new cluster failed; its ManifestWork is deleted and the job, still on
	// its old cluster, goes Degraded once it is gone.
	MoveRollback MovePhase = "rollback"
)

// PlainManifest is one Kubernetes object of a job, as YAML (ICOS `PlainManifest`).
type PlainManifest struct {
	YamlString string `json:"yamlString"`
}

// Target says where a job runs (ICOS `Target`).
type Target struct {
	ClusterName  string       `json:"cluster_name"`
	NodeName     string       `json:"node_name,omitempty"`
	Orchestrator Orchestrator `json:"orchestrator"`
}

// Remediation is the payload of an UpdateDeployment job opened for an incompliance: the
// action (the job's sub_type) and what that action needs.
type Remediation struct {
	// IncomplianceID is the incompliance that asked for it.
	IncomplianceID string `json:"incompliance_id,omitempty"`
	// Action is the remediation; it equals the job's sub_type.
	Action SubType `json:"action"`
	// Workload narrows the change to one manifest ("Kind/name"); empty means every workload
	// of the job.
	Workload string `json:"workload,omitempty"`
	// Patch is the patch document for `patch` (a JSON merge patch, or YAML of one).
	Patch string `json:"patch,omitempty"`
	// Image is the container image `secure` rolls out.
	Image string `json:"image,omitempty"`
	// Target is where `reallocation` moves the workload.
	Target *Target `json:"target,omitempty"`
	// RestartedAt is the value `restart` gives the pod templates' restart annotation
	// (RFC 3339), chosen when the restart was ordered.
	RestartedAt string `json:"restarted_at,omitempty"`
	// Order names the request that opened a `restart`: a redelivered order opens nothing more.
	Order string `json:"order,omitempty"`
}

// HistoryEntry is one recorded change of a job: who did what, when, from which state to which.
type HistoryEntry struct {
	At     time.Time `json:"at"`
	By     string    `json:"by"`
	Action string    `json:"action"`
	From   JobState  `json:"from"`
	To     JobState  `json:"to"`
	Why    string    `json:"why,omitempty"`
	Fence  uint64    `json:"fence,omitempty"`
}

// UnmarshalJSON reads a job, taking its id from `id` or `ID`.
func (j *Job) UnmarshalJSON(b []byte) error {
	type plain Job
	*j = Job{}
	return decodeWithID(b, (*plain)(j), &j.ID)
}

// MarshalJSON writes a job with its resource always there, as ICOS 1.4.1 creates every job
// with one and the ICOS deployment manager dereferences it: before anything was executed it is
// {id, job_id, resource_uuid: the job's id, resource_name: the component}; a stored resource
// lacking those identity fields gets the same values.
func (j Job) MarshalJSON() ([]byte, error) {
	type plain Job
	p := plain(j)
	p.Resource = j.Resource.Identified(&j)
	return json.Marshal(p)
}

// UnmarshalJSON reads a job group, taking its id from `id` or `ID`.
func (g *JobGroup) UnmarshalJSON(b []byte) error {
	type plain JobGroup
	*g = JobGroup{}
	return decodeWithID(b, (*plain)(g), &g.ID)
}

// Validate checks a job group and its jobs as the store receives them for creation.
func (g *JobGroup) Validate() *apis.FieldError {
	var errs *apis.FieldError
	if g.AppName == "" {
		errs = errs.Also(apis.ErrMissingField("appName"))
	}
	if len(g.Jobs) == 0 {
		errs = errs.Also(apis.ErrMissingField("jobs"))
	}
	for i := range g.Jobs {
		errs = errs.Also(g.Jobs[i].Validate().ViaFieldIndex("jobs", i))
	}
	return errs
}

// Validate checks a job: enums in range, the fields its type needs, targets, manifests,
// remediation and resource. It does not check sizes; the store does, against its limits.
func (j *Job) Validate() *apis.FieldError {
	var errs *apis.FieldError
	switch {
	case j.Type == 0:
		errs = errs.Also(apis.ErrMissingField("type"))
	case !j.Type.Valid():
		errs = errs.Also(apis.ErrInvalidValue(int(j.Type), "type", "want 5 (CreateDeployment), 6 (DeleteDeployment), 7 (UpdateDeployment) or 8 (ReplaceDeployment)"))
	}
	switch {
	case j.State == 0:
		errs = errs.Also(apis.ErrMissingField("state"))
	case !j.State.Valid():
		errs = errs.Also(apis.ErrInvalidValue(int(j.State), "state", "want 1 (Created), 2 (Progressing), 3 (Finished) or 4 (Degraded)"))
	}
	if j.SubType != "" && !j.SubType.Valid() {
		errs = errs.Also(invalidSubType(j.SubType, "sub_type"))
	}
	if j.Type == UpdateDeployment && j.SubType == "" {
		errs = errs.Also(apis.ErrMissingField("sub_type"))
	}
	if j.Orchestrator != "" && !j.Orchestrator.Valid() {
		errs = errs.Also(invalidOrchestrator(j.Orchestrator, "orchestrator"))
	}
	if j.Targets != nil {
		errs = errs.Also(j.Targets.Validate().ViaField("targets"))
		if j.Orchestrator != "" && j.Targets.Orchestrator != "" && j.Orchestrator != j.Targets.Orchestrator {
			errs = errs.Also(apis.ErrInvalidValue(string(j.Orchestrator), "orchestrator",
				fmt.Sprintf("the job names orchestrator %q but its target %q", j.Orchestrator, j.Targets.Orchestrator)))
		}
	}
	if (j.Type == CreateDeployment || j.Type == ReplaceDeployment) && len(j.Manifests) == 0 {
		errs = errs.Also(apis.ErrMissingField("manifests"))
	}
	for i, m := range j.Manifests {
		if m.YamlString == "" {
			errs = errs.Also(apis.ErrMissingField("yamlString").ViaFieldIndex("manifests", i))
		}
	}
	if j.Remediation != nil {
		errs = errs.Also(j.Remediation.Validate().ViaField("remediation"))
	}
	if j.Resource != nil {
		errs = errs.Also(j.Resource.Validate().ViaField("resource"))
	}
	return errs
}

// Validate checks a target: a cluster name and a known orchestrator.
func (t *Target) Validate() *apis.FieldError {
	var errs *apis.FieldError
	if t.ClusterName == "" {
		errs = errs.Also(apis.ErrMissingField("cluster_name"))
	}
	switch {
	case t.Orchestrator == "":
		errs = errs.Also(apis.ErrMissingField("orchestrator"))
	case !t.Orchestrator.Valid():
		errs = errs.Also(invalidOrchestrator(t.Orchestrator, "orchestrator"))
	}
	return errs
}

// Validate checks a remediation: a known action and what that action needs.
func (r *Remediation) Validate() *apis.FieldError {
	var errs *apis.FieldError
	switch {
	case r.Action == "":
		errs = errs.Also(apis.ErrMissingField("action"))
	case !r.Action.Valid():
		errs = errs.Also(invalidSubType(r.Action, "action"))
	}
	switch r.Action {
	case Patch:
		if r.Patch == "" {
			errs = errs.Also(apis.ErrMissingField("patch"))
		}
	case Reallocation:
		// Without a target, the executor asks the Placement for another cluster.
		if r.Target != nil {
			errs = errs.Also(r.Target.Validate().ViaField("target"))
		}
	case Restart:
		if r.RestartedAt == "" {
			errs = errs.Also(apis.ErrMissingField("restarted_at"))
		} else if _, err := time.Parse(time.RFC3339, r.RestartedAt); err != nil {
			errs = errs.Also(apis.ErrInvalidValue(r.RestartedAt, "restarted_at", "want an RFC 3339 time"))
		}
	}
	// secure hardens pod templates; the image is optional (rolled out when named).
	return errs
}

func invalidSubType(s SubType, field string) *apis.FieldError {
	return apis.ErrInvalidValue(string(s), field, fmt.Sprintf("want one of %v", SubTypes))
}

func invalidOrchestrator(o Orchestrator, field string) *apis.FieldError {
	return apis.ErrInvalidValue(string(o), field, `want "ocm" or "nuvla"`)
}
