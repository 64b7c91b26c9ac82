package executor

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/ocm-jobs/ocm-jobs/shared/store"
)

// errSuperseded is why an execution stops: the store refused its claim — a newer execution
// holds the job (a higher fence), or the job left Progressing (status sync ended it, an order
// re-opened it). From then on it must not write to the hub: a ManifestWork it applied or
// deleted late would undo what the newer execution did (a stalled apply re-creating the work
// of a job undeployed meanwhile leaves its workload running with nothing to remove it).
var errSuperseded = errors.New("superseded")

// hold is an execution's hold on its job: renewed in the background by keepLease, which ends
// the execution (its context, with errSuperseded) as soon as the store refuses the claim; and
// confirmed again right before a write to the hub when the store last confirmed it longer than
// confirmAge ago (a stalled process may not have run keepLease meanwhile).
type hold struct {
	c         store.Claim
	confirmed atomic.Int64 // unix ns of the last promote or renewal the store accepted
	end       context.CancelCauseFunc
}

type holdKey struct{}

// confirmAge: a hub write whose claim is younger than this goes without asking the store
// again; a job cannot be ended, re-opened and promoted again that fast without a renewal
// failing first for any stall longer than a moment.
const confirmAge = time.Second

// holding returns ctx carrying an execution's hold on c, and ctx's end.
func holding(ctx context.Context, c store.Claim) (context.Context, *hold) {
	ctx, end := context.WithCancelCause(ctx)
	h := &hold{c: c, end: end}
	h.confirmed.Store(time.Now().UnixNano())
	return context.WithValue(ctx, holdKey{}, h), h
}

// lost ends the execution for good: the store refused its claim.
func (h *hold) lost(err error) { h.end(fmt.Errorf("%w: %v", errSuperseded, err)) }

// superseded says whether the execution of ctx lost its claim.
func superseded(ctx context.Context) bool { return errors.Is(context.Cause(ctx), errSuperseded) }

// renew renews the hold's lease: on success the claim counts as confirmed now; a refusal (a
// guard) ends the execution for good; any other error (Redis unreachable) is only returned.
func (f *Function) renew(ctx context.Context, h *hold) error {
	_, err := f.store.RenewLease(ctx, h.c)
	var ge *store.GuardError
	switch {
	case err == nil:
		h.confirmed.Store(time.Now().UnixNano())
	case errors.As(err, &ge):
		h.lost(err)
	}
	return err
}

// confirm is called right before a write to the hub: it answers a failure when the execution
// lost its claim, asking the store first when the claim was last confirmed confirmAge ago or
// more. An execution without a hold (none in ctx) writes as before.
func (f *Function) confirm(ctx context.Context) *failure {
	h, _ := ctx.Value(holdKey{}).(*hold)
	if h == nil {
		return nil
	}
	if !superseded(ctx) && time.Since(time.Unix(0, h.confirmed.Load())) >= confirmAge {
		if err := f.renew(ctx, h); err != nil && !superseded(ctx) {
			return storeFailure(err)
		}
	}
	if superseded(ctx) {
		return transient("execution %d of job %s: %v", h.c.Fence, h.c.JobID, context.Cause(ctx))
	}
	return nil
}

// keepLease renews the execution's lease every third of its TTL until ctx ends, and ends the
// execution as soon as the store refuses the claim.
func (f *Function) keepLease(ctx context.Context, h *hold, log *zap.SugaredLogger) {
	every := f.store.Options().LeaseTTL / 3
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			err := f.renew(ctx, h)
			switch {
			case superseded(ctx):
				log.Warnw("the execution lost its claim on the job; it stops and writes nothing more to the hub", "error", err)
				return
			case err != nil && ctx.Err() == nil:
				log.Warnw("renewing the lease", "error", err)
			}
		}
	}
}
