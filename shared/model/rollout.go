package model

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/intstr"
	"knative.dev/pkg/apis"
)

// The rollout strategies a group may choose for a change that spans several clusters.
const (
	// RolloutAll applies the change on every cluster at once (the default).
	RolloutAll = "all"
	// RolloutProgressive applies it in waves of at most MaxConcurrency clusters.
	RolloutProgressive = "progressive"
	// RolloutCanary applies it on the Canary cluster first, then on the rest.
	RolloutCanary = "canary"
)

// RolloutStrategies are the strategies, in the order the documentation lists them.
var RolloutStrategies = []string{RolloutAll, RolloutProgressive, RolloutCanary}

// RolloutStrategy is how a group rolls a change out across the clusters it spans (the
// descriptor's `rollout`, or the create event's `rollout` extension as JSON).
type RolloutStrategy struct {
	// Strategy is all, progressive or canary; empty means all.
	Strategy string `json:"strategy,omitempty"`
	// MaxConcurrency is the most clusters of one wave: a number, or a percentage of the
	// clusters ("50%", rounded up). Progressive needs it; canary uses it for the waves after
	// the canary (default: all the rest at once).
	MaxConcurrency *intstr.IntOrString `json:"maxConcurrency,omitempty"`
	// MinSuccessTime is how long a wave's works must be Available before the next wave
	// starts (a Go duration, "30s"; default 0).
	MinSuccessTime string `json:"minSuccessTime,omitempty"`
	// Canary is the cluster a canary rollout starts with.
	Canary string `json:"canary,omitempty"`
	// RollbackOnFailure: when a wave degrades, the clusters already done get their previous
	// manifests back (those a create deployed are undeployed).
	RollbackOnFailure bool `json:"rollbackOnFailure,omitempty"`
}

// Waved says whether the strategy holds clusters back (not all at once).
func (r *RolloutStrategy) Waved() bool {
	return r != nil && (r.Strategy == RolloutProgressive || r.Strategy == RolloutCanary)
}

// SuccessTime is MinSuccessTime as a duration (0 when unset or invalid; Validate refuses
// invalid ones).
func (r *RolloutStrategy) SuccessTime() time.Duration {
	d, _ := time.ParseDuration(r.MinSuccessTime)
	return d
}

// Validate checks the strategy against the clusters the change spans (nil: not known yet,
// the canary is not checked against them). Paths are relative to the strategy.
func (r *RolloutStrategy) Validate(clusters []string) *apis.FieldError {
	var errs *apis.FieldError
	switch r.Strategy {
	case "", RolloutAll, RolloutProgressive, RolloutCanary:
	default:
		errs = errs.Also(apis.ErrInvalidValue(r.Strategy, "strategy", fmt.Sprintf("want one of %v", RolloutStrategies)))
	}
	if mc := r.MaxConcurrency; mc != nil {
		switch {
		case r.Strategy != RolloutProgressive && r.Strategy != RolloutCanary:
			errs = errs.Also(apis.ErrGeneric("maxConcurrency applies to the progressive and canary strategies only", "maxConcurrency"))
		case mc.Type == intstr.Int && mc.IntVal < 1:
			errs = errs.Also(apis.ErrInvalidValue(mc.IntVal, "maxConcurrency", "want a number of clusters of at least 1, or a percentage"))
		case mc.Type == intstr.String:
			p, ok := percent(mc.StrVal)
			if !ok || p < 1 || p > 100 {
				errs = errs.Also(apis.ErrInvalidValue(mc.StrVal, "maxConcurrency", `want a number of clusters, or a percentage from "1%" to "100%"`))
			}
		}
	} else if r.Strategy == RolloutProgressive {
		errs = errs.Also(apis.ErrMissingField("maxConcurrency"))
	}
	if r.MinSuccessTime != "" {
		if d, err := time.ParseDuration(r.MinSuccessTime); err != nil || d < 0 {
			errs = errs.Also(apis.ErrInvalidValue(r.MinSuccessTime, "minSuccessTime", `want a non-negative duration such as "30s"`))
		}
	}
	switch {
	case r.Strategy == RolloutCanary && r.Canary == "":
		errs = errs.Also(apis.ErrMissingField("canary"))
	case r.Strategy != RolloutCanary && r.Canary != "":
		errs = errs.Also(apis.ErrGeneric("canary applies to the canary strategy only", "canary"))
	case r.Canary != "" && clusters != nil && !contains(clusters, r.Canary):
		errs = errs.Also(apis.ErrInvalidValue(r.Canary, "canary", fmt.Sprintf("the canary must be one of the group's clusters %v", clusters)))
	}
	return errs
}

func percent(s string) (int, bool) {
	n, err := strconv.Atoi(strings.TrimSuffix(s, "%"))
	return n, err == nil && strings.HasSuffix(s, "%")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Waves splits the clusters (sorted, so a redelivered order plans the same waves) into the
// strategy's waves: one wave for all; the canary alone, then the rest; or waves of at most
// MaxConcurrency clusters.
func (r *RolloutStrategy) Waves(clusters []string) [][]string {
	cs := append([]string(nil), clusters...)
	sort.Strings(cs)
	if !r.Waved() || len(cs) <= 1 {
		return [][]string{cs}
	}
	var waves [][]string
	if r.Strategy == RolloutCanary {
		waves = append(waves, []string{r.Canary})
		rest := cs[:0:0]
		for _, c := range cs {
			if c != r.Canary {
				rest = append(rest, c)
			}
		}
		cs = rest
		if r.MaxConcurrency == nil {
			if len(cs) > 0 {
				waves = append(waves, cs)
			}
			return waves
		}
	}
	size := r.waveSize(len(clusters))
	for len(cs) > 0 {
		n := min(size, len(cs))
		waves = append(waves, cs[:n])
		cs = cs[n:]
	}
	return waves
}

// waveSize is MaxConcurrency for n clusters: a percentage is rounded up, never below 1.
func (r *RolloutStrategy) waveSize(n int) int {
	mc := r.MaxConcurrency
	if mc.Type == intstr.Int {
		return max(int(mc.IntVal), 1)
	}
	p, _ := percent(mc.StrVal)
	return max((n*p+99)/100, 1)
}

// The phases of a rollout.
const (
	// RolloutRolling: a wave is applied, or waits to be Available for MinSuccessTime.
	RolloutRolling = "rolling"
	// RolloutComplete: every wave is done.
	RolloutComplete = "complete"
	// RolloutHalted: a wave degraded; the waves after it stay held.
	RolloutHalted = "halted"
	// RolloutRollingBack: halted, and the clusters done are being given their previous
	// manifests (the tick re-opens their jobs until each took the order).
	RolloutRollingBack = "rolling-back"
	// RolloutRolledBack: halted, and the clusters done were given their previous manifests.
	RolloutRolledBack = "rolled-back"
)

// Rollout is a change being rolled out across a group's clusters in waves, as the group and
// its report show it: the jobs of wave n+1 are held out of what executors may promote until
// wave n's jobs are Finished (their works Available) for MinSuccessTime.
type Rollout struct {
	// ID names the change (the order that started it): rollback orders derive from it.
	ID string `json:"id"`
	// Change is what is rolled out: create or update.
	Change   string          `json:"change"`
	Strategy RolloutStrategy `json:"strategy"`
	Waves    []RolloutWave   `json:"waves"`
	// Fences are the fences of the change's jobs when it started: a job counts for the
	// change once it was promoted since (its fence grew).
	Fences map[string]uint64 `json:"fences"`
	// Wave is the index of the wave applied last (0: the first).
	Wave  int    `json:"wave"`
	Phase string `json:"phase"`
	// AvailableSince is when every job of the current wave was first seen Finished.
	AvailableSince *time.Time `json:"available_since,omitempty"`
	// Done, Pending and Failed list clusters: their wave succeeded; their wave is held or
	// still being applied; a job of theirs degraded.
	Done    []string `json:"done"`
	Pending []string `json:"pending"`
	Failed  []string `json:"failed,omitempty"`
	// RolledBack lists the clusters given their previous manifests after the halt.
	RolledBack []string  `json:"rolled_back,omitempty"`
	Why        string    `json:"why,omitempty"`
	UpdatedAt  time.Time `json:"updated_at"`
}

// RolloutWave is one wave: its clusters and the jobs the change touches on them.
type RolloutWave struct {
	Clusters []string `json:"clusters"`
	Jobs     []string `json:"jobs"`
}

// Active says whether the rollout still needs the tick (it is rolling).
func (r *Rollout) Active() bool {
	return r != nil && (r.Phase == RolloutRolling || r.Phase == RolloutRollingBack)
}

// Held lists the jobs of the waves after the first: those the change holds at its start.
func (r *Rollout) Held() []string {
	var out []string
	for _, w := range r.Waves[min(1, len(r.Waves)):] {
		out = append(out, w.Jobs...)
	}
	return out
}

// NewRollout plans a change's waves over the jobs it touches (job id → cluster), each with
// its fence when the change starts (0 for a new job).
func NewRollout(id, change string, s RolloutStrategy, jobCluster map[string]string, fences map[string]uint64) *Rollout {
	var clusters []string
	byCluster := map[string][]string{}
	for j, c := range jobCluster {
		if _, ok := byCluster[c]; !ok {
			clusters = append(clusters, c)
		}
		byCluster[c] = append(byCluster[c], j)
	}
	r := &Rollout{ID: id, Change: change, Strategy: s, Phase: RolloutRolling, Fences: map[string]uint64{}}
	for j := range jobCluster {
		r.Fences[j] = fences[j]
	}
	for _, cs := range s.Waves(clusters) {
		w := RolloutWave{Clusters: cs}
		for _, c := range cs {
			js := byCluster[c]
			sort.Strings(js)
			w.Jobs = append(w.Jobs, js...)
		}
		r.Waves = append(r.Waves, w)
	}
	r.Done, r.Pending = []string{}, append([]string(nil), r.clustersFrom(0)...)
	return r
}

// clustersFrom lists the clusters of wave i and after.
func (r *Rollout) clustersFrom(i int) []string {
	var out []string
	for _, w := range r.Waves[min(i, len(r.Waves)):] {
		out = append(out, w.Clusters...)
	}
	return out
}

// PlanRollout plans the waves of a change over the jobs it touches (those with a target
// cluster), each with its fence now: nil when the strategy does not hold clusters back or the
// jobs span fewer than two clusters (all at once). It does not validate the strategy.
func PlanRollout(id, change string, s *RolloutStrategy, jobs []Job) *Rollout {
	if !s.Waved() {
		return nil
	}
	clusters := ClustersOf(jobs)
	if len(clusters) < 2 {
		return nil
	}
	jobCluster, fences := map[string]string{}, map[string]uint64{}
	for _, j := range jobs {
		if j.Targets != nil && j.Targets.ClusterName != "" {
			jobCluster[j.ID], fences[j.ID] = j.Targets.ClusterName, j.Fence
		}
	}
	plan := *s
	if plan.Strategy == RolloutCanary && !contains(clusters, plan.Canary) {
		// The change does not touch the canary (a remediation of a component that does not
		// run there): the first of its clusters, by name, goes first instead.
		plan.Canary = clusters[0]
	}
	return NewRollout(id, change, plan, jobCluster, fences)
}

// ClustersOf is the clusters jobs target, by name, each once.
func ClustersOf(jobs []Job) []string {
	var out []string
	for _, j := range jobs {
		if j.Targets != nil && j.Targets.ClusterName != "" && !contains(out, j.Targets.ClusterName) {
			out = append(out, j.Targets.ClusterName)
		}
	}
	sort.Strings(out)
	return out
}

// HeldBy says whether the rollout holds the job at its start (the job is in a wave after the
// first).
func (r *Rollout) HeldBy(jobID string) bool {
	if r == nil {
		return false
	}
	for _, id := range r.Held() {
		if id == jobID {
			return true
		}
	}
	return false
}

// Without is the rollout without the jobs given (jobs of a change that did not take it: the
// rollout must not wait for them). A wave left with no job loses its clusters too (they are
// no longer pending), and is dropped when it is after the current one. A rollout left with no
// job is complete.
func (r *Rollout) Without(jobIDs []string) *Rollout {
	drop := map[string]bool{}
	for _, id := range jobIDs {
		drop[id] = true
	}
	n := *r
	n.Fences, n.Waves = map[string]uint64{}, nil
	var gone []string
	jobs := 0
	for i, w := range r.Waves {
		kept := RolloutWave{Clusters: w.Clusters, Jobs: []string{}}
		for _, id := range w.Jobs {
			if !drop[id] {
				kept.Jobs = append(kept.Jobs, id)
				n.Fences[id] = r.Fences[id]
			}
		}
		jobs += len(kept.Jobs)
		if len(kept.Jobs) == 0 && len(w.Jobs) > 0 {
			gone = append(gone, w.Clusters...)
			if i > r.Wave {
				continue
			}
			kept.Clusters = []string{}
		}
		n.Waves = append(n.Waves, kept)
	}
	n.Pending = []string{}
	for _, c := range r.Pending {
		if !contains(gone, c) {
			n.Pending = append(n.Pending, c)
		}
	}
	if jobs == 0 {
		n.Phase, n.Pending, n.Why = RolloutComplete, []string{}, "no job took the change"
	}
	return &n
}
