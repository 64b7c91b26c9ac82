package events

import (
	"context"
	"errors"
	"net/http"

	"github.com/cloudevents/sdk-go/v2/protocol"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/ocm-jobs/ocm-jobs/shared/store"
)

// The one mapping from what went wrong to the answer, for CloudEvents and the REST API alike.
// A handler overrides it only where the contract says so (see the README's answer table):
// the executor acknowledges (200) an event about a job that is not its to run, and the jobs
// function turns a 409 of a group event into 503 so the broker retries it once the jobs being
// executed are done.
//
//	error                                          status
//	nil                                            200
//	store.ErrInvalid (bad input)                   422
//	store.ErrNotFound                              404
//	store.ErrExists, ErrWrongState, ErrNotOwner,   409 (the request contradicts the current
//	ErrFenced, ErrLeaseHeld, ErrNoTarget,               state; retrying as is cannot help)
//	ErrNotDeletable, ErrResourceChanged
//	context.Canceled, context.DeadlineExceeded     503
//	anything else (Redis, the hub unreachable)     503
var conflicts = []error{store.ErrExists, store.ErrWrongState, store.ErrNotOwner, store.ErrFenced,
	store.ErrLeaseHeld, store.ErrNoTarget, store.ErrNotDeletable, store.ErrResourceChanged}

// StatusOfError is the HTTP status of an error, by the table above.
func StatusOfError(err error) int {
	switch {
	case err == nil:
		return http.StatusOK
	case errors.Is(err, store.ErrInvalid):
		return http.StatusUnprocessableEntity
	case errors.Is(err, store.ErrNotFound):
		return http.StatusNotFound
	}
	for _, c := range conflicts {
		if errors.Is(err, c) {
			return http.StatusConflict
		}
	}
	return http.StatusServiceUnavailable
}

// ResultOf is the CloudEvents answer of an error, by the table above.
func ResultOf(err error) protocol.Result {
	if err == nil {
		return Done("done")
	}
	status := StatusOfError(err)
	if status == http.StatusServiceUnavailable && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		return cehttp.NewResult(status, "unavailable: %v", err)
	}
	return cehttp.NewResult(status, "%v", err)
}
