// Package faults injects the faults the chaos suite (tests/chaos) needs inside a function
// process, at the points no outside fault reaches: a delay right before the executor applies a
// ManifestWork (an execution that is slow, so leases can lapse under it), and a SIGKILL right
// after it applied one, before the job's state is written (the crash exactly-once must survive).
//
// Faults are off unless configured. Each point fires with a probability, decided by a random
// source seeded per process (FAULTS_SEED), so a chaos run's seed reproduces them as far as the
// order of executions allows. Every fault is logged ("fault injected") before it acts, so a run
// can count them. A nil *Injector injects nothing.
package faults

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"knative.dev/pkg/logging"
)

// Config is what the environment says about faults. It is for tests only.
type Config struct {
	Spec string `envconfig:"FAULTS" desc:"testing only: faults to inject, as point=probability[:delay],…, e.g. delay-before-apply=0.1:5s,kill-after-apply=0.02; empty: none"`
	Seed int64  `envconfig:"FAULTS_SEED" default:"1" desc:"testing only: seed of the random source that decides when the FAULTS fire"`
	// KillAfterApply is kill-after-apply=1: the always-on variant fault tests use.
	KillAfterApply bool `envconfig:"FAULT_KILL_AFTER_APPLY" default:"false" desc:"testing only: SIGKILL this process right after a ManifestWork is applied, before the job's state is written (kill-after-apply=1)"`
}

// Point is a place in the code where a fault may be injected.
type Point string

// The fault points.
const (
	// DelayBeforeApply sleeps right before a ManifestWork is applied.
	DelayBeforeApply Point = "delay-before-apply"
	// KillAfterApply kills the process (SIGKILL) right after a ManifestWork was applied,
	// before the job's state is written.
	KillAfterApply Point = "kill-after-apply"
)

// LogMessage starts the log line of every injected fault.
const LogMessage = "fault injected"

// rule is when a point fires and what it does.
type rule struct {
	probability float64
	delay       time.Duration
}

// Injector decides and injects faults.
type Injector struct {
	mu    sync.Mutex
	rnd   *rand.Rand
	rules map[Point]rule
	// kill ends the process; a test replaces it.
	kill func()
}

// New returns the injector c describes, or nil (no faults) when it describes none.
func New(c Config) (*Injector, error) {
	rules, err := parse(c.Spec)
	if err != nil {
		return nil, fmt.Errorf("FAULTS=%q: %w", c.Spec, err)
	}
	if c.KillAfterApply {
		rules[KillAfterApply] = rule{probability: 1}
	}
	if len(rules) == 0 {
		return nil, nil
	}
	return &Injector{rnd: rand.New(rand.NewSource(c.Seed)), rules: rules,
		kill: func() { _ = syscall.Kill(os.Getpid(), syscall.SIGKILL) }}, nil
}

// parse reads a fault spec: point=probability[:delay], comma-separated.
func parse(spec string) (map[Point]rule, error) {
	rules := map[Point]rule{}
	for _, part := range strings.Split(spec, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, val, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("%q: want point=probability[:delay]", part)
		}
		p := Point(strings.TrimSpace(name))
		if p != DelayBeforeApply && p != KillAfterApply {
			return nil, fmt.Errorf("unknown fault point %q: want %s or %s", p, DelayBeforeApply, KillAfterApply)
		}
		prob, delay, hasDelay := strings.Cut(val, ":")
		var r rule
		var err error
		if r.probability, err = strconv.ParseFloat(strings.TrimSpace(prob), 64); err != nil || r.probability < 0 || r.probability > 1 {
			return nil, fmt.Errorf("%s: probability %q: want a number in [0, 1]", p, prob)
		}
		if hasDelay {
			if r.delay, err = time.ParseDuration(strings.TrimSpace(delay)); err != nil || r.delay < 0 {
				return nil, fmt.Errorf("%s: delay %q: want a duration", p, delay)
			}
		}
		if p == DelayBeforeApply && r.delay == 0 {
			return nil, fmt.Errorf("%s needs a delay (probability:delay)", p)
		}
		rules[p] = r
	}
	return rules, nil
}

// fires decides whether point p fires now.
func (in *Injector) fires(p Point) (rule, bool) {
	if in == nil {
		return rule{}, false
	}
	r, ok := in.rules[p]
	if !ok || r.probability == 0 {
		return r, false
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	return r, in.rnd.Float64() < r.probability
}

// BeforeApply may delay the caller right before it applies a ManifestWork (or until ctx ends).
func (in *Injector) BeforeApply(ctx context.Context) {
	r, ok := in.fires(DelayBeforeApply)
	if !ok {
		return
	}
	logging.FromContext(ctx).Warnw(LogMessage, "point", DelayBeforeApply, "delay", r.delay.String())
	select {
	case <-ctx.Done():
	case <-time.After(r.delay):
	}
}

// AfterApply may kill the process (SIGKILL) when a ManifestWork was just applied (applied)
// and nothing about it is recorded yet.
func (in *Injector) AfterApply(ctx context.Context, applied bool) {
	if !applied {
		return
	}
	if _, ok := in.fires(KillAfterApply); !ok {
		return
	}
	logging.FromContext(ctx).Errorw(LogMessage+": killing this process after applying the ManifestWork", "point", KillAfterApply)
	in.kill()
}
