package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
	"sigs.k8s.io/yaml"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
)

// restartGroup restarts the running workloads of a group (of one component when component
// is set), as `kubectl rollout restart` does: every job that ran and ended becomes an
// UpdateDeployment of sub-type restart, whose execution sets the pod templates' restart
// annotation to the time the restart was ordered and changes nothing else. order names the
// request: a job it re-opened once is not re-opened again when the same order is delivered
// again. Jobs being executed (or waiting for another order) refuse: 409 with the group, the
// others restarted; jobs stopped or never started are left alone.
func (s *service) restartGroup(ctx context.Context, id, component, order, by string) (*model.JobGroup, *Failure) {
	g, err := s.store.GetGroup(ctx, id)
	if err != nil {
		return nil, failureOf(err)
	}
	now, err := s.store.Now(ctx)
	if err != nil {
		return nil, failureOf(err)
	}
	rem := &model.Remediation{Action: model.Restart, RestartedAt: now.UTC().Format(time.RFC3339Nano), Order: order}
	var refused []string
	found, restarted := false, 0
	var running []model.Job
	for _, j := range g.Jobs {
		if component != "" && j.Component != component {
			continue
		}
		found = true
		if j.Type == model.DeleteDeployment || j.Fence == 0 {
			continue // stopped, or never deployed: nothing runs
		}
		running = append(running, j)
	}
	plan, fresh, fl := s.restartRollout(ctx, g, order, running)
	if fl != nil {
		return nil, fl
	}
	var notTaken []string // jobs of the rollout that did not take the order now
	for _, j := range running {
		ro := store.Reopen{Type: model.UpdateDeployment, SubType: model.Restart,
			Remediation: rem, Order: order, By: by, Why: "restart ordered"}
		if plan != nil {
			ro.KeepPrevious, ro.Why = true, "restart ordered (rollout "+plan.ID+")"
			if plan.HeldBy(j.ID) {
				ro.Hold = plan.ID
			}
		}
		_, err := s.store.Reopen(ctx, j.ID, ro)
		if err != nil && (fresh || !errors.Is(err, store.ErrOrderSeen)) {
			// A rollout this order started now waits only for the jobs that took it now: one
			// that took it before (an order redelivered after another change) or refused it
			// would never count, and the rollout would wait for it for ever.
			notTaken = append(notTaken, j.ID)
		}
		switch {
		case err == nil, errors.Is(err, store.ErrOrderSeen):
			restarted++
		case errors.Is(err, store.ErrWrongState):
			refused = append(refused, fmt.Sprintf("%s (%s, %s)", j.ID, j.Type, j.State))
		default:
			return nil, failureOf(err)
		}
	}
	if plan != nil && len(notTaken) > 0 {
		if err := s.store.DropFromRollout(ctx, id, plan.ID, notTaken); err != nil {
			return nil, failureOf(err)
		}
	}
	if component != "" && !found {
		return nil, fail(http.StatusNotFound, "group %s has no component %q", id, component)
	}
	s.announce(ctx, id)
	after, err := s.group(ctx, id)
	if err != nil {
		return nil, failureOf(err)
	}
	switch {
	case len(refused) > 0:
		return after, fail(http.StatusConflict, "group %s: %d jobs restarted; these are being executed or wait for another order, retry when they end: %s",
			id, restarted, list(refused))
	case restarted == 0:
		return after, fail(http.StatusConflict, "group %s has no deployed workload to restart (stopped, or not deployed yet)", id)
	}
	return after, nil
}

// restartRollout plans a restart's waves when the group rolls changes out in waves (its last
// rollout's strategy) and the running jobs span several clusters, and starts the rollout (nil:
// all at once; fresh: this call started it). The rollout is named after the order, so a
// redelivered order goes on with the rollout its first delivery started. As for an update, a job being executed would never take
// the order and the rollout would wait for it forever: the restart is refused whole (409), as
// it is while another rollout is rolling.
func (s *service) restartRollout(ctx context.Context, g *model.JobGroup, order string, running []model.Job) (r *model.Rollout, fresh bool, fl *Failure) {
	if g.Rollout == nil {
		return nil, false, nil
	}
	id := "restart-" + uuid.NewSHA1(uuid.NameSpaceURL, []byte("ocm-jobs/rollout/"+order)).String()
	plan := model.PlanRollout(id, "restart", &g.Rollout.Strategy, running)
	if plan == nil {
		return nil, false, nil
	}
	if g.Rollout.ID != plan.ID {
		var busy []string
		for _, j := range running {
			if j.State != model.Finished && j.State != model.Degraded {
				busy = append(busy, fmt.Sprintf("%s (%s, %s)", j.ID, j.Type, j.State))
			}
		}
		if len(busy) > 0 {
			return nil, false, fail(http.StatusConflict, "group %s: jobs being executed: %s (retry the restart in waves when they end)", g.ID, list(busy))
		}
	}
	r, ok, err := s.store.StartRollout(ctx, g.ID, plan)
	if err != nil {
		return nil, false, failureOf(err)
	}
	if !ok {
		return nil, false, fail(http.StatusConflict, "group %s: rollout %s is still %s (wave %d of %d); restart when it ends", g.ID, r.ID, r.Phase, r.Wave+1, len(r.Waves))
	}
	return r, r == plan, nil
}

// restartRef reads a restart order: {"id": <group>, "component": <optional>} (YAML or JSON),
// or the group id as the event subject.
func restartRef(e event.Event) (id, component string, err error) {
	var ref struct {
		ID        string `json:"id"`
		Component string `json:"component"`
	}
	if len(e.Data()) > 0 {
		if err := yaml.Unmarshal(e.Data(), &ref); err != nil {
			return "", "", fmt.Errorf(`data is not {"id": "<group id>", "component": "<optional component>"}: %v`, err)
		}
	}
	if ref.ID == "" {
		ref.ID = e.Subject()
	}
	if ref.ID == "" {
		return "", "", fmt.Errorf("missing field(s): id (the job group id, in the data or as the event subject)")
	}
	return ref.ID, ref.Component, nil
}

// eventOrder names the order an event carries, the same for every delivery of it.
func eventOrder(source, id string) string {
	return "event:" + uuid.NewSHA1(uuid.NameSpaceURL, []byte("ocm-jobs/order/"+source+"/"+id)).String()
}

// restartGroup is PUT /groups/restart/{id}: the component is ?component= or the body's
// {"component": …} (no body: every component). 200 with the group; 409 when some jobs are
// being executed (the others are restarted: send it again once they end).
func (f *Function) restartGroup(w http.ResponseWriter, r *http.Request) {
	component := r.URL.Query().Get("component")
	if body, err := readOptionalBody(r); err != nil {
		writeError(w, fail(http.StatusBadRequest, "reading the body: %v", err))
		return
	} else if len(body) > 0 {
		var b struct {
			Component string `json:"component"`
		}
		if err := json.Unmarshal(body, &b); err != nil {
			writeError(w, fail(http.StatusUnprocessableEntity, `want no body or {"component": "<component name>"}: %v`, err))
			return
		}
		if component != "" && b.Component != "" && component != b.Component {
			writeError(w, fail(http.StatusUnprocessableEntity, "the query names component %q and the body %q", component, b.Component))
			return
		}
		if b.Component != "" {
			component = b.Component
		}
	}
	g, fl := f.svc.restartGroup(r.Context(), r.PathValue("id"), component, "api:"+uuid.NewString(), caller(r))
	answer(w, http.StatusOK, g, fl, g != nil)
}

// readOptionalBody reads a small optional body (a restart's component).
func readOptionalBody(r *http.Request) ([]byte, error) {
	return io.ReadAll(io.LimitReader(r.Body, 64<<10))
}
