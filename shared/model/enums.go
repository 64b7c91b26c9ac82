package model

import "strconv"

// JobState is where a job is in its life, with the ICOS integers.
type JobState int

// The ICOS job states.
const (
	// Created: waiting for an owner to promote and execute it.
	Created JobState = 1
	// Progressing: promoted; its owner is executing it or waiting for the result.
	Progressing JobState = 2
	// Finished: the work is applied (or, for a DeleteDeployment job, removed).
	Finished JobState = 3
	// Degraded: the execution failed or the workload is not healthy.
	Degraded JobState = 4
)

// Valid reports whether s is one of the ICOS job states.
func (s JobState) Valid() bool { return s >= Created && s <= Degraded }

// String names the state as the ICOS Job Manager does.
func (s JobState) String() string {
	switch s {
	case Created:
		return "Created"
	case Progressing:
		return "Progressing"
	case Finished:
		return "Finished"
	case Degraded:
		return "Degraded"
	}
	return "JobState(" + strconv.Itoa(int(s)) + ")"
}

// JobType is what a job does to its component, with the ICOS integers.
type JobType int

// The ICOS job types.
const (
	CreateDeployment  JobType = 5
	DeleteDeployment  JobType = 6
	UpdateDeployment  JobType = 7
	ReplaceDeployment JobType = 8
)

// Valid reports whether t is one of the ICOS job types.
func (t JobType) Valid() bool { return t >= CreateDeployment && t <= ReplaceDeployment }

// String names the type as the ICOS Job Manager does.
func (t JobType) String() string {
	switch t {
	case CreateDeployment:
		return "CreateDeployment"
	case DeleteDeployment:
		return "DeleteDeployment"
	case UpdateDeployment:
		return "UpdateDeployment"
	case ReplaceDeployment:
		return "ReplaceDeployment"
	}
	return "JobType(" + strconv.Itoa(int(t)) + ")"
}

// SubType is the remediation an UpdateDeployment job applies (the ICOS `sub_type`, and the
// `remediation` of an incompliance).
type SubType string

// The remediations ICOS knows.
const (
	ScaleUp      SubType = "scale-up"
	ScaleDown    SubType = "scale-down"
	ScaleOut     SubType = "scale-out"
	ScaleIn      SubType = "scale-in"
	Patch        SubType = "patch"
	Reallocation SubType = "reallocation"
	Secure       SubType = "secure"
)

// SubTypes lists every valid sub-type, for messages.
var SubTypes = []string{string(ScaleUp), string(ScaleDown), string(ScaleOut), string(ScaleIn),
	string(Patch), string(Reallocation), string(Secure)}

// Valid reports whether s is one of the ICOS remediations, Redeploy or Restart.
func (s SubType) Valid() bool {
	if s == Redeploy || s == Restart {
		return true
	}
	for _, v := range SubTypes {
		if string(s) == v {
			return true
		}
	}
	return false
}

// The remediation names the ICOS Dynamic Policy Manager may send beyond the ICOS ones (its
// default `none`, the default `redeploy` of security policies, its example `migrate`).
const (
	// Redeploy re-applies a job's current manifests: an UpdateDeployment whose result is the
	// manifests unchanged, applied again with a new fence. A job sub-type of its own, kept out
	// of SubTypes (the ICOS list).
	Redeploy SubType = "redeploy"
	// RemediationNone records an incompliance and does nothing: never a job's sub-type.
	RemediationNone SubType = "none"
	// Migrate is the Policy Manager's name of a reallocation.
	Migrate SubType = "migrate"
)

// Restart is a group restart (`kubectl rollout restart` of every workload of a job): an
// UpdateDeployment that bumps the pod templates' restart annotation. A job sub-type ordered by
// a user, never an incompliance's remediation.
const Restart SubType = "restart"

// Remediations lists every remediation an incompliance or a policy may name, for messages.
var Remediations = append(append([]string{}, SubTypes...), string(Redeploy), string(RemediationNone), string(Migrate))

// Canonical is the job sub-type a remediation name means: migrate is a reallocation; every
// other name means itself.
func (s SubType) Canonical() SubType {
	if s == Migrate {
		return Reallocation
	}
	return s
}

// ValidRemediation reports whether an incompliance or a policy may name s: a sub-type, none
// or migrate.
func (s SubType) ValidRemediation() bool {
	return s == RemediationNone || s != Restart && s.Canonical().Valid()
}

// Orchestrator names the deployment manager family that executes a job.
type Orchestrator string

// The orchestrators ICOS knows.
const (
	OCM   Orchestrator = "ocm"
	Nuvla Orchestrator = "nuvla"
)

// Valid reports whether o is one of the ICOS orchestrators.
func (o Orchestrator) Valid() bool { return o == OCM || o == Nuvla }

// Outcome is what became of an incompliance.
type Outcome string

// Incompliance outcomes.
const (
	// OutcomePending: recorded, the remediation job is not decided yet.
	OutcomePending Outcome = "pending"
	// OutcomeApplied: a remediation job was opened for it.
	OutcomeApplied Outcome = "applied"
	// OutcomeRejected: nothing was done; the reason says why.
	OutcomeRejected Outcome = "rejected"
)

// Valid reports whether o is a known outcome.
func (o Outcome) Valid() bool {
	return o == OutcomePending || o == OutcomeApplied || o == OutcomeRejected
}
