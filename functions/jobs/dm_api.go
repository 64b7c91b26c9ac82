package jobs

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/ocm-jobs/ocm-jobs/shared/auth"
	"github.com/ocm-jobs/ocm-jobs/shared/model"
)

// The deployment-manager API: what an external deployment manager (the ICOS OCM deployment
// manager, Nuvla) uses to take jobs and report on them. Each route is thin: the service does
// the work, through the same fenced store steps as this project's own executor and status
// sync, so a report is recorded and announced exactly as theirs are.

// executable is GET /jobs/executable/{orchestrator}/{owner}: the jobs that owner may promote.
func (f *Function) executable(w http.ResponseWriter, r *http.Request) {
	orch := model.Orchestrator(r.PathValue("orchestrator"))
	if !orch.Valid() {
		writeError(w, fail(http.StatusBadRequest, "no valid orchestrator type provided: %q (want ocm or nuvla)", orch))
		return
	}
	if owner := r.PathValue("owner"); !auth.ClaimsFrom(r.Context()).ActsAs(owner) {
		writeError(w, notOwner(owner))
		return
	}
	js, fl := f.svc.executable(r.Context(), orch, r.PathValue("owner"))
	answer(w, http.StatusOK, js, fl, false)
}

// promote is PATCH /jobs/promote/{id} with {"owner_id": …}: the store's atomic promote.
// 204 when this owner now runs the job (its fencing token in the X-Fence header); 409 when it
// may not — a second promote of the same job is never a silent success.
func (f *Function) promote(w http.ResponseWriter, r *http.Request) {
	var body struct {
		OwnerID string `json:"owner_id"`
	}
	raw, ok := readBody(w, r)
	if !ok {
		return
	}
	if err := json.Unmarshal(raw, &body); err != nil || body.OwnerID == "" {
		writeError(w, fail(http.StatusUnprocessableEntity, `want {"owner_id": "<owner>"}`))
		return
	}
	if !auth.ClaimsFrom(r.Context()).ActsAs(body.OwnerID) {
		writeError(w, notOwner(body.OwnerID))
		return
	}
	c, fl := f.svc.promote(r.Context(), r.PathValue("id"), body.OwnerID)
	if fl != nil {
		writeError(w, fl)
		return
	}
	w.Header().Set("X-Fence", fmt.Sprint(c.Fence))
	w.WriteHeader(http.StatusNoContent)
}

// reportJob is PUT /jobs: a deployment manager reports the result of a job it promoted (state
// Finished, Degraded, or back to Progressing, with its resource if it sends one), as its
// owner, guarded by the owner and its fencing token (the body's `fence`, or the job's current
// one).
func (f *Function) reportJob(w http.ResponseWriter, r *http.Request) {
	raw, ok := readBody(w, r)
	if !ok {
		return
	}
	var j model.Job
	if err := json.Unmarshal(raw, &j); err != nil {
		writeError(w, fail(http.StatusUnprocessableEntity, "the body is not a job: %v", err))
		return
	}
	// The ICOS OCM deployment manager sends the job as it polled it (before its promote: no
	// owner_id) with ?id=…: the job is the query's when the body names none, and the owner
	// the one the token acts as.
	if j.ID == "" {
		j.ID = r.URL.Query().Get("id")
	}
	if j.OwnerID == "" {
		if c := auth.ClaimsFrom(r.Context()); c != nil {
			j.OwnerID = c.Owner
		}
	}
	if q := r.URL.Query().Get("id"); q != "" && q != j.ID {
		writeError(w, fail(http.StatusUnprocessableEntity, "the query names job %s, the body job %s", q, j.ID))
		return
	}
	if j.ID == "" || j.OwnerID == "" {
		writeError(w, fail(http.StatusUnprocessableEntity, "missing field(s): id, owner_id (the job and the owner reporting it; owner_id may come from the token's owner claim)"))
		return
	}
	if !auth.ClaimsFrom(r.Context()).ActsAs(j.OwnerID) {
		writeError(w, notOwner(j.OwnerID))
		return
	}
	if j.State != model.Progressing && j.State != model.Finished && j.State != model.Degraded {
		writeError(w, fail(http.StatusUnprocessableEntity, "state %d: a report sets 2 (Progressing), 3 (Finished) or 4 (Degraded)", j.State))
		return
	}
	after, fl := f.svc.report(r.Context(), j.ID, j.OwnerID, j.Fence, j.State, j.Resource)
	answer(w, http.StatusOK, after, fl, false)
}

// resourceStatus is GET /resources/status/{job}: the job's resource conditions (ICOS shape).
func (f *Function) resourceStatus(w http.ResponseWriter, r *http.Request) {
	j, fl := f.svc.job(r.Context(), r.PathValue("id"))
	switch {
	case fl != nil:
		writeError(w, fl)
	case j.Resource == nil || len(j.Resource.Conditions) == 0:
		writeJSON(w, http.StatusOK, []any{})
	default:
		writeJSON(w, http.StatusOK, j.Resource.Conditions)
	}
}

// writeResourceStatus is PUT /resources/status: a deployment manager reports a job's resource
// (conditions, one per type, merged with metav1.Condition semantics), as the job's owner.
func (f *Function) writeResourceStatus(w http.ResponseWriter, r *http.Request) {
	raw, ok := readBody(w, r)
	if !ok {
		return
	}
	var res model.Resource
	if err := json.Unmarshal(raw, &res); err != nil {
		writeError(w, fail(http.StatusUnprocessableEntity, "the body is not a resource: %v", err))
		return
	}
	if res.JobID == "" {
		// The ICOS OCM deployment manager sends only resource_uuid and resource_name (1.4.1
		// finds the job by its resource); a job's resource_uuid is the job's id.
		if res.ResourceUUID == "" {
			writeError(w, fail(http.StatusUnprocessableEntity, "missing field(s): job_id or resource_uuid"))
			return
		}
		res.JobID = res.ResourceUUID
	}
	cur, fl := f.svc.job(r.Context(), res.JobID)
	if fl != nil {
		if fl.Status == http.StatusNotFound && res.ResourceUUID == res.JobID {
			fl = fail(http.StatusNotFound, "no job has resource_uuid %s", res.ResourceUUID)
		}
		writeError(w, fl)
		return
	}
	if cur.OwnerID == "" {
		writeError(w, fail(http.StatusConflict, "job %s has no owner yet: promote it before reporting its resource", res.JobID))
		return
	}
	if !auth.ClaimsFrom(r.Context()).ActsAs(cur.OwnerID) {
		writeError(w, notOwner(cur.OwnerID))
		return
	}
	after, fl := f.svc.report(r.Context(), res.JobID, cur.OwnerID, 0, 0, &res)
	if fl != nil {
		writeError(w, fl)
		return
	}
	writeJSON(w, http.StatusOK, after.Resource.Identified(after))
}

// notOwner is the answer to a deployment manager acting for an owner its token does not name.
func notOwner(owner string) *Failure {
	return fail(http.StatusForbidden, "the token does not act as owner %q (its owner_id claim names another, or none)", owner)
}
