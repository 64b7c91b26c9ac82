package invariants

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/ocm"
)

// The history actions the checks read (shared/store's scripts write them).
const (
	actionCreate   = "create"
	actionPromote  = "promote"
	actionTakeover = "takeover"
	actionProgress = "progress"
	actionFinish   = "finish"
	actionDegrade  = "degrade"
	actionTarget   = "target"
	actionRedeploy = "remediate"
	reopenPrefix   = "reopen-"
)

// The job event types (shared/events), by the state they announce.
var eventOfState = map[model.JobState]string{
	model.Created:     "eu.icos.job.created.v1",
	model.Progressing: "eu.icos.job.progressing.v1",
	model.Finished:    "eu.icos.job.finished.v1",
	model.Degraded:    "eu.icos.job.degraded.v1",
}

func cluster(j *Job) string {
	if j.Targets == nil {
		return ""
	}
	return j.Targets.ClusterName
}

// awaitingTarget: a Created job without a target that says it waits for one.
func awaitingTarget(j *Job) bool {
	if j.State != model.Created || cluster(j) != "" || j.Resource == nil {
		return false
	}
	c := j.Resource.Condition(model.ConditionProgressing)
	return c != nil && c.Reason == model.ReasonAwaitingTarget
}

// IsSettled reports whether a job has settled as invariant 1 wants: Finished or Degraded,
// or Created without a target, awaiting one.
func IsSettled(j *model.Job) bool {
	return j.State == model.Finished || j.State == model.Degraded || awaitingTarget(&Job{Job: *j})
}

// deployed: a job whose component must be running now, so must have its ManifestWork.
func deployed(j *Job) bool {
	return !j.Deleted && j.State == model.Finished && j.Type != model.DeleteDeployment
}

// mayHaveWork: a job that may have a ManifestWork (one that was executed and not undeployed).
func mayHaveWork(j *Job) bool {
	return !j.Deleted && j.Fence > 0 && !(j.Type == model.DeleteDeployment && j.State == model.Finished)
}

func describe(j *Job) string {
	return fmt.Sprintf("%s %s, fence %d, owner %q, cluster %q", j.Type, j.State, j.Fence, j.OwnerID, cluster(j))
}

// checkSettled: invariant 1.
func checkSettled(s Snapshot, r *Result) {
	for i := range s.Jobs {
		j := &s.Jobs[i]
		if j.Deleted {
			continue
		}
		switch {
		case j.State == model.Finished || j.State == model.Degraded, awaitingTarget(j):
		case j.State == model.Progressing:
			r.add(Settled, "stuck Progressing", j.ID, "%s, last changed %s", describe(j), j.UpdatedAt.Format(time.TimeOnly))
		case j.State == model.Created && cluster(j) == "":
			r.add(Settled, "Created without a target, not awaiting one", j.ID, "%s: no AwaitingTarget condition", describe(j))
		default:
			r.add(Settled, "Created with a target, never executed", j.ID, "%s, last changed %s", describe(j), j.UpdatedAt.Format(time.TimeOnly))
		}
	}
}

// checkOneWork: invariant 2.
func checkOneWork(s Snapshot, r *Result) {
	jobs := map[string]*Job{}
	for i := range s.Jobs {
		jobs[s.Jobs[i].ID] = &s.Jobs[i]
	}
	works := map[string][]Work{}
	for _, w := range s.Works {
		id := w.Labels[ocm.LabelJob]
		if j, ok := jobs[id]; !ok || id == "" {
			r.add(OneWork, "orphan ManifestWork", w.Namespace+"/"+w.Name, "on hub %s, labelled job %q, which does not exist", w.Hub, id)
			continue
		} else if !mayHaveWork(j) {
			r.add(OneWork, "orphan ManifestWork", id, "%s/%s on hub %s for a job that must have none (%s, group deleted %v)", w.Namespace, w.Name, w.Hub, describe(j), j.Deleted)
			continue
		}
		works[id] = append(works[id], w)
	}
	for i := range s.Jobs {
		j := &s.Jobs[i]
		hub := s.HubOf[cluster(j)]
		if j.OwnerID != "" && hub != "" && j.OwnerID != hub {
			r.add(OneWork, "owned by a hub that does not manage its cluster", j.ID, "owner %s, but %s is managed by %s", j.OwnerID, cluster(j), hub)
		}
		for _, h := range j.History {
			if (h.Action == actionPromote || h.Action == actionTakeover) && hub != "" && h.By != hub {
				r.add(OneWork, "promoted by a hub that does not manage its cluster", j.ID, "%s at fence %d by %s, but %s is managed by %s", h.Action, h.Fence, h.By, cluster(j), hub)
				break
			}
		}
		ws := works[j.ID]
		if deployed(j) {
			switch len(ws) {
			case 0:
				r.add(OneWork, "no ManifestWork", j.ID, "%s", describe(j))
			case 1:
			default:
				var where []string
				for _, w := range ws {
					where = append(where, w.Hub+":"+w.Namespace+"/"+w.Name)
				}
				r.add(OneWork, "more than one ManifestWork", j.ID, "%s", strings.Join(where, ", "))
			}
		}
		for _, w := range ws {
			switch {
			case w.Hub != hub || w.Namespace != cluster(j) || w.Name != ocm.WorkName(j.ID):
				r.add(OneWork, "ManifestWork in the wrong place", j.ID, "%s/%s on hub %s; want %s/%s on %s", w.Namespace, w.Name, w.Hub, cluster(j), ocm.WorkName(j.ID), hub)
			case w.Labels[ocm.LabelOwner] != ocm.LabelValue(j.OwnerID):
				r.add(OneWork, "ManifestWork of another owner", j.ID, "labelled owner %q, job owner %q", w.Labels[ocm.LabelOwner], j.OwnerID)
			case !deployed(j):
				// A work of a Degraded or re-opened job is judged only by where it is.
			case w.Annotations[ocm.AnnotationFence] == "":
				r.add(OneWork, "no fence annotation", j.ID, "ManifestWork %s/%s has no %s (job fence %d)", w.Namespace, w.Name, ocm.AnnotationFence, j.Fence)
			case w.Annotations[ocm.AnnotationFence] != strconv.FormatUint(j.Fence, 10):
				r.add(OneWork, "stale fence annotation", j.ID, "ManifestWork %s/%s written at fence %s, job fence %d", w.Namespace, w.Name, w.Annotations[ocm.AnnotationFence], j.Fence)
			}
		}
	}
	// What a deleted group, or an undeployed component, leaves on the spokes. A component may
	// run on several clusters, one job each: what counts is whether the component is undeployed
	// on the object's cluster (a job there undeployed, none there that may have a work).
	undeployed := map[[3]string]string{}
	for i := range s.Jobs {
		j := &s.Jobs[i]
		if !j.Deleted && j.Type == model.DeleteDeployment && j.State == model.Finished {
			undeployed[[3]string{j.JobGroupID, j.Component, cluster(j)}] = j.ID
		}
	}
	for i := range s.Jobs {
		if j := &s.Jobs[i]; mayHaveWork(j) {
			delete(undeployed, [3]string{j.JobGroupID, j.Component, cluster(j)})
		}
	}
	for _, o := range s.SpokeObjects {
		where := fmt.Sprintf("%s %s/%s on %s", o.Kind, o.Namespace, o.Name, o.Cluster)
		if o.Owner != "" {
			where += " (" + o.Owner + ")"
		}
		if g, ok := s.Groups[o.Instance]; ok && g.Deleted {
			r.add(OneWork, "left on a spoke after its group was deleted", o.Instance, "%s", where)
		} else if id, ok := undeployed[[3]string{o.Instance, o.Component, o.Cluster}]; ok && o.Kind != "Namespace" {
			r.add(OneWork, "left on a spoke after undeploy", id, "%s (component %s stopped or removed)", where, o.Component)
		}
	}
}

// window is one remediation of a job: the reopen-7 that ordered it and what followed until
// the next reopen.
type window struct {
	incompliance string
	at           time.Time
	redeploys    int
	finished     bool
}

var incomplianceWhy = regexp.MustCompile(`^incompliance (\S+):`)

// remediations are the remediation windows of a job since its manifests were last replaced
// (a ReplaceDeployment swaps them for the descriptor's, base annotation included).
func remediations(j *Job) []window {
	var out []window
	var cur *window
	for _, h := range j.History {
		switch {
		case h.Action == reopenPrefix+"8":
			out, cur = nil, nil
		case h.Action == reopenPrefix+"7":
			w := window{at: h.At}
			if m := incomplianceWhy.FindStringSubmatch(h.Why); m != nil {
				w.incompliance = m[1]
			}
			out = append(out, w)
			cur = &out[len(out)-1]
		case strings.HasPrefix(h.Action, reopenPrefix):
			cur = nil
		case cur != nil && h.Action == actionRedeploy:
			cur.redeploys++
		case cur != nil && h.Action == actionFinish:
			cur.finished = true
		}
	}
	return out
}

// checkExactlyOnce: invariant 3.
func checkExactlyOnce(s Snapshot, r *Result) {
	steps := s.Remediation
	if steps == (Steps{}) {
		steps = DefaultSteps
	}
	opened := map[string]string{} // incompliance → job whose history has its reopen-7
	hasWork := map[string]bool{}
	for _, w := range s.Works {
		hasWork[w.Labels[ocm.LabelJob]] = true
	}
	for _, id := range sortedKeys(s.Incompliances) {
		if in := s.Incompliances[id]; in.Outcome == model.OutcomePending || in.Outcome == "" {
			r.add(ExactlyOnce, "incompliance outcome not recorded", id, "still %q (job %s)", in.Outcome, in.JobID)
		}
	}
	for i := range s.Jobs {
		j := &s.Jobs[i]
		for _, h := range j.History {
			if m := incomplianceWhy.FindStringSubmatch(h.Why); m != nil && h.Action == reopenPrefix+"7" {
				opened[m[1]] = j.ID
			}
		}
		if j.Deleted {
			continue
		}
		d, ok, err := deploymentOf(j.Manifests)
		if !ok {
			continue
		}
		if err != nil {
			r.add(ExactlyOnce, "unreadable Deployment", j.ID, "%v", err)
			continue
		}
		want, ran := d.base, []string{}
		for _, w := range remediations(j) {
			if w.redeploys > 1 {
				r.add(ExactlyOnce, "remediation applied twice", j.ID, "incompliance %s: %d redeploys in one execution order", w.incompliance, w.redeploys)
			}
			if w.redeploys == 0 && !w.finished {
				continue
			}
			in, ok := s.Incompliances[w.incompliance]
			if !ok {
				r.add(ExactlyOnce, "remediation of an unknown incompliance", j.ID, "reopen-7 at %s names incompliance %q", w.at.Format(time.TimeOnly), w.incompliance)
				continue
			}
			want, _ = steps.Remediate(want, in.Remediation)
			ran = append(ran, string(in.Remediation))
		}
		after := "after " + strings.Join(ran, ", ")
		if len(ran) == 0 {
			after = "no remediation ran"
		}
		if d.spec != want {
			r.add(ExactlyOnce, "stored manifests differ from the remediations that ran", j.ID, "%s; want %s (%s)", d.spec, want, after)
		}
		if !deployed(j) || !hasWork[j.ID] {
			continue // a missing work is invariant 2's
		}
		spoke := findSpoke(s.SpokeObjects, cluster(j), j.Namespace, d.name)
		switch {
		case spoke == nil:
			r.add(ExactlyOnce, "Deployment missing on the spoke", j.ID, "no Deployment %s/%s on %s", j.Namespace, d.name, cluster(j))
		case *spoke.Spec == want:
		case drifted(s, j, spoke, want):
			r.note("job %s: Deployment %s/%s on %s still carries a hand edit (replicas %d) made after the job last applied a new spec; the work agent repairs drift only on its resync",
				j.ID, j.Namespace, d.name, cluster(j), spoke.Spec.Replicas)
		default:
			r.add(ExactlyOnce, "spoke differs from the remediations that ran", j.ID, "%s on %s; want %s (%s)", spoke.Spec, cluster(j), want, after)
		}
	}
	for _, id := range sortedKeys(s.Incompliances) {
		in := s.Incompliances[id]
		jobID, wasOpened := opened[id]
		switch {
		case openedJob(in) && !wasOpened:
			r.add(ExactlyOnce, "applied incompliance opened no remediation", id, "outcome applied for job %s, whose history has no reopen-7 for it", in.JobID)
		case wasOpened && !openedJob(in):
			r.add(ExactlyOnce, "remediation opened for an incompliance not recorded as applied", jobID, "incompliance %s: outcome %s (%s)", id, in.Outcome, in.Reason)
		}
	}
}

// openedJob: the incompliance's recorded outcome says it opened a remediation job (applied,
// and not as a duplicate of one under way).
func openedJob(in model.Incompliance) bool {
	return in.Outcome == model.OutcomeApplied && !strings.HasPrefix(in.Reason, "deduplicated")
}

func findSpoke(objs []SpokeObject, cluster, namespace, name string) *SpokeObject {
	for i := range objs {
		o := &objs[i]
		if o.Kind == "Deployment" && o.Spec != nil && o.Cluster == cluster && o.Namespace == namespace && o.Name == name {
			return o
		}
	}
	return nil
}

// drifted: the spoke Deployment differs from want only by a hand edit of its replicas made
// after the job last applied a new spec (a remediation, a replace, a fresh create): nothing
// since gave the work agent a reason to apply it again, and ocm-jobs does not promise to
// repair drift on its own.
func drifted(s Snapshot, j *Job, o *SpokeObject, want Spec) bool {
	var last time.Time
	pending := false // a new spec waits for the execution that applies it
	for _, h := range j.History {
		switch {
		case h.Action == actionCreate, h.Action == reopenPrefix+"5", h.Action == reopenPrefix+"8":
			pending = true
		case h.Action == actionRedeploy:
			last = h.At
		case (h.Action == actionPromote || h.Action == actionTakeover) && pending:
			last, pending = h.At, false
		}
	}
	got := *o.Spec
	for _, d := range s.Drift {
		if d.Cluster == o.Cluster && d.Namespace == o.Namespace && d.Name == o.Name && d.At.After(last) && d.Replicas == got.Replicas {
			got.Replicas = want.Replicas
			return got == want
		}
	}
	return false
}

// checkNoReexecution: invariant 4.
func checkNoReexecution(s Snapshot, r *Result) {
	for i := range s.Jobs {
		j := &s.Jobs[i]
		var terminal *model.HistoryEntry
		for k := range j.History {
			h := &j.History[k]
			if (h.Action == actionPromote || h.Action == actionTakeover) && terminal != nil {
				r.add(NoReexecution, "re-executed after a terminal state", j.ID, "%s at fence %d by %s after %s to %s at %s (fence %d)",
					h.Action, h.Fence, h.By, terminal.Action, terminal.To, terminal.At.Format(time.TimeOnly), terminal.Fence)
				break
			}
			switch {
			case h.To == model.Finished || h.To == model.Degraded:
				terminal = h
			case strings.HasPrefix(h.Action, reopenPrefix), h.To == model.Progressing || h.To == model.Created:
				terminal = nil
			}
		}
	}
}

// eventKey is what an event must match: the job, the type, the fence of the transition.
type eventKey struct {
	job   string
	typ   string
	fence uint64
}

// announced are the events a job's history requires (one per state change), and the ones
// it allows (those plus announcements of a re-opened job's new order).
func announced(j *Job) (required, allowed map[eventKey]model.HistoryEntry) {
	required, allowed = map[eventKey]model.HistoryEntry{}, map[eventKey]model.HistoryEntry{}
	retargeted := false
	for _, h := range j.History {
		retargeted = retargeted || h.Action == actionTarget
	}
	for _, h := range j.History {
		typ, ok := eventOfState[h.To]
		if !ok {
			continue
		}
		k := eventKey{j.ID, typ, h.Fence}
		allowed[k] = h
		var must bool
		switch {
		case h.Action == actionCreate:
			// Created with a target from the start (else the target entry announces it).
			must = !retargeted && cluster(j) != ""
		case h.Action == actionTarget, h.Action == actionPromote, h.Action == actionTakeover:
			must = true
		case h.Action == "delete", h.Action == actionRedeploy:
			must = false
		default:
			must = h.From != h.To
		}
		if must {
			required[k] = h
		}
	}
	return required, allowed
}

// checkAnnounced: invariant 5.
func checkAnnounced(s Snapshot, r *Result) {
	seen := map[eventKey]int{}
	for _, e := range s.Events {
		seen[eventKey{e.JobID, e.Type, e.Fence}]++
	}
	allowedAll := map[eventKey]bool{}
	for i := range s.Jobs {
		j := &s.Jobs[i]
		required, allowed := announced(j)
		for k := range allowed {
			allowedAll[k] = true
		}
		for _, k := range sortedEventKeys(required) {
			if seen[k] == 0 {
				h := required[k]
				r.add(Announced, "transition not announced", j.ID, "%s %s→%s at fence %d (%s): no %s", h.Action, stateName(h.From), h.To, h.Fence, h.At.Format(time.TimeOnly), k.typ)
			}
		}
	}
	reported := map[eventKey]bool{}
	for _, e := range s.Events {
		k := eventKey{e.JobID, e.Type, e.Fence}
		if !allowedAll[k] && !reported[k] {
			reported[k] = true
			r.add(Announced, "event for no committed transition", e.JobID, "%s at fence %d (data state %s, source %s): the history has no such transition", e.Type, e.Fence, e.State, e.Source)
		}
	}
}

func stateName(s model.JobState) string {
	if s == 0 {
		return "none"
	}
	return s.String()
}

func sortedEventKeys(m map[eventKey]model.HistoryEntry) []eventKey {
	out := make([]eventKey, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(a, b int) bool {
		if out[a].fence != out[b].fence {
			return out[a].fence < out[b].fence
		}
		return out[a].typ < out[b].typ
	})
	return out
}

// EverysecWindow is how long before a kill acknowledged writes may be lost with AOF
// appendfsync everysec (one second of fsyncs, plus one delayed fsync).
const EverysecWindow = 2 * time.Second

// checkDurable: invariant 6.
func checkDurable(s Snapshot, r *Result) {
	lostInWindow := 0
	for _, c := range s.Creates {
		if _, ok := s.Groups[c.GroupID]; ok {
			continue
		}
		var killedAfter *RedisKill
		for i := range s.RedisKills {
			k := &s.RedisKills[i]
			if !k.At.Before(c.At) && (killedAfter == nil || k.At.Before(killedAfter.At)) {
				killedAfter = k
			}
		}
		switch {
		case killedAfter != nil && killedAfter.AppendFsync == "everysec" && killedAfter.At.Sub(c.At) <= EverysecWindow:
			lostInWindow++
			r.note("group %s (created via %s at %s) lost by the kill at %s with appendfsync everysec: within the %s window everysec allows",
				c.GroupID, c.Via, c.At.Format(time.TimeOnly), killedAfter.At.Format(time.TimeOnly), EverysecWindow)
		case killedAfter != nil:
			r.add(Durable, "acknowledged create lost", c.GroupID, "created via %s at %s, gone after the kill at %s (appendfsync %s)",
				c.Via, c.At.Format(time.TimeOnly), killedAfter.At.Format(time.TimeOnly), killedAfter.AppendFsync)
		default:
			r.add(Durable, "acknowledged create lost", c.GroupID, "created via %s at %s and gone, with no Redis kill after it", c.Via, c.At.Format(time.TimeOnly))
		}
	}
	everysec := 0
	for _, k := range s.RedisKills {
		if k.AppendFsync == "everysec" {
			everysec++
		}
	}
	if everysec > 0 {
		r.note("AOF everysec: redis-server killed %d times, %d acknowledged creates lost within the %s window (a SIGKILL leaves the written AOF in the page cache; only a machine crash loses the window)",
			everysec, lostInWindow, EverysecWindow)
	}
}

// checkConsistent: invariant 7.
func checkConsistent(s Snapshot, r *Result) {
	for _, p := range s.StoreProblems {
		r.add(Consistent, "store inconsistent", jobIn(p), "%s", p)
	}
	for i := range s.Jobs {
		j := &s.Jobs[i]
		if len(j.History) == 0 {
			r.add(Consistent, "job without history", j.ID, "%s", describe(j))
			continue
		}
		last := j.History[len(j.History)-1]
		if !j.Deleted && last.To != j.State {
			r.add(Consistent, "history disagrees with the job", j.ID, "last entry %s →%s at %s, job is %s", last.Action, last.To, last.At.Format(time.TimeOnly), j.State)
		}
		var fence uint64
		for _, h := range j.History {
			if h.Action == actionPromote || h.Action == actionTakeover {
				fence = h.Fence
			}
		}
		if fence != j.Fence {
			r.add(Consistent, "fence disagrees with the history", j.ID, "job fence %d, last promote at fence %d", j.Fence, fence)
		}
		if g, ok := s.Groups[j.JobGroupID]; !ok || !contains(g.Jobs, j.ID) {
			r.add(Consistent, "job not in its group", j.ID, "group %s (known %v) does not list it", j.JobGroupID, ok)
		}
	}
}

func contains(ids []string, id string) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// jobIn is the job id a store consistency problem names ("" when it names none).
func jobIn(problem string) string {
	for _, w := range strings.Fields(problem) {
		w = strings.Trim(w, ":,")
		if len(w) == 36 && strings.Count(w, "-") == 4 {
			return w
		}
	}
	return ""
}
