package chaos

import (
	"context"
	"fmt"
	"time"

	"github.com/ocm-jobs/ocm-jobs/tests/broker"
	"github.com/ocm-jobs/ocm-jobs/tests/chaos/invariants"
)

// Options are a run's knobs: SEED, GROUPS and DURATION in `make chaos`.
type Options struct {
	Seed     int64
	Groups   int
	Duration time.Duration
	// Settle bounds the quiet period after the workload: faults have stopped and the
	// system must settle (invariant 1's deadline).
	Settle   time.Duration
	Settings Settings
}

// Outcome is what a run did and found.
type Outcome struct {
	Options Options
	// Dir holds the function processes' logs and the broker's dead letters.
	Dir      string
	Plan     *Plan
	Faults   map[FaultKind]int
	Skipped  map[FaultKind]int
	Errors   []string
	Crashes  []string
	Ops      map[string]OpStats
	Broker   broker.Stats
	Delivery broker.FaultCounts
	Snapshot invariants.Snapshot
	Result   invariants.Result
	// Examples is how many violations of one kind the report spells out (0: 3).
	Examples int
	// Settled is how long the quiet period took; TimedOut that it hit Settle.
	Settled  time.Duration
	TimedOut bool
}

// Run starts the stack, drives the plan's workload while injecting its faults, lets the
// system settle once the faults have stopped, and checks the invariants.
func Run(ctx context.Context, o Options, logf func(string, ...any)) (*Outcome, error) {
	plan := NewPlan(o.Seed, o.Groups, o.Duration)
	logf("%s", plan)
	st, err := StartStack(ctx, o.Seed, o.Settings, logf)
	if err != nil {
		return nil, err
	}
	defer st.Stop()
	d, fr := NewDriver(st, plan), NewFaultRunner(st, plan)
	start := time.Now()
	giveUp := start.Add(o.Duration + o.Settle)
	faulted := make(chan struct{})
	go func() { fr.Run(ctx, start); close(faulted) }()
	d.Run(ctx, start, giveUp)
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(time.Until(start.Add(o.Duration))):
	}
	logf("workload sent; faults stopping, quiet period of at most %s", o.Settle)
	<-faulted
	fr.Wait()
	quiet := time.Now()
	for _, f := range st.Functions {
		if err := f.ready(time.Minute); err != nil {
			return nil, err
		}
	}
	out := &Outcome{Options: o, Plan: plan, Dir: st.Dir}
	out.TimedOut = !settle(ctx, st, d, giveUp, logf)
	out.Settled = time.Since(quiet).Round(time.Second)
	// What follows a settled job takes a little longer to show — a deleted namespace's
	// objects, the last events — so check until the verdict holds still.
	prev, steady := -1, 0
	for until := time.Now().Add(30 * time.Second); ; {
		time.Sleep(st.Settings.Tick)
		if out.Snapshot, err = Collect(ctx, st, d, fr); err != nil {
			return nil, err
		}
		out.Result = invariants.Check(out.Snapshot)
		n := len(out.Result.Violations)
		if n == prev {
			steady++
		} else {
			steady = 0
		}
		if n == 0 || steady == 2 || time.Now().After(until) {
			break
		}
		prev = n
	}
	out.Faults, out.Skipped, out.Errors, out.Crashes = fr.Counts(), fr.Skipped(), fr.Errors(), fr.Crashes()
	out.Ops, out.Broker, out.Delivery = d.Stats(), st.Broker.Stats(), st.Faults.Counts()
	return out, nil
}

// settle waits until every job has settled and the workload's last operations (deletes
// waiting for undeploys) are done, or until deadline; it reports whether it settled.
func settle(ctx context.Context, st *Stack, d *Driver, deadline time.Time, logf func(string, ...any)) bool {
	ops := make(chan struct{})
	go func() { d.Wait(); close(ops) }()
	opsDone := false
	for {
		if !opsDone {
			select {
			case <-ops:
				opsDone = true
			default:
			}
		}
		jobs, err := st.Store.ListJobs(ctx)
		pending := 0
		for i := range jobs {
			if !invariants.IsSettled(&jobs[i]) {
				pending++
			}
		}
		if err == nil && pending == 0 && opsDone {
			return true
		}
		if time.Now().After(deadline) {
			logf("quiet period over with %d jobs not settled (%v), workload done %v", pending, err, opsDone)
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(2 * time.Second):
		}
	}
}

// Total is the number of faults injected.
func (o *Outcome) Total() int {
	n := 0
	for _, c := range o.Faults {
		n += c
	}
	return n
}

// Line is the machine-readable last line of the report.
func (o *Outcome) Line() string {
	return fmt.Sprintf("chaos: seed=%d groups=%d faults=%d violations=%d", o.Options.Seed, o.Options.Groups, o.Total(), len(o.Result.Violations))
}
