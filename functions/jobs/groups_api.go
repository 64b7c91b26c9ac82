package jobs

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/ocm-jobs/ocm-jobs/functions/jobs/webui"
	"github.com/ocm-jobs/ocm-jobs/shared/auth"
	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/objectstore"
	"github.com/ocm-jobs/ocm-jobs/shared/polman"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
)

// Routes are the ICOS Job Manager REST routes, with its paths, JSON and status codes, plus
// GET /jobmanager/jobs/{id}/history, GET /jobmanager/groups/{id}/activity, PUT
// /jobmanager/groups/deploy/{id} (start) and the web UI at /ui/: the groups
// API (this file) for users, the deployment-manager API (dm_api.go) for deployment managers.
// Every route but /jobmanager/healthz and the UI's files needs a bearer token.
func (f *Function) Routes() map[string]http.Handler {
	out := map[string]http.Handler{}
	for _, rt := range f.routes() {
		h := http.Handler(http.HandlerFunc(rt.serve))
		if rt.roles != nil {
			h = f.verifier.Require(rt.roles...)(polman.CarryCallerToken(h))
		}
		out[rt.pattern] = h
	}
	return out
}

// route is one REST route: the roles that may call it (nil: anyone) and what serves it.
type route struct {
	pattern string
	roles   []auth.Role
	serve   func(http.ResponseWriter, *http.Request)
}

// Who may do what: users run job groups, deployment managers take and report jobs (as the
// owner their token names), readers read; all of them read.
var (
	readers = []auth.Role{auth.RoleUser, auth.RoleDeploymentManager, auth.RoleReader}
	users   = []auth.Role{auth.RoleUser}
	dms     = []auth.Role{auth.RoleDeploymentManager}
)

func (f *Function) routes() []route {
	return []route{
		{"GET /jobmanager/healthz", nil, f.healthz},
		// The web UI's page, script and style: public, as a sign-in page is; every read and
		// action it makes goes through the routes below with the user's bearer token.
		{"GET " + webui.Path, nil, webui.Handler().ServeHTTP},

		{"GET /jobmanager/groups", readers, f.listGroups},
		{"GET /jobmanager/groups/{id}", readers, f.getGroup},
		{"GET /jobmanager/groups/{id}/activity", readers, f.activity},
		{"GET /jobmanager/groups/{id}/report", readers, f.getReport},
		{"GET /jobmanager/jobs", readers, f.listJobs},
		{"GET /jobmanager/jobs/{id}", readers, f.getJob},
		{"GET /jobmanager/jobs/{id}/history", readers, f.history},
		{"GET /jobmanager/resources/status/{id}", readers, f.resourceStatus},

		{"POST /jobmanager/groups", users, f.createGroup},
		{"PUT /jobmanager/groups", users, f.updateGroup},
		{"DELETE /jobmanager/groups/{id}", users, f.deleteGroup},
		{"PUT /jobmanager/groups/{id}", users, f.replaceGroup},
		{"PUT /jobmanager/groups/undeploy/{id}", users, f.stopGroup},
		{"PUT /jobmanager/groups/stop/{id}", users, f.stopGroup},
		{"PUT /jobmanager/groups/deploy/{id}", users, f.startGroup},
		{"PUT /jobmanager/groups/start/{id}", users, f.startGroup},
		{"PUT /jobmanager/groups/restart/{id}", users, f.restartGroup},
		{"DELETE /jobmanager/jobs/{id}", users, f.undeployJob},

		{"GET /jobmanager/jobs/executable/{orchestrator}/{owner}", dms, f.executable},
		{"PATCH /jobmanager/jobs/promote/{id}", dms, f.promote},
		{"PUT /jobmanager/jobs", dms, f.reportJob},
		{"PUT /jobmanager/resources/status", dms, f.writeResourceStatus},
	}
}

// RouteRoles is the roles each REST route of the jobs function needs (nil: none): the table
// Routes is built from, for the documentation and the route × role test.
func RouteRoles() map[string][]auth.Role {
	out := map[string][]auth.Role{}
	for _, rt := range (&Function{}).routes() {
		out[rt.pattern] = rt.roles
	}
	return out
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

// answer writes a result: the value, or the failure (with the value beside it when there is
// one, e.g. a group updated except some jobs).
func answer(w http.ResponseWriter, status int, v any, fl *Failure, partial bool) {
	switch {
	case fl != nil && partial:
		writeJSON(w, fl.Status, map[string]any{"error": fl.Message, "group": v})
	case fl != nil:
		writeError(w, fl)
	default:
		writeJSON(w, status, v)
	}
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
	if err := f.svc.healthy(r.Context()); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (f *Function) listGroups(w http.ResponseWriter, r *http.Request) {
	gs, fl := f.svc.groups(r.Context())
	answer(w, http.StatusOK, gs, fl, false)
}

// createGroup is POST /groups: the body is the application descriptor; 201 with the group.
func (f *Function) createGroup(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	if IsOakestraSLA(body) {
		f.createOakestra(w, r, body)
		return
	}
	g, fl := f.svc.createGroup(r.Context(), body, "", caller(r))
	answer(w, http.StatusCreated, g, fl, false)
}

// updateGroup is PUT /groups: {"id": …, "descriptor": …, "rollout": <optional strategy, wins
// over the descriptor's>}.
func (f *Function) updateGroup(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	var u struct {
		ID         string          `json:"id"`
		Descriptor json.RawMessage `json:"descriptor"`
		Rollout    json.RawMessage `json:"rollout"`
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
	rollout, fl := strictRollout(u.Rollout)
	if fl != nil {
		writeError(w, fl)
		return
	}
	g, fl := f.svc.updateGroupRolledOut(r.Context(), u.ID, desc, caller(r), rollout)
	answer(w, http.StatusOK, g, fl, g != nil)
}

// replaceGroup is PUT /groups/{id}, the icos-shell's update: the body is the new descriptor
// itself (the shell sends it as JSON without a Content-Type; YAML is taken too).
func (f *Function) replaceGroup(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	g, fl := f.svc.updateGroup(r.Context(), r.PathValue("id"), body, caller(r))
	answer(w, http.StatusOK, g, fl, g != nil)
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
	g, err := f.svc.group(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) && f.svc.archiver != nil {
		f.getArchivedGroup(w, r, id, err)
		return
	}
	answer(w, http.StatusOK, f.svc.withRegistration(r.Context(), g), failureOf(err), false)
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

func (f *Function) deleteGroup(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	fl := f.svc.deleteGroup(r.Context(), id, caller(r))
	answer(w, http.StatusOK, map[string]string{"id": id, "status": "deleted"}, fl, false)
}

func (f *Function) stopGroup(w http.ResponseWriter, r *http.Request) {
	g, fl := f.svc.stopGroup(r.Context(), r.PathValue("id"), caller(r))
	answerOrder(w, g, fl)
}

func (f *Function) startGroup(w http.ResponseWriter, r *http.Request) {
	g, fl := f.svc.startGroup(r.Context(), r.PathValue("id"), caller(r))
	answerOrder(w, g, fl)
}

// answerOrder answers a stop or start: 200 with the group when it was carried out, 202 with
// the group (its pending order set) when it waits for jobs being executed.
func answerOrder(w http.ResponseWriter, g *model.JobGroup, fl *Failure) {
	if fl != nil && fl.Status == http.StatusAccepted {
		w.Header().Set("X-Ocm-Jobs-Pending", fl.Message)
		writeJSON(w, http.StatusAccepted, g)
		return
	}
	answer(w, http.StatusOK, g, fl, g != nil)
}

func (f *Function) listJobs(w http.ResponseWriter, r *http.Request) {
	js, fl := f.svc.jobs(r.Context())
	answer(w, http.StatusOK, js, fl, false)
}

func (f *Function) getJob(w http.ResponseWriter, r *http.Request) {
	j, fl := f.svc.job(r.Context(), r.PathValue("id"))
	answer(w, http.StatusOK, j, fl, false)
}

// undeployJob is DELETE /jobs/{id}: the job's deployment is removed (it becomes a
// DeleteDeployment job; one that never ran is finished at once). The record stays until its
// group is deleted, so its history is never lost.
func (f *Function) undeployJob(w http.ResponseWriter, r *http.Request) {
	j, fl := f.svc.undeployJob(r.Context(), r.PathValue("id"), caller(r))
	answer(w, http.StatusOK, j, fl, false)
}

// activity is GET /groups/{id}/activity (an addition): the group's jobs' histories as one
// timeline, newest first, and the incompliances about it with what became of them.
func (f *Function) activity(w http.ResponseWriter, r *http.Request) {
	a, fl := f.svc.activity(r.Context(), r.PathValue("id"))
	answer(w, http.StatusOK, a, fl, false)
}

func (f *Function) history(w http.ResponseWriter, r *http.Request) {
	h, fl := f.svc.history(r.Context(), r.PathValue("id"))
	answer(w, http.StatusOK, h, fl, false)
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
