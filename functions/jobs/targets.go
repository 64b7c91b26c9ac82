package jobs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/ocm"
)

// ErrTargetUnavailable means a source of targets could not be asked (the hub or the
// matchmaker is down): a transient failure, unlike a source that has no answer yet.
var ErrTargetUnavailable = errors.New("target source unreachable")

// Targeter resolves where each component runs, in this order: the component's own targets;
// an OCM Placement (the component's, the descriptor's, or the configured default) read from
// its PlacementDecisions on the hub; an external ICOS matchmaker. A component none of them
// can place keeps no target: its job stays Created, awaiting one, and the cron tick retries.
type Targeter struct {
	Hub                *ocm.Hub
	DefaultPlacement   string
	PlacementNamespace string
	MatchmakingURL     string
	Client             *http.Client
}

// Resolve fills the targets of app's components that have none. It returns, per component
// name, why a component is still without a target.
func (t *Targeter) Resolve(ctx context.Context, app *Application, descriptor []byte) (map[string]string, error) {
	missing := map[string]string{}
	var needMatchmaker bool
	for i := range app.Components {
		c := &app.Components[i]
		if c.Targets != nil {
			c.Bound = ""
			continue
		}
		placement := firstNonEmpty(c.Placement, app.Placement, t.DefaultPlacement)
		if placement != "" && t.Hub != nil {
			clusters, err := t.placement(ctx, placement)
			if ref, rerr := ocm.ParsePlacementRef(placement, t.PlacementNamespace); rerr == nil {
				// The component follows its Placement from now on (statussync/placement.go).
				c.Bound = ref.String()
			}
			switch {
			case err == nil:
				// One job per cluster the Placement chose (OCM's numberOfClusters), in
				// decision order.
				c.Targets, c.MoreTargets = placedTargets(clusters)
				continue
			case errors.Is(err, ErrTargetUnavailable):
				return nil, err
			default:
				missing[c.Name] = err.Error()
			}
		} else {
			missing[c.Name] = "no targets, no placement and no matchmaker"
		}
		needMatchmaker = true
	}
	if needMatchmaker && t.MatchmakingURL != "" {
		found, err := t.matchmake(ctx, descriptor)
		if err != nil {
			return nil, err
		}
		for i := range app.Components {
			c := &app.Components[i]
			if c.Targets == nil {
				if tg, ok := found[c.Name]; ok {
					c.Targets, c.Bound = tg, ""
					delete(missing, c.Name)
				} else {
					missing[c.Name] = "the matchmaker chose no target"
				}
			}
		}
	}
	return missing, nil
}

// ResolveOne finds a target for one component of a stored job (the cron tick's retry).
func (t *Targeter) ResolveOne(ctx context.Context, component, placement string) (*model.Target, error) {
	placement = firstNonEmpty(placement, t.DefaultPlacement)
	if placement == "" || t.Hub == nil {
		return nil, nil
	}
	clusters, err := t.placement(ctx, placement)
	if err != nil {
		if errors.Is(err, ErrTargetUnavailable) {
			return nil, err
		}
		return nil, nil
	}
	return &model.Target{ClusterName: clusters[0], Orchestrator: model.OCM}, nil
}

func (t *Targeter) placement(ctx context.Context, name string) ([]string, error) {
	ref, err := ocm.ParsePlacementRef(name, t.PlacementNamespace)
	if err != nil {
		return nil, err
	}
	clusters, err := t.Hub.PlacementClusters(ctx, ref)
	if err != nil && !errors.Is(err, ocm.ErrNoDecision) {
		return nil, fmt.Errorf("%w: %v", ErrTargetUnavailable, err)
	}
	return clusters, err
}

// matchmake asks an ICOS matchmaker: the descriptor POSTed as YAML, the same document read
// back with the components' targets filled in.
func (t *Targeter) matchmake(ctx context.Context, descriptor []byte) (map[string]*model.Target, error) {
	client := t.Client
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.MatchmakingURL+"/matchmake", bytes.NewReader(descriptor))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-yaml")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: matchmaker: %v", ErrTargetUnavailable, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if resp.StatusCode >= 500 {
		return nil, fmt.Errorf("%w: matchmaker answered %s", ErrTargetUnavailable, resp.Status)
	}
	if resp.StatusCode >= 300 {
		return map[string]*model.Target{}, nil
	}
	var doc struct {
		Components []struct {
			Name    string `json:"name"`
			Targets any    `json:"targets"`
		} `json:"components"`
	}
	if err := yaml.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("%w: matchmaker answer is not a descriptor: %v", ErrTargetUnavailable, err)
	}
	out := map[string]*model.Target{}
	for _, c := range doc.Components {
		if tg, ferr := toTarget(c.Targets); ferr == nil && tg != nil {
			out[c.Name] = tg
		}
	}
	return out, nil
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

// placedTargets are the targets of a component on the clusters a Placement chose: the first,
// and the rest (one job each).
func placedTargets(clusters []string) (*model.Target, []*model.Target) {
	var more []*model.Target
	for _, c := range clusters[1:] {
		more = append(more, &model.Target{ClusterName: c, Orchestrator: model.OCM})
	}
	return &model.Target{ClusterName: clusters[0], Orchestrator: model.OCM}, more
}
