// Package invariants judges what a chaos run (tests/chaos) leaves behind: a Snapshot of
// Redis, both hubs, the spokes and every event the functions published, read once the faults
// have stopped and the system has had time to settle. It is pure — no I/O — so each check is
// table-tested with hand-made states that break it.
//
// The invariants are those of the chaos issue, checked against the contract of DESIGN.md (as
// the ownership/outbox redesign states it), not against what the code happens to do today:
//
//  1. Settled: every job is Finished or Degraded, or legitimately waiting (Created, without a
//     target, AwaitingTarget); none is stuck Progressing or Created with a target.
//  2. One work: every live component has exactly one ManifestWork, job-<id> in its cluster's
//     namespace on the hub that manages the cluster, labelled with its owner and annotated
//     with the job's current fence; no ManifestWork without a live job; a deleted group
//     leaves nothing on a hub or a spoke; a hub owns and promotes only jobs of its clusters.
//  3. Exactly once: each Deployment's replicas and resources are what the remediations that
//     ran imply, in Redis and on the spoke; every incompliance has a recorded outcome.
//  4. No re-execution: no promote or takeover follows a terminal state without a reopen.
//  5. Announced: every committed state change has its event, and no event announces a
//     change that did not commit.
//  6. Durable: no acknowledged create is lost across Redis restarts (what AOF everysec may
//     lose is reported, not counted).
//  7. Consistent: the store's indexes, job hashes and histories agree.
package invariants

import (
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
)

// Invariant numbers an invariant as the chaos issue does.
type Invariant int

// The invariants.
const (
	Settled       Invariant = 1
	OneWork       Invariant = 2
	ExactlyOnce   Invariant = 3
	NoReexecution Invariant = 4
	Announced     Invariant = 5
	Durable       Invariant = 6
	Consistent    Invariant = 7
)

// All lists the invariants in order.
var All = []Invariant{Settled, OneWork, ExactlyOnce, NoReexecution, Announced, Durable, Consistent}

// String names the invariant in a few words.
func (i Invariant) String() string {
	switch i {
	case Settled:
		return "every job terminal or awaiting a target"
	case OneWork:
		return "one ManifestWork per live component, on its hub, fenced; no orphans"
	case ExactlyOnce:
		return "remediations applied exactly once"
	case NoReexecution:
		return "no terminal job re-executed"
	case Announced:
		return "every committed transition announced, none invented"
	case Durable:
		return "no acknowledged create lost"
	case Consistent:
		return "history, indexes and job hashes agree"
	}
	return fmt.Sprintf("invariant %d", int(i))
}

// Violation is one thing a run left wrong.
type Violation struct {
	Invariant Invariant
	// Kind is a short class of the reason, for grouping ("stuck Progressing").
	Kind string
	// ID is what is wrong: a job id, or a group id, a ManifestWork or a Redis key.
	ID string
	// Reason says why, in one line.
	Reason string
}

func (v Violation) String() string {
	return fmt.Sprintf("invariant %d (%s) %s: %s", v.Invariant, v.Kind, v.ID, v.Reason)
}

// Result is what Check found: the violations, and notes on what the contract allows but a
// reader should know (what AOF everysec lost, drift the agent has not repaired yet).
type Result struct {
	Violations []Violation
	Notes      []string
}

// Of returns the violations of one invariant.
func (r Result) Of(i Invariant) []Violation {
	var out []Violation
	for _, v := range r.Violations {
		if v.Invariant == i {
			out = append(out, v)
		}
	}
	return out
}

// Snapshot is the world at the end of a run.
type Snapshot struct {
	// HubOf is the id of the hub that manages each cluster.
	HubOf map[string]string
	// Jobs are every job in Redis, those of deleted groups too, each with its full history.
	Jobs []Job
	// Groups are every group in Redis, deleted or not, by id.
	Groups map[string]Group
	// Works are every ManifestWork labelled managed-by=ocm-jobs, on every hub.
	Works []Work
	// SpokeObjects are the objects on the spokes that carry the ICOS instance annotation.
	SpokeObjects []SpokeObject
	// Events are the job events the functions published (as the broker accepted them).
	Events []Event
	// Incompliances are the recorded incompliances, by id.
	Incompliances map[string]model.Incompliance
	// Creates are the group creates the workload saw acknowledged.
	Creates []Create
	// RedisKills are the times redis-server was killed, with its fsync policy then.
	RedisKills []RedisKill
	// Drift are the hand edits of spoke Deployments.
	Drift []Drift
	// StoreProblems are what the store's own consistency check (store.CheckConsistency:
	// indexes recomputed from the job and group hashes, each job's newest history entry
	// against its state and fence) found.
	StoreProblems []string
	// Remediation are the executor's remediation steps and bounds.
	Remediation Steps
}

// Job is a job with its whole history, oldest entry first.
type Job struct {
	model.Job
	// Deleted: its group was deleted (the job stays readable for the retention TTL).
	Deleted bool
	History []model.HistoryEntry
}

// UnmarshalJSON reads a job written by encoding/json (model.Job's own UnmarshalJSON would
// otherwise take over and drop Deleted and History), so a saved snapshot can be checked again.
func (j *Job) UnmarshalJSON(b []byte) error {
	if err := json.Unmarshal(b, &j.Job); err != nil {
		return err
	}
	var rest struct {
		Deleted bool
		History []model.HistoryEntry
	}
	if err := json.Unmarshal(b, &rest); err != nil {
		return err
	}
	j.Deleted, j.History = rest.Deleted, rest.History
	return nil
}

// Group is a job group as stored.
type Group struct {
	ID      string
	Deleted bool
	Jobs    []string
}

// Work is a ManifestWork as read from a hub.
type Work struct {
	// Hub is the id of the hub it was read from.
	Hub         string
	Namespace   string
	Name        string
	Labels      map[string]string
	Annotations map[string]string
	// Deleting: it has a deletionTimestamp.
	Deleting bool
}

// SpokeObject is an object a job deployed, as read from a spoke.
type SpokeObject struct {
	Cluster   string
	Kind      string
	Namespace string
	Name      string
	// Instance and Component are its ICOS annotations (group id, component name).
	Instance  string
	Component string
	// Spec is a Deployment's spec as the checks compare it; nil for other kinds.
	Spec *Spec
	// Owner says, for a report, which AppliedManifestWork owns the object and whether it and
	// its ManifestWork still exist (the agent deletes only what its AppliedManifestWork lists).
	Owner string
}

// Event is a job event as the recording subscriber saw it.
type Event struct {
	ID     string
	Source string
	Type   string
	JobID  string
	// Fence and State are read from the event's data (the job).
	Fence uint64
	State model.JobState
	At    time.Time
}

// Create is a group create the workload saw acknowledged (201, or a 2xx delivery).
type Create struct {
	GroupID string
	At      time.Time
	Via     string
}

// RedisKill is one SIGKILL of redis-server.
type RedisKill struct {
	At          time.Time
	AppendFsync string
}

// Drift is a hand edit of a spoke Deployment's replicas.
type Drift struct {
	Cluster, Namespace, Name string
	At                       time.Time
	Replicas                 int64
}

// Check runs every invariant over s.
func Check(s Snapshot) Result {
	var r Result
	for _, check := range []func(Snapshot, *Result){
		checkSettled, checkOneWork, checkExactlyOnce, checkNoReexecution, checkAnnounced, checkDurable, checkConsistent,
	} {
		check(s, &r)
	}
	sort.SliceStable(r.Violations, func(a, b int) bool {
		x, y := r.Violations[a], r.Violations[b]
		if x.Invariant != y.Invariant {
			return x.Invariant < y.Invariant
		}
		if x.Kind != y.Kind {
			return x.Kind < y.Kind
		}
		return x.ID < y.ID
	})
	return r
}

func (r *Result) add(i Invariant, kind, id, format string, args ...any) {
	r.Violations = append(r.Violations, Violation{Invariant: i, Kind: kind, ID: id, Reason: fmt.Sprintf(format, args...)})
}

func (r *Result) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}
