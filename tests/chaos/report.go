package chaos

import (
	"fmt"
	"sort"
	"strings"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/tests/chaos/invariants"
)

// defaultExamples is how many violations of one kind the report spells out.
const defaultExamples = 3

// Report renders the outcome as the issue asks: faults injected by kind, operations by kind,
// violations by invariant (each kind with job ids and one-line reasons), and the seed; the last
// line is machine-readable.
func (o *Outcome) Report() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	examples := o.Examples
	if examples <= 0 {
		examples = defaultExamples
	}
	p("chaos run: seed %d, %d groups, workload %s, schedule %s", o.Options.Seed, o.Options.Groups, o.Options.Duration, o.Plan.Digest())
	p("")
	p("%-42s %7s", "faults injected", "count")
	kinds := make([]string, 0, len(o.Faults))
	for k := range o.Faults {
		kinds = append(kinds, string(k))
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		extra := ""
		if n := o.Skipped[FaultKind(k)]; n > 0 {
			extra = fmt.Sprintf("  (%d found nothing to hit)", n)
		}
		p("  %-40s %7d%s", k, o.Faults[FaultKind(k)], extra)
	}
	p("  %-40s %7d", "total", o.Total())
	p("  broker, standing: %d deliveries duplicated, up to %s of reordering; in windows: %d publishes or attempts refused (503), %d deliveries dropped",
		o.Delivery.Duplicated, o.Options.Settings.MaxDelay, o.Delivery.Refused, o.Delivery.Dropped)
	for _, e := range o.Errors {
		p("  fault not injected: %s", e)
	}
	for _, c := range o.Crashes {
		p("  function exited by itself: %s", c)
	}
	p("")
	p("%-34s %6s %6s %6s %7s %6s %7s", "operations", "sent", "ok", "dedup", "refused", "failed", "skipped")
	ops := make([]string, 0, len(o.Ops))
	for k := range o.Ops {
		ops = append(ops, k)
	}
	sort.Strings(ops)
	var total OpStats
	for _, k := range ops {
		s := o.Ops[k]
		p("  %-32s %6d %6d %6d %7d %6d %7d", k, s.Sent, s.OK, s.Deduplicated, s.Refused, s.Failed, s.Skipped)
		total.Sent += s.Sent
		total.OK += s.OK
		total.Deduplicated += s.Deduplicated
		total.Refused += s.Refused
		total.Failed += s.Failed
		total.Skipped += s.Skipped
	}
	p("  %-32s %6d %6d %6d %7d %6d %7d", "total", total.Sent, total.OK, total.Deduplicated, total.Refused, total.Failed, total.Skipped)
	p("")
	p("%s", o.jobsLine())
	p("broker: %d events accepted, %d delivered, %d retries, %d dead-lettered; %d job events recorded",
		o.Broker.Accepted, o.Broker.Delivered, o.Broker.Retried, o.Broker.DeadLettered, len(o.Snapshot.Events))
	settled := "settled"
	if o.TimedOut {
		settled = "did NOT settle"
	}
	p("quiet period: %s after %s (deadline %s)", settled, o.Settled, o.Options.Settle)
	p("")
	p("%-80s %10s", "invariant", "violations")
	for _, inv := range invariants.All {
		vs := o.Result.Of(inv)
		p("  %d %-76s %10d", int(inv), inv.String(), len(vs))
		byKind := map[string][]invariants.Violation{}
		var order []string
		for _, v := range vs {
			if byKind[v.Kind] == nil {
				order = append(order, v.Kind)
			}
			byKind[v.Kind] = append(byKind[v.Kind], v)
		}
		for _, k := range order {
			p("      %s: %d", k, len(byKind[k]))
			for i, v := range byKind[k] {
				if i == examples {
					p("        … and %d more", len(byKind[k])-examples)
					break
				}
				p("        %s: %s", v.ID, clip(v.Reason, 200))
			}
		}
	}
	if len(o.Result.Notes) > 0 {
		p("")
		p("notes")
		for i, n := range o.Result.Notes {
			if i == 10 {
				p("  … and %d more", len(o.Result.Notes)-10)
				break
			}
			p("  - %s", clip(n, 240))
		}
	}
	p("")
	p("%s", o.Line())
	return b.String()
}

// jobsLine summarizes the jobs at the end: by state, and the Degraded ones by reason.
func (o *Outcome) jobsLine() string {
	byState := map[string]int{}
	reasons := map[string]int{}
	n := 0
	for _, j := range o.Snapshot.Jobs {
		if j.Deleted {
			continue
		}
		n++
		byState[j.State.String()]++
		if j.State == model.Degraded {
			reasons[degradeReason(j)]++
		}
	}
	line := fmt.Sprintf("jobs at the end: %d live (%s)", n, counts(byState))
	if len(reasons) > 0 {
		line += "\n  Degraded by reason: " + counts(reasons)
	}
	return line
}

func degradeReason(j invariants.Job) string {
	if j.Resource != nil {
		if c := j.Resource.Condition(model.ConditionDegraded); c != nil && c.Status == "True" {
			return c.Reason
		}
	}
	for i := len(j.History) - 1; i >= 0; i-- {
		if h := j.History[i]; h.To == model.Degraded {
			why, _, _ := strings.Cut(h.Why, ":")
			return why
		}
	}
	return "unknown"
}

func counts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(a, b int) bool {
		if m[keys[a]] != m[keys[b]] {
			return m[keys[a]] > m[keys[b]]
		}
		return keys[a] < keys[b]
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
