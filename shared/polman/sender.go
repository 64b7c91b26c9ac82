package polman

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"
	"knative.dev/pkg/logging"

	"github.com/ocm-jobs/ocm-jobs/shared/config"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
)

// Sender delivers the registration events the store recorded for each group to the Policy
// Manager: oldest first, one sender per group at a time (the registration's hold), an event
// leaving the queue only once the Policy Manager took it (or refused it for good). A failed
// event stays at the head of its group's queue and is retried with a backoff, so the events of
// a group arrive in the order they were recorded, none lost, whatever the outages.
type Sender struct {
	store  *store.Store
	client *Client
	cfg    config.PolicyManager
	// holder names this sender in the holds it takes.
	holder string
	// kicks bounds the deliveries running in the background after requests.
	kicks chan struct{}
	wg    sync.WaitGroup
}

// Bounds of the work one sender does.
const (
	// maxKicks is how many background deliveries run at once; more are left to the tick.
	maxKicks = 16
	// tickWorkers deliver the groups of one tick side by side.
	tickWorkers = 4
	// tickFailures is how many failed groups make a tick stop starting new ones (the Policy
	// Manager is down: the rest waits for the next tick).
	tickFailures = 3
	// tickMax is the most groups per bucket one tick reads.
	tickMax = 64
	// maxPerDelivery is the most events one delivery sends for one group.
	maxPerDelivery = 16
)

// NewSender returns a sender on st to the Policy Manager cfg names.
func NewSender(st *store.Store, cfg config.PolicyManager, c *Client) *Sender {
	return &Sender{store: st, client: c, cfg: cfg, holder: "polman/" + uuid.NewString(), kicks: make(chan struct{}, maxKicks)}
}

// hold is how long a sender holds a registration for one attempt: the request's timeout and
// some slack to record its outcome. A holder that dies is replaced once it lapses.
func (s *Sender) hold() time.Duration { return s.cfg.Timeout + 5*time.Second }

// Kick delivers a group's events in the background, right after the request that recorded
// them, with the token of that request (the caller auth mode); the request never waits for the
// Policy Manager. When too many deliveries are under way, the group is left to the cron tick.
func (s *Sender) Kick(ctx context.Context, group string) {
	log := logging.FromContext(ctx)
	select {
	case s.kicks <- struct{}{}:
	default:
		log.Infow("Policy Manager: many deliveries under way; this group's events wait for the cron tick", "group", group)
		return
	}
	token := CallerToken(ctx)
	ctx = context.WithoutCancel(ctx)
	s.wg.Add(1)
	go func() {
		defer func() { <-s.kicks; s.wg.Done() }()
		ctx, cancel := context.WithTimeout(ctx, maxPerDelivery*s.hold())
		defer cancel()
		if _, err := s.Deliver(ctx, group, token); err != nil {
			log.Warnw("Policy Manager: registration not delivered yet; the cron tick retries it", "group", group, "error", err)
		}
	}()
}

// Wait waits for the background deliveries Kick started.
func (s *Sender) Wait() { s.wg.Wait() }

// Deliver sends a group's due events, oldest first, until none is left, one fails, or another
// sender holds the group. It reports how many events left the queue.
func (s *Sender) Deliver(ctx context.Context, group, callerToken string) (int, error) {
	// Each delivery holds the group as itself: two deliveries of one process (after a request,
	// and the tick) exclude each other as two processes do.
	d := &delivery{Sender: s, holder: s.holder + "/" + uuid.NewString()[:8]}
	n := 0
	for n < maxPerDelivery {
		t, err := s.store.TakeRegistration(ctx, group, d.holder, s.hold())
		switch {
		case errors.Is(err, store.ErrRegistrationBusy):
			return n, nil // its holder delivers them
		case err != nil:
			return n, err
		case t == nil:
			return n, nil
		}
		if err := d.attempt(ctx, t, callerToken); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// delivery is one run of Deliver, with its own holder.
type delivery struct {
	*Sender
	holder string
}

// attempt sends one event and records the outcome.
func (s *delivery) attempt(ctx context.Context, t *store.RegistrationTask, callerToken string) error {
	log := logging.FromContext(ctx).With(zap.String("group", t.Group), zap.String("event", t.Event), zap.Int("attempt", t.Attempts+1))
	err := s.send(ctx, t, callerToken)
	// The outcome is recorded even if the caller gave up meanwhile: an event that was taken
	// must not be sent again for want of a write.
	rec, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	var se *SendError
	switch {
	case err == nil:
		log.Infow("Policy Manager: registration event delivered", "url", s.cfg.URL+Path)
		return s.store.AckRegistration(rec, t, s.holder, "")
	case errors.As(err, &se) && se.Permanent:
		log.Warnw("Policy Manager: registration event refused for good; going on with the next", "error", err)
		return s.store.AckRegistration(rec, t, s.holder, fmt.Sprintf("%s refused: %v", t.Event, err))
	}
	backoff := s.cfg.Backoff(t.Attempts + 1)
	ambiguous := errors.As(err, &se) && se.Ambiguous
	log.Warnw("Policy Manager: registration event not delivered; retried later", "error", err, "retryIn", backoff.String())
	if ferr := s.store.FailRegistration(rec, t, s.holder, err.Error(), backoff, ambiguous); ferr != nil {
		return errors.Join(err, ferr)
	}
	return err
}

// send sends the event of t. A created whose earlier attempt may have reached the Policy
// Manager is preceded by a deleted: the Policy Manager creates new policies on every created
// and keeps those a failed one made, so deleted + created is the only created that is safe
// to repeat.
func (s *Sender) send(ctx context.Context, t *store.RegistrationTask, callerToken string) error {
	if t.Event == store.RegCreated && t.Ambiguous {
		if err := s.client.Send(ctx, NewRequest(t.Group, store.RegDeleted, "", ""), callerToken); err != nil {
			return fmt.Errorf("clearing what an earlier created may have left: %w", err)
		}
	}
	return s.client.Send(ctx, NewRequest(t.Group, t.Event, t.Descriptor, s.cfg.CallbackURI), callerToken)
}

// TickResult is what one tick did.
type TickResult struct {
	// Due is how many groups needed a look; Started how many were found running (started
	// recorded); Delivered how many events left the queues; Failed how many groups failed.
	Due, Started, Delivered, Failed int
}

// Tick is the cron tick: every registration due gets started recorded if its group's jobs
// run now, and its events delivered. Groups go side by side; once a few have failed the tick
// starts no more (the Policy Manager is down: the rest waits for the next tick), so a tick
// lasts about one request timeout however many groups wait.
func (s *Sender) Tick(ctx context.Context) (TickResult, error) {
	var res TickResult
	ids, err := s.store.RegistrationsDue(ctx, tickMax)
	if err != nil {
		return res, err
	}
	res.Due = len(ids)
	var (
		mu    sync.Mutex
		errs  []error
		work  = make(chan string)
		wg    sync.WaitGroup
		stop  = make(chan struct{})
		once  sync.Once
		fails int
	)
	for range tickWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range work {
				started, err := s.store.StartIfRunning(ctx, id)
				n := 0
				if err == nil {
					n, err = s.Deliver(ctx, id, "")
				}
				mu.Lock()
				res.Delivered += n
				if started {
					res.Started++
				}
				if err != nil {
					res.Failed++
					fails++
					errs = append(errs, fmt.Errorf("group %s: %w", id, err))
					if fails >= tickFailures {
						once.Do(func() { close(stop) })
					}
				}
				mu.Unlock()
			}
		}()
	}
feed:
	for _, id := range ids {
		select {
		case work <- id:
		case <-stop:
			break feed
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	return res, errors.Join(errs...)
}
