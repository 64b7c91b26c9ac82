package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
)

// ExtRollout is the create and update events' extension choosing the group's rollout
// strategy, as JSON (`{"strategy":"canary","canary":"cluster1"}`); it overrides the
// descriptor's `rollout`.
const ExtRollout = "rollout"

// rolloutOf reads the event's rollout extension (nil when absent).
func rolloutOf(e event.Event) (*model.RolloutStrategy, *Failure) {
	v, ok := e.Extensions()[ExtRollout]
	if !ok {
		return nil, nil
	}
	rs, fl := strictRollout(json.RawMessage(fmt.Sprint(v)))
	if fl != nil {
		fl.Message = fmt.Sprintf("the %s extension: %s", ExtRollout, fl.Message)
		return nil, fl
	}
	if rs == nil {
		return nil, fail(http.StatusUnprocessableEntity, "the %s extension: the rollout strategy is not valid: rollout: want a JSON object, got null", ExtRollout)
	}
	return rs, nil
}

// strictRollout reads a rollout strategy given as JSON (nil when absent or null): a field it
// does not know, or a value of the wrong type, is a 422 naming its path under rollout.
func strictRollout(raw json.RawMessage) (*model.RolloutStrategy, *Failure) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var rs model.RolloutStrategy
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rs); err != nil {
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &te) && te.Field != "":
			return nil, fail(http.StatusUnprocessableEntity, "the rollout strategy is not valid: rollout.%s: want a %s, got a JSON %s", te.Field, te.Type, te.Value)
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			return nil, fail(http.StatusUnprocessableEntity, "the rollout strategy is not valid: rollout.%s: not a field of a rollout strategy (strategy, canary, maxConcurrency, minSuccessTime, rollbackOnFailure)",
				strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`))
		}
		return nil, fail(http.StatusUnprocessableEntity, "the rollout strategy is not valid: rollout: %v", err)
	}
	return &rs, nil
}

// planRollout plans the waves of a change over the jobs it touches, when the strategy holds
// clusters back and the jobs span more than one cluster (nil otherwise: all at once). The
// strategy is checked against those clusters: a bad one is a 422 listing its paths.
func planRollout(s *model.RolloutStrategy, change string, jobs []model.Job) (*model.Rollout, *Failure) {
	if s == nil {
		return nil, nil
	}
	if ferr := s.Validate(model.ClustersOf(jobs)); ferr != nil {
		return nil, fail(http.StatusUnprocessableEntity, "the rollout strategy is not valid: %v", ferr.ViaField("rollout"))
	}
	return model.PlanRollout(change+"-"+uuid.NewString()[:8], change, s, jobs), nil
}

// replace is a job an update gives new manifests.
type replace struct {
	job       model.Job
	manifests []model.PlainManifest
}

// replaceRolledOut re-opens the jobs an update replaces: all at once, or, when the group's
// strategy holds clusters back and they span several, in waves: the rollout is written first
// (refused with 409 while another one is rolling), then the jobs of the first wave are
// re-opened and those of the later waves re-opened held; each keeps the manifests it ran
// with, for a rollback. The new jobs of clusters the update adds (placed) join the waves:
// it returns the plan, with which the caller stores them (those of later waves held).
func (s *service) replaceRolledOut(ctx context.Context, g *model.JobGroup, strategy *model.RolloutStrategy, rs []replace, placed []model.Job, by string, refused *[]string) (*model.Rollout, *Failure) {
	jobs := make([]model.Job, 0, len(rs)+len(placed))
	for _, r := range rs {
		jobs = append(jobs, r.job)
	}
	jobs = append(jobs, placed...)
	plan, fl := planRollout(strategy, "update", jobs)
	if fl != nil {
		return nil, fl
	}
	held := map[string]bool{}
	if plan != nil {
		// A job being executed would refuse its re-open and never count for the rollout,
		// which would then wait for it forever: the update is refused whole instead.
		var busy []string
		for _, r := range rs {
			if r.job.State == model.Progressing {
				busy = append(busy, r.job.ID)
			}
		}
		if len(busy) > 0 {
			return nil, fail(http.StatusConflict, "group %s: jobs being executed: %s (retry the rolled-out update when they finish)", g.ID, list(busy))
		}
		read, err := s.store.GetRollout(ctx, g.ID)
		if err != nil {
			return nil, failureOf(err)
		}
		if read.Rollout.Active() {
			return nil, fail(http.StatusConflict, "group %s: rollout %s is still %s (wave %d of %d); update it when it ends", g.ID, read.Rollout.ID, read.Rollout.Phase, read.Rollout.Wave+1, len(read.Rollout.Waves))
		}
		if _, err := s.store.AdvanceRollout(ctx, read, plan, nil); err != nil {
			return nil, failureOf(err)
		}
		for _, id := range plan.Held() {
			held[id] = true
		}
	}
	for _, r := range rs {
		ro := store.Reopen{Type: model.ReplaceDeployment, Manifests: r.manifests, By: by, Why: "group updated"}
		if plan != nil {
			ro.KeepPrevious = true
			ro.Why = "group updated (rollout " + plan.ID + ")"
			if held[r.job.ID] {
				ro.Hold = plan.ID
			}
		}
		if fl := s.reopen(ctx, refused, r.job, ro); fl != nil {
			return nil, fl
		}
	}
	return plan, nil
}
