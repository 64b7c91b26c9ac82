package model

import (
	"encoding/json"
	"fmt"
	"time"

	"knative.dev/pkg/apis"
)

// Incompliance is a policy violation the Policy Manager reports (ICOS `Incompliance`), with
// the job it was found to be about and what became of it.
type Incompliance struct {
	ID string `json:"id"`
	// CurrentValue and Threshold are kept as sent (a JSON number or string).
	CurrentValue       json.RawMessage   `json:"currentValue,omitempty"`
	Threshold          json.RawMessage   `json:"threshold,omitempty"`
	PolicyName         string            `json:"policyName"`
	PolicyID           string            `json:"policyId,omitempty"`
	MeasurementBackend string            `json:"measurementBackend,omitempty"`
	ExtraLabels        map[string]string `json:"extraLabels,omitempty"`
	Subject            Subject           `json:"subject"`
	Remediation        SubType           `json:"remediation"`

	// JobID is the job the incompliance was found to be about (the first, when it covers
	// several).
	JobID string `json:"job_id,omitempty"`
	// JobIDs are every job it covers: one, or every cluster's job of a component on several
	// clusters (an addition to ICOS).
	JobIDs []string `json:"job_ids,omitempty"`
	// Outcome says what became of it; Reason says why (always set for rejected).
	Outcome Outcome `json:"outcome,omitempty"`
	Reason  string  `json:"reason,omitempty"`
	// ReceivedAt is when the store first recorded it.
	ReceivedAt *time.Time `json:"received_at,omitempty"`

	// Payload is what its remediation needs (patch, image, workload, target), as the sender
	// gave it: kept with the record, so an intake that died half-way can be finished later.
	Payload *Remediation `json:"-"`
}

// Subject is what an incompliance is about. The Policy Manager sends appInstance (the job
// group id) and appComponent, never resourceId.
type Subject struct {
	Type         string `json:"type,omitempty"`
	AppName      string `json:"appName,omitempty"`
	AppComponent string `json:"appComponent,omitempty"`
	AppInstance  string `json:"appInstance,omitempty"`
	ResourceID   string `json:"resourceId,omitempty"`
}

// UnmarshalJSON reads an incompliance, taking its id from `id` or `ID`.
func (in *Incompliance) UnmarshalJSON(b []byte) error {
	type plain Incompliance
	*in = Incompliance{}
	return decodeWithID(b, (*plain)(in), &in.ID)
}

// Validate checks an incompliance: policyName and a known remediation are required, values
// are numbers or strings, and the outcome (when set) is known, with a reason if rejected.
func (in *Incompliance) Validate() *apis.FieldError {
	var errs *apis.FieldError
	if in.PolicyName == "" {
		errs = errs.Also(apis.ErrMissingField("policyName"))
	}
	switch {
	case in.Remediation == "":
		errs = errs.Also(apis.ErrMissingField("remediation"))
	case !in.Remediation.ValidRemediation():
		errs = errs.Also(apis.ErrInvalidValue(string(in.Remediation), "remediation", fmt.Sprintf("want one of %v", Remediations)))
	}
	errs = errs.Also(scalar(in.CurrentValue, "currentValue"), scalar(in.Threshold, "threshold"))
	if in.Outcome != "" && !in.Outcome.Valid() {
		errs = errs.Also(apis.ErrInvalidValue(string(in.Outcome), "outcome", "want pending, applied or rejected"))
	}
	if in.Outcome == OutcomeRejected && in.Reason == "" {
		errs = errs.Also(apis.ErrMissingField("reason"))
	}
	return errs
}

// scalar accepts an absent value, a JSON number or a JSON string.
func scalar(v json.RawMessage, field string) *apis.FieldError {
	if len(v) == 0 || string(v) == "null" {
		return nil
	}
	var f float64
	if json.Unmarshal(v, &f) == nil {
		return nil
	}
	var s string
	if json.Unmarshal(v, &s) == nil {
		return nil
	}
	return apis.ErrInvalidValue(string(v), field, "want a number or a string")
}

// Covers says whether the incompliance is about the job (one of those it covers).
func (in *Incompliance) Covers(jobID string) bool {
	if in.JobID == jobID {
		return true
	}
	for _, id := range in.JobIDs {
		if id == jobID {
			return true
		}
	}
	return false
}
