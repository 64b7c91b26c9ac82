package jobs

import (
	"context"
	"errors"
	"fmt"

	"knative.dev/pkg/logging"

	"github.com/ocm-jobs/ocm-jobs/shared/config"
	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/polman"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
)

// The jobs function's side of the Policy Manager registration (shared/polman): a group created
// with POLICY_MANAGER_URL set is registered in the same store step that creates it; its stop,
// start and delete are recorded by the steps that make them; and the events are delivered
// after the request (never during it) and on every cron tick, where a group whose jobs now
// run gets its started.

// newSender builds the Policy Manager sender; nil when registration is off.
func newSender(ctx context.Context, cfg config.PolicyManager, st *store.Store) (*polman.Sender, error) {
	log := logging.FromContext(ctx)
	if !cfg.Enabled() {
		log.Info("POLICY_MANAGER_URL is unset: job groups are not registered with the Policy Manager")
		return nil, nil
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log.Infow("job groups are registered with the Policy Manager", "url", cfg.URL+polman.Path, "auth", cfg.AuthMode(), "callback", cfg.CallbackURI)
	return polman.NewSender(st, cfg, polman.NewClient(cfg, nil)), nil
}

// storeGroup stores a new group, registered with the Policy Manager when it is on.
func (s *service) storeGroup(ctx context.Context, g *model.JobGroup, by string, descriptor []byte) error {
	switch {
	case s.pm == nil:
		logging.FromContext(ctx).Debugw("not registering the group with the Policy Manager: POLICY_MANAGER_URL is unset", "group", g.ID)
		return s.store.CreateGroup(ctx, g, by)
	case !polman.Registrable(descriptor):
		logging.FromContext(ctx).Infow("not registering the group with the Policy Manager: it reads only ICOS descriptors (name and components)", "group", g.ID)
		return s.store.CreateGroup(ctx, g, by)
	}
	return s.store.CreateRegisteredGroup(ctx, g, by, string(descriptor))
}

// announce delivers what a request recorded for the group's registration, in the background.
func (s *service) announce(ctx context.Context, groupID string) {
	if s.pm != nil {
		s.pm.Kick(ctx, groupID)
	}
}

// policyManagerTick is the cron tick's share: started for groups that now run, and every
// event due delivered. The Policy Manager being down never fails the tick: it is said, and
// retried on the next one.
func (s *service) policyManagerTick(ctx context.Context) string {
	if s.pm == nil {
		return ""
	}
	r, err := s.pm.Tick(ctx)
	if err != nil {
		logging.FromContext(ctx).Warnw("Policy Manager: some registrations are not delivered yet; the next tick retries them", "error", err)
	}
	if r.Due == 0 {
		return ""
	}
	return fmt.Sprintf("; Policy Manager: %d groups due, %d started, %d events delivered, %d groups failed", r.Due, r.Started, r.Delivered, r.Failed)
}

// groupView is a group as GET /jobmanager/groups/{id} shows it: with its Policy Manager
// registration, when it has one.
type groupView struct {
	*model.JobGroup
	PolicyManager *store.Registration `json:"policy_manager,omitempty"`
}

// withRegistration adds the group's registration to it (nothing when it has none or it
// cannot be read: the group is what was asked for).
func (s *service) withRegistration(ctx context.Context, g *model.JobGroup) any {
	if g == nil {
		return g
	}
	reg, err := s.store.GetRegistration(ctx, g.ID)
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			logging.FromContext(ctx).Warnw("reading the group's Policy Manager registration", "group", g.ID, "error", err)
		}
		return g
	}
	return groupView{JobGroup: g, PolicyManager: reg}
}
