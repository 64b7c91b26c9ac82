package jobs

import (
	"context"
	"net/http"
)

// A component that a Placement places (its own, the descriptor's or the default one) gets one
// job per cluster the Placement decided, and follows it: the status sync tick compares the
// Placement's decisions with the component's jobs (statussync/placement.go). The store keeps
// which component follows which Placement (store.BindPlacements).

// bindPlacements records the Placements app's components follow in group id, and forgets
// those of components that name their clusters now or are gone (gone).
func (s *service) bindPlacements(ctx context.Context, id string, app *Application, gone []string) *Failure {
	bind := map[string]string{}
	unbind := append([]string{}, gone...)
	for _, c := range app.Components {
		if c.Bound != "" {
			bind[c.Name] = c.Bound
		} else {
			unbind = append(unbind, c.Name)
		}
	}
	if err := s.store.BindPlacements(ctx, id, bind, unbind); err != nil {
		fl := failureOf(err)
		fl.Message = "group " + id + " is stored, but which Placements its components follow is not (send the same request again): " + fl.Message
		return fl
	}
	return nil
}

// resolveExisting places an update's components that have jobs already and name no clusters
// by their Placement, so a component that follows a Placement keeps one job per cluster it
// decides (matched by cluster) instead of falling back to one cluster.
func (s *service) resolveExisting(ctx context.Context, app *Application, existing map[string]bool, descriptor []byte) *Failure {
	sub := &Application{Name: app.Name, Namespace: app.Namespace, Placement: app.Placement}
	var at []int
	for i, c := range app.Components {
		if existing[c.Name] && c.Targets == nil && firstNonEmpty(c.Placement, app.Placement, s.targeter.DefaultPlacement) != "" {
			sub.Components = append(sub.Components, c)
			at = append(at, i)
		}
	}
	if len(sub.Components) == 0 {
		return nil
	}
	// Without the matchmaker: a job that ran keeps its cluster unless a Placement says more.
	t := *s.targeter
	t.MatchmakingURL = ""
	if _, err := t.Resolve(ctx, sub, descriptor); err != nil {
		return fail(http.StatusServiceUnavailable, "resolving targets: %v", err)
	}
	for k, i := range at {
		c := sub.Components[k]
		app.Components[i].Targets, app.Components[i].MoreTargets, app.Components[i].Bound = c.Targets, c.MoreTargets, c.Bound
	}
	return nil
}

// goneComponents are the components with jobs that app no longer has.
func goneComponents(app *Application, hasJobs map[string]bool) []string {
	keep := map[string]bool{}
	for _, c := range app.Components {
		keep[c.Name] = true
	}
	var out []string
	for c := range hasJobs {
		if !keep[c] {
			out = append(out, c)
		}
	}
	return out
}

// copyBound copies the Placements sub's components follow to the same components of app.
func copyBound(app, sub *Application) {
	bound := map[string]string{}
	for _, c := range sub.Components {
		bound[c.Name] = c.Bound
	}
	for i, c := range app.Components {
		if b, ok := bound[c.Name]; ok {
			app.Components[i].Bound = b
		}
	}
}
