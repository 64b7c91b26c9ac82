package store

import (
	"errors"
	"fmt"
	"strings"

	"knative.dev/pkg/apis"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
)

// Sentinels a caller tests with errors.Is. Every refused write wraps exactly one of them.
var (
	// ErrInvalid: the input is wrong and will never be accepted (400/422).
	ErrInvalid = errors.New("invalid input")
	// ErrNotFound: no such job, group or incompliance (or it was deleted).
	ErrNotFound = errors.New("not found")
	// ErrExists: a group, job or incompliance with that id exists already.
	ErrExists = errors.New("already exists")
	// ErrWrongState: the job is not in a state the transition starts from.
	ErrWrongState = errors.New("wrong state")
	// ErrNotOwner: another hub owns the job.
	ErrNotOwner = errors.New("not the owner")
	// ErrFenced: the caller's fencing token is stale; the job was promoted again since.
	ErrFenced = errors.New("stale fencing token")
	// ErrLeaseHeld: another execution holds a live lease on the job, or its owner's lease
	// has not lapsed for long enough to take the job over.
	ErrLeaseHeld = errors.New("lease held")
	// ErrNoTarget: the job has no target yet, so nobody can execute it.
	ErrNoTarget = errors.New("no target")
	// ErrNotDeletable: a group has jobs that may not be deleted yet.
	ErrNotDeletable = errors.New("not deletable")
	// ErrResourceChanged: the job's resource is no longer the one a write was derived from
	// (another writer changed it since it was read).
	ErrResourceChanged = errors.New("resource changed")
	// ErrOrderSeen: the named order (Reopen.Order) re-opened this job already; nothing was
	// written. Not a failure: the order was carried out by an earlier delivery.
	ErrOrderSeen = errors.New("order already carried out")
)

// Guards a script checks, as GuardError.Guard names them.
const (
	GuardExists = "exists" // the object exists (and is not deleted)
	GuardAbsent = "absent" // the object does not exist yet
	GuardState  = "state"
	GuardOwner  = "owner"
	GuardFence  = "fence"
	GuardLease  = "lease"
	GuardTarget = "target"
	// GuardResource: the stored resource is the one the caller read.
	GuardResource = "resource"
)

var guardSentinels = map[string]error{
	GuardExists:   ErrNotFound,
	GuardAbsent:   ErrExists,
	GuardState:    ErrWrongState,
	GuardOwner:    ErrNotOwner,
	GuardFence:    ErrFenced,
	GuardLease:    ErrLeaseHeld,
	GuardTarget:   ErrNoTarget,
	GuardResource: ErrResourceChanged,
}

// GuardError says which guard refused a write, and that nothing was written.
type GuardError struct {
	// Op is the refused operation (promote, finish, …).
	Op string
	// Kind is what it was about: job, group or incompliance; ID says which.
	Kind string
	ID   string
	// Guard is the guard that failed; Want and Got say what it wanted and found.
	Guard string
	Want  string
	Got   string
}

func (e *GuardError) Error() string {
	return fmt.Sprintf("%s %s %s refused by the %s guard: want %s, got %s", e.Op, e.Kind, e.ID, e.Guard,
		describe(e.Guard, e.Want), describe(e.Guard, e.Got))
}

// Is matches the sentinel of the failed guard.
func (e *GuardError) Is(target error) bool { return guardSentinels[e.Guard] == target }

// describe turns state lists the scripts use (",3,4,") into names.
func describe(guard, v string) string {
	if guard != GuardState {
		return v
	}
	var names []string
	for _, s := range strings.Split(strings.Trim(v, ","), ",") {
		var n int
		if _, err := fmt.Sscan(s, &n); err == nil {
			names = append(names, model.JobState(n).String())
		}
	}
	if len(names) == 0 {
		return v
	}
	return strings.Join(names, " or ")
}

// InvalidError is bad input, with every problem and its field path.
type InvalidError struct {
	Op     string
	Fields *apis.FieldError
}

func (e *InvalidError) Error() string { return e.Op + ": invalid input: " + e.Fields.Error() }

// Is matches ErrInvalid.
func (e *InvalidError) Is(target error) bool { return target == ErrInvalid }

// Unwrap gives the field errors.
func (e *InvalidError) Unwrap() error { return e.Fields }

// BlockedJob is a job that keeps its group from being deleted.
type BlockedJob struct {
	ID    string
	State model.JobState
	Type  model.JobType
}

// BlockedError says which jobs keep a group from being deleted: every job must be either
// never promoted (nothing was deployed) or a finished DeleteDeployment.
type BlockedError struct {
	Group string
	Jobs  []BlockedJob
}

func (e *BlockedError) Error() string {
	parts := make([]string, len(e.Jobs))
	for i, j := range e.Jobs {
		parts[i] = fmt.Sprintf("%s (%s, %s)", j.ID, j.Type, j.State)
	}
	return fmt.Sprintf("group %s cannot be deleted: undeploy its jobs first: %s", e.Group, strings.Join(parts, ", "))
}

// Is matches ErrNotDeletable.
func (e *BlockedError) Is(target error) bool { return target == ErrNotDeletable }

func invalid(op string, fe *apis.FieldError) error {
	if fe == nil {
		return nil
	}
	return &InvalidError{Op: op, Fields: fe}
}
