// Package events is the CloudEvents runtime every function shares: the event catalogue, the
// HTTP receiver with its answer contract, idempotency on source+id, and publishing to the
// broker named by K_SINK.
package events

import "fmt"

// Event types of DESIGN.md: eu.icos.<noun>.<verb>.v1, plus Knative's PingSource tick.
const (
	JobGroupCreate = "eu.icos.jobgroup.create.v1"
	JobGroupUpdate = "eu.icos.jobgroup.update.v1"
	JobGroupStop   = "eu.icos.jobgroup.stop.v1"
	JobGroupStart  = "eu.icos.jobgroup.start.v1"
	JobGroupDelete = "eu.icos.jobgroup.delete.v1"
	// JobGroupRestart restarts a group's running workloads (issue 18).
	JobGroupRestart = "eu.icos.jobgroup.restart.v1"

	PolicyIncompliance = "eu.icos.policy.incompliance.v1"

	JobCreated     = "eu.icos.job.created.v1"
	JobProgressing = "eu.icos.job.progressing.v1"
	JobDegraded    = "eu.icos.job.degraded.v1"
	JobFinished    = "eu.icos.job.finished.v1"

	// Ping is the type of Knative PingSource events: the cron tick.
	Ping = "dev.knative.sources.ping"

	// Types of Knative ApiServerSource events in Reference mode: an object it watches (here a
	// ManifestWork of ours) was added, changed or deleted; the data names it.
	APIServerAdd    = "dev.knative.apiserver.ref.add"
	APIServerUpdate = "dev.knative.apiserver.ref.update"
	APIServerDelete = "dev.knative.apiserver.ref.delete"
)

// Extension attributes every emitted job event carries.
const (
	ExtJobID      = "jobid"
	ExtJobGroupID = "jobgroupid"
	ExtHubID      = "hubid"
	// ExtDataRef names an s3://bucket/key object holding data too large for an event.
	ExtDataRef = "dataref"
)

// Source is the source URI of events a function emits on a hub.
func Source(hubID, function string) string {
	if hubID == "" {
		hubID = "unknown"
	}
	return fmt.Sprintf("/ocm-jobs/hubs/%s/%s", hubID, function)
}
