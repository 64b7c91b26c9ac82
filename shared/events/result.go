package events

import (
	"fmt"
	"net/http"

	"github.com/cloudevents/sdk-go/v2/protocol"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
)

// Results a handler returns; the HTTP status tells the broker what to do: 2xx done, 400/422
// never retried (dead-letter), 5xx retried.

// Done answers 200: the event was handled (or there was nothing to do).
func Done(format string, args ...any) protocol.Result {
	return cehttp.NewResult(http.StatusOK, format, args...)
}

// Accepted answers 202: the event was recorded and will be acted on (or already is).
func Accepted(format string, args ...any) protocol.Result {
	return cehttp.NewResult(http.StatusAccepted, format, args...)
}

// Invalid answers 400: the event itself is malformed and will never succeed.
func Invalid(format string, args ...any) protocol.Result {
	return cehttp.NewResult(http.StatusBadRequest, format, args...)
}

// Unprocessable answers 422: the event is well formed but its content is wrong.
func Unprocessable(format string, args ...any) protocol.Result {
	return cehttp.NewResult(http.StatusUnprocessableEntity, format, args...)
}

// Conflict answers 409: the request contradicts the current state (e.g. deleting a group
// with running jobs); it is not retried.
func Conflict(format string, args ...any) protocol.Result {
	return cehttp.NewResult(http.StatusConflict, format, args...)
}

// Unavailable answers 503: a dependency (Redis, the hub) is unreachable; the broker retries.
func Unavailable(format string, args ...any) protocol.Result {
	return cehttp.NewResult(http.StatusServiceUnavailable, format, args...)
}

// Internal answers 500: a bug; the broker retries, which may or may not help.
func Internal(format string, args ...any) protocol.Result {
	return cehttp.NewResult(http.StatusInternalServerError, format, args...)
}

// StatusOf returns the HTTP status a result becomes: 200 for nil or a plain ACK, the code of
// an HTTP result, 500 for any other error.
func StatusOf(r protocol.Result) int {
	if r == nil {
		return http.StatusOK
	}
	var hr *cehttp.Result
	if protocol.ResultAs(r, &hr) && hr.StatusCode > 100 && hr.StatusCode < 600 {
		return hr.StatusCode
	}
	if protocol.IsACK(r) {
		return http.StatusOK
	}
	return http.StatusInternalServerError
}

// MessageOf returns the text of a result.
func MessageOf(r protocol.Result) string {
	if r == nil {
		return ""
	}
	var hr *cehttp.Result
	if protocol.ResultAs(r, &hr) {
		return fmt.Errorf(hr.Format, hr.Args...).Error()
	}
	return r.Error()
}

// IsTransient reports whether a status asks the sender to retry.
func IsTransient(status int) bool {
	return status >= 500 || status == http.StatusTooManyRequests
}

// NotImplemented answers 501: the function does not handle this yet.
func NotImplemented(format string, args ...any) protocol.Result {
	return cehttp.NewResult(http.StatusNotImplemented, format, args...)
}
