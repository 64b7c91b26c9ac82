package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/google/uuid"
	"knative.dev/pkg/logging"

	"github.com/ocm-jobs/ocm-jobs/shared/auth"
	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/objectstore"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
)

// Routes are the ICOS Job Manager REST routes, with its paths, JSON and status codes, plus
// GET /jobmanager/jobs/{id}/history and PUT /jobmanager/groups/deploy/{id} (start). Every
// route but /jobmanager/healthz needs a bearer token.
func (f *Function) Routes() map[string]http.Handler {
	a := f.verifier.Middleware
	h := func(fn func(w http.ResponseWriter, r *http.Request)) http.Handler { return a(http.HandlerFunc(fn)) }
	return map[string]http.Handler{
		"GET /jobmanager/healthz": http.HandlerFunc(f.healthz),

		"GET /jobmanager/groups":                                 h(f.listGroups),
		"POST /jobmanager/groups":                                h(f.createGroup),
		"PUT /jobmanager/groups":                                 h(f.updateGroup),
		"GET /jobmanager/groups/{id}":                            h(f.getGroup),
		"DELETE /jobmanager/groups/{id}":                         h(f.deleteGroup),
		"PUT /jobmanager/groups/undeploy/{id}":                   h(f.stopGroup),
		"PUT /jobmanager/groups/deploy/{id}":                     h(f.startGroup),
		"GET /jobmanager/jobs":                                   h(f.listJobs),
		"PUT /jobmanager/jobs":                                   h(f.reportJob),
		"GET /jobmanager/jobs/{id}":                              h(f.getJob),
		"DELETE /jobmanager/jobs/{id}":                           h(f.undeployJob),
		"GET /jobmanager/jobs/{id}/history":                      h(f.history),
		"GET /jobmanager/jobs/executable/{orchestrator}/{owner}": h(f.executable),
		"PATCH /jobmanager/jobs/promote/{id}":                    h(f.promote),
		"GET /jobmanager/resources/status/{id}":                  h(f.resourceStatus),
		"PUT /jobmanager/resources/status":                       h(f.writeResourceStatus),
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if v != nil {
		_ = json.NewEncoder(w).Encode(v)
	}
}

func writeError(w http.ResponseWriter, f *Failure) {
	writeJSON(w, f.Status, map[string]string{"error": f.Message})
}

func readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		writeError(w, fail(http.StatusBadRequest, "reading the body: %v", err))
		return nil, false
	}
	if len(body) == 0 {
		writeError(w, fail(http.StatusUnprocessableEntity, "the request has no body"))
		return nil, false
	}
	return body, true
}

func (f *Function) healthz(w http.ResponseWriter, r *http.Request) {
	if err := f.svc.store.Ping(r.Context()); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (f *Function) listGroups(w http.ResponseWriter, r *http.Request) {
	gs, err := f.svc.store.ListGroups(r.Context())
	if err != nil {
		writeError(w, failureOf(err))
		return
	}
	writeJSON(w, http.StatusOK, gs)
}

// createGroup is POST /groups: the body is the application descriptor; 201 with the group.
func (f *Function) createGroup(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	g, fl := f.svc.createGroup(r.Context(), body, "", caller(r))
	if fl != nil {
		writeError(w, fl)
		return
	}
	writeJSON(w, http.StatusCreated, g)
}

// updateGroup is PUT /groups: {"id": …, "descriptor": …} or an ICOS JobGroup whose jobs carry
// their component's new manifests.
func (f *Function) updateGroup(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	var u struct {
		ID         string          `json:"id"`
		Descriptor json.RawMessage `json:"descriptor"`
	}
	if err := json.Unmarshal(body, &u); err != nil || u.ID == "" || len(u.Descriptor) == 0 {
		writeError(w, fail(http.StatusUnprocessableEntity, `want {"id": "<group id>", "descriptor": <application descriptor, as YAML text or JSON>}`))
		return
	}
	desc := []byte(u.Descriptor)
	var s string
	if json.Unmarshal(u.Descriptor, &s) == nil {
		desc = []byte(s)
	}
	g, fl := f.svc.updateGroup(r.Context(), u.ID, desc, caller(r))
	if fl != nil && g == nil {
		writeError(w, fl)
		return
	}
	if fl != nil {
		writeJSON(w, fl.Status, map[string]any{"error": fl.Message, "group": g})
		return
	}
	writeJSON(w, http.StatusOK, g)
}

// HeaderArchived marks an answer read from the archive rather than from Redis.
const HeaderArchived = "X-Ocm-Jobs-Archived"

// archivedGroup is GET /groups/{id} of a group Redis no longer has: the group as it was when
// deleted, marked "archived", with when it was deleted and its jobs' histories.
type archivedGroup struct {
	model.JobGroup
	Archived   bool                            `json:"archived"`
	DeletedAt  *time.Time                      `json:"deleted_at,omitempty"`
	ArchivedAt time.Time                       `json:"archived_at"`
	Histories  map[string][]model.HistoryEntry `json:"histories,omitempty"`
}

func (f *Function) getGroup(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	g, err := f.svc.store.GetGroup(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) && f.svc.archiver != nil {
		f.getArchivedGroup(w, r, id, err)
		return
	}
	if err != nil {
		writeError(w, failureOf(err))
		return
	}
	writeJSON(w, http.StatusOK, g)
}

func (f *Function) deleteGroup(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if fl := f.svc.deleteGroup(r.Context(), id, caller(r)); fl != nil {
		writeError(w, fl)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"id": id, "status": "deleted"})
}

func (f *Function) stopGroup(w http.ResponseWriter, r *http.Request) {
	f.reopen(w, r, f.svc.stopGroup)
}

func (f *Function) startGroup(w http.ResponseWriter, r *http.Request) {
	f.reopen(w, r, f.svc.startGroup)
}

func (f *Function) reopen(w http.ResponseWriter, r *http.Request, op func(ctx context.Context, id, by string) (*model.JobGroup, *Failure)) {
	g, fl := op(r.Context(), r.PathValue("id"), caller(r))
	switch {
	case fl != nil && g == nil:
		writeError(w, fl)
	case fl != nil:
		writeJSON(w, fl.Status, map[string]any{"error": fl.Message, "group": g})
	default:
		writeJSON(w, http.StatusOK, g)
	}
}

func (f *Function) listJobs(w http.ResponseWriter, r *http.Request) {
	js, err := f.svc.store.ListJobs(r.Context())
	if err != nil {
		writeError(w, failureOf(err))
		return
	}
	writeJSON(w, http.StatusOK, js)
}

func (f *Function) getJob(w http.ResponseWriter, r *http.Request) {
	j, err := f.svc.store.GetJob(r.Context(), r.PathValue("id"))
	if err != nil {
		writeError(w, failureOf(err))
		return
	}
	writeJSON(w, http.StatusOK, j)
}

// undeployJob is DELETE /jobs/{id}: the job's deployment is removed (it becomes a
// DeleteDeployment job; one that never ran is finished at once). The record stays until its
// group is deleted, so its history is never lost.
func (f *Function) undeployJob(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, err := f.svc.store.Reopen(r.Context(), id, store.Reopen{Type: model.DeleteDeployment, By: caller(r), Why: "job deleted through the API"}); err != nil {
		writeError(w, failureOf(err))
		return
	}
	j, err := f.svc.store.GetJob(r.Context(), id)
	if err != nil {
		writeError(w, failureOf(err))
		return
	}
	f.svc.publishCreated(r.Context(), executable([]model.Job{*j}))
	writeJSON(w, http.StatusOK, j)
}

func (f *Function) history(w http.ResponseWriter, r *http.Request) {
	h, err := f.svc.store.History(r.Context(), r.PathValue("id"))
	if err != nil {
		writeError(w, failureOf(err))
		return
	}
	writeJSON(w, http.StatusOK, h)
}

// executable is GET /jobs/executable/{orchestrator}/{owner}: the jobs that owner may promote.
func (f *Function) executable(w http.ResponseWriter, r *http.Request) {
	orch := model.Orchestrator(r.PathValue("orchestrator"))
	if !orch.Valid() {
		writeError(w, fail(http.StatusBadRequest, "no valid orchestrator type provided: %q (want ocm or nuvla)", orch))
		return
	}
	js, err := f.svc.store.ExecutableJobs(r.Context(), orch, r.PathValue("owner"))
	if err != nil {
		writeError(w, failureOf(err))
		return
	}
	if js == nil {
		js = []model.Job{}
	}
	writeJSON(w, http.StatusOK, js)
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
	c, err := f.svc.store.Promote(r.Context(), r.PathValue("id"), body.OwnerID, "api:"+body.OwnerID+":"+uuid.NewString())
	if err != nil {
		writeError(w, failureOf(err))
		return
	}
	w.Header().Set("X-Fence", fmt.Sprint(c.Fence))
	w.WriteHeader(http.StatusNoContent)
}

// reportJob is PUT /jobs: a deployment manager reports the result of a job it promoted (state
// Finished, Degraded, or back to Progressing), as its owner. The write is guarded by the
// owner and its fencing token (the body's `fence`, or the job's current one).
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
	if j.ID == "" || j.OwnerID == "" {
		writeError(w, fail(http.StatusUnprocessableEntity, "missing field(s): id, owner_id (the job and the owner reporting it)"))
		return
	}
	ctx := r.Context()
	cur, err := f.svc.store.GetJob(ctx, j.ID)
	if err != nil {
		writeError(w, failureOf(err))
		return
	}
	c := store.ClaimOf(cur)
	c.Owner = j.OwnerID
	if j.Fence != 0 {
		c.Fence = j.Fence
	}
	why := "reported by " + j.OwnerID
	if j.Resource != nil {
		if cond := j.Resource.Condition(model.ConditionDegraded); cond != nil && cond.Message != "" {
			why = cond.Message
		}
	}
	switch j.State {
	case model.Finished:
		_, err = f.svc.store.Finish(ctx, c, why)
	case model.Degraded:
		_, err = f.svc.store.Degrade(ctx, c, why)
	case model.Progressing:
		_, err = f.svc.store.Progress(ctx, c, why)
	default:
		writeError(w, fail(http.StatusUnprocessableEntity, "state %d: a report sets 2 (Progressing), 3 (Finished) or 4 (Degraded)", j.State))
		return
	}
	if err != nil {
		writeError(w, failureOf(err))
		return
	}
	if j.Resource != nil {
		if fl := f.mergeResource(r, c, cur, j.Resource); fl != nil {
			writeError(w, fl)
			return
		}
	}
	after, err := f.svc.store.GetJob(ctx, j.ID)
	if err != nil {
		writeError(w, failureOf(err))
		return
	}
	writeJSON(w, http.StatusOK, after)
}

// resourceStatus is GET /resources/status/{job}: the job's resource conditions (ICOS shape).
func (f *Function) resourceStatus(w http.ResponseWriter, r *http.Request) {
	j, err := f.svc.store.GetJob(r.Context(), r.PathValue("id"))
	if err != nil {
		writeError(w, failureOf(err))
		return
	}
	if j.Resource == nil || len(j.Resource.Conditions) == 0 {
		writeJSON(w, http.StatusOK, []any{})
		return
	}
	writeJSON(w, http.StatusOK, j.Resource.Conditions)
}

// writeResourceStatus is PUT /resources/status: a deployment manager reports a job's resource
// (conditions, one per type, merged with metav1.Condition semantics).
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
		writeError(w, fail(http.StatusUnprocessableEntity, "missing field(s): job_id"))
		return
	}
	cur, err := f.svc.store.GetJob(r.Context(), res.JobID)
	if err != nil {
		writeError(w, failureOf(err))
		return
	}
	if cur.OwnerID == "" {
		writeError(w, fail(http.StatusConflict, "job %s has no owner yet: promote it before reporting its resource", res.JobID))
		return
	}
	if fl := f.mergeResource(r, store.ClaimOf(cur), cur, &res); fl != nil {
		writeError(w, fl)
		return
	}
	after, err := f.svc.store.GetJob(r.Context(), res.JobID)
	if err != nil {
		writeError(w, failureOf(err))
		return
	}
	writeJSON(w, http.StatusOK, after.Resource)
}

// mergeResource sets the reported conditions on the stored resource (one per type,
// lastTransitionTime kept when the status is unchanged) and the reported identity fields.
func (f *Function) mergeResource(r *http.Request, c store.Claim, cur *model.Job, in *model.Resource) *Failure {
	merged := model.Resource{ID: cur.ID, JobID: cur.ID}
	if cur.Resource != nil {
		merged = *cur.Resource
	}
	for _, cond := range in.Conditions {
		merged.SetCondition(cond)
	}
	if in.ResourceUUID != "" {
		merged.ResourceUUID = in.ResourceUUID
	}
	if in.ResourceName != "" {
		merged.ResourceName = in.ResourceName
	}
	merged.JobID = cur.ID
	if _, err := f.svc.store.WriteResourceStatus(r.Context(), c, merged); err != nil {
		fl := failureOf(err)
		if errors.Is(err, store.ErrInvalid) {
			fl.Status = http.StatusUnprocessableEntity
		}
		logging.FromContext(r.Context()).Debugw("resource status refused", "job", cur.ID, "error", err)
		return fl
	}
	return nil
}

// caller names who made a request, for the history: the token's user, else the address.
func caller(r *http.Request) string {
	if c := auth.ClaimsFrom(r.Context()); c != nil {
		if c.PreferredUsername != "" {
			return "api:" + c.PreferredUsername
		}
		if c.Subject != "" {
			return "api:" + c.Subject
		}
	}
	return "api:" + r.RemoteAddr
}

// getArchivedGroup answers GET /groups/{id} from the archive; notFound is Redis' answer,
// kept when the archive has no such group either.
func (f *Function) getArchivedGroup(w http.ResponseWriter, r *http.Request, id string, notFound error) {
	a, err := f.svc.archiver.read(r.Context(), id)
	switch {
	case errors.Is(err, objectstore.ErrNotFound):
		writeError(w, failureOf(notFound))
	case errors.Is(err, objectstore.ErrUnavailable):
		writeError(w, fail(http.StatusServiceUnavailable, "group %s is not in Redis and the archive is unavailable: %v", id, err))
	case err != nil:
		writeError(w, fail(http.StatusInternalServerError, "reading the archive of group %s: %v", id, err))
	default:
		w.Header().Set(HeaderArchived, "true")
		writeJSON(w, http.StatusOK, archivedGroup{JobGroup: a.Group, Archived: true, DeletedAt: a.DeletedAt,
			ArchivedAt: a.ArchivedAt, Histories: a.Histories})
	}
}
