package executor

import (
	"context"
	"errors"
	"fmt"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/ocm-jobs/ocm-jobs/functions/executor/remediation"
	"github.com/ocm-jobs/ocm-jobs/shared/events"
	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/ocm"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
)

// outcome is how an execution that did not fail ended.
type outcome int

const (
	// applied: the execution did its part on the hub; the job waits for status sync (or was
	// finished here, a delete whose work is gone).
	applied outcome = iota
	// moving: a reallocation took a step and waits for the next one (the next tick).
	moving
)

// run executes a promoted job by its type.
func (f *Function) run(ctx context.Context, c store.Claim, j *model.Job) (outcome, *failure) {
	if j.Targets == nil || j.Targets.ClusterName == "" {
		return applied, degraded("NoTarget", "the job has no target cluster")
	}
	switch j.Type {
	case model.CreateDeployment, model.ReplaceDeployment:
		return applied, f.deploy(ctx, c, j, j.Targets.ClusterName, j.Manifests, f.cfg.AccessWait)
	case model.DeleteDeployment:
		return applied, f.undeploy(ctx, c, j)
	case model.UpdateDeployment:
		rem := model.Remediation{Action: j.SubType}
		if j.Remediation != nil {
			rem = *j.Remediation
			if rem.Action == "" {
				rem.Action = j.SubType
			}
		}
		if rem.Action == model.Reallocation {
			return f.move(ctx, c, j, rem)
		}
		return applied, f.remediate(ctx, c, j, rem)
	}
	return applied, degraded("UnknownJobType", "job type %d cannot be executed", j.Type)
}

// remediate computes the remediation's result once per execution and stores it before it is
// applied: an execution that is resumed (it died after the apply, or the apply failed
// transiently) applies the stored result again and never remediates twice.
func (f *Function) remediate(ctx context.Context, c store.Claim, j *model.Job, rem model.Remediation) *failure {
	ms := j.Manifests
	if j.Remediated != c.Fence {
		var err error
		if ms, err = remediation.Remediate(j.Manifests, rem, f.opts); err != nil {
			var na *remediation.NotApplicableError
			if errors.As(err, &na) {
				return degraded(na.Reason, "%s", na.Message)
			}
			return degraded("RemediationFailed", "%v", err)
		}
		if _, err := f.store.Record(ctx, c, store.Record{Manifests: ms, Remediated: true, Why: string(rem.Action)}); err != nil {
			return storeFailure(err)
		}
	}
	return f.deploy(ctx, c, j, j.Targets.ClusterName, ms, f.cfg.AccessWait)
}

// deploy server-side applies the job's ManifestWork for this execution on cluster, once the
// manifest policy allows every manifest there (checked at intake too, without the cluster when
// it was not known; a remediation or a reallocation changes what and where).
func (f *Function) deploy(ctx context.Context, c store.Claim, j *model.Job, cluster string, manifests []model.PlainManifest, accessWait time.Duration) *failure {
	ns := ocm.JobNamespace(j)
	opts := ocm.WorkOptions{Refuses: func(o *unstructured.Unstructured) string { return f.policy.Refuses(o, ns, cluster) }}
	if f.cfg.ExecutorSubject {
		opts.Executor = ocm.DeployerOf(ns)
	}
	mw, err := ocm.BuildWork(j, cluster, f.hubID, c.Fence, manifests, opts)
	var refused *ocm.RefusedError
	switch {
	case errors.As(err, &refused):
		return degraded("PolicyViolation", "%s", refused.Message)
	case err != nil:
		return degraded("ManifestInvalid", "%v", err)
	}
	if opts.Executor != nil {
		if fl := f.ensureAccess(ctx, j, cluster, manifests, accessWait); fl != nil {
			return fl
		}
	}
	f.faults.BeforeApply(ctx)
	if fl := f.confirm(ctx); fl != nil {
		return fl
	}
	if err := f.works.Apply(ctx, mw); err != nil {
		return hubFailure(err, "applying ManifestWork "+cluster+"/"+mw.Name)
	}
	return nil
}

// accessFresh is how long a namespace's access work, once seen in place, is taken to be so
// without reading it again.
const accessFresh = time.Minute

// ensureAccess makes sure the access work of the job's namespace on cluster is in place —
// the namespace, and the deployer service account with the rights the manifest policy grants
// there — before a work that names the deployer as its executor is applied: the agent checks
// the executor's rights when it applies, and refuses (and retries only a minute later) what
// the deployer may not do yet. Only the first job of a namespace on a cluster waits for the
// agent; the others find the work in place (read once a minute, or remembered).
func (f *Function) ensureAccess(ctx context.Context, j *model.Job, cluster string, manifests []model.PlainManifest, wait time.Duration) *failure {
	ns := ocm.JobNamespace(j)
	// The policy is this process's for its whole life: what a namespace's Role grants is
	// derived once, when the namespace is first seen, not on every job.
	key := cluster + "/" + ns
	var seen accessSeen
	if v, ok := f.opened.Load(key); ok {
		seen = v.(accessSeen)
		switch {
		case seen.open && time.Since(seen.at) < accessFresh:
			return nil
		case !seen.open && time.Since(seen.at) < wait:
			// It was waited for in vain a moment ago (the agent is down, say): read it once
			// rather than hold another delivery for the whole wait.
			wait = 0
		}
	} else {
		seen.rules = f.policy.RBACRules(ns, cluster)
		seen.digest = ocm.RulesDigest(seen.rules)
	}
	rules, digest := seen.rules, seen.digest
	name := ocm.AccessWorkName(ns)
	w, err := f.works.Get(ctx, cluster, name)
	if err != nil {
		return hubFailure(err, "reading ManifestWork "+cluster+"/"+name)
	}
	if !w.Opened(digest) {
		if w == nil || w.Deleting() || w.Metadata.Annotations[ocm.AnnotationAccessRules] != digest {
			if err := f.works.Apply(ctx, ocm.BuildAccessWork(j, cluster, f.hubID, manifests, rules)); err != nil {
				return hubFailure(err, "applying ManifestWork "+cluster+"/"+name)
			}
		}
		last, ok, err := f.works.WaitOpened(ctx, cluster, name, digest, 100*time.Millisecond, wait)
		if err != nil {
			return hubFailure(err, "reading ManifestWork "+cluster+"/"+name)
		}
		if !ok {
			why := "not applied yet"
			if last != nil {
				if v := ocm.VerdictOf(last, time.Now(), 0); v.Outcome == ocm.Failed {
					why = v.Message
				}
			}
			f.opened.Store(key, accessSeen{at: time.Now(), rules: rules, digest: digest})
			return transient("namespace %s on %s is not open to its deployer within %s: %s", ns, cluster, wait, why)
		}
	}
	f.opened.Store(key, accessSeen{at: time.Now(), open: true, rules: rules, digest: digest})
	return nil
}

// accessSeen is what ensureAccess last saw of a namespace's access work — open, or waited
// for in vain — and the Role it must grant (the policy's rules there, and their digest).
type accessSeen struct {
	at     time.Time
	open   bool
	rules  []rbacv1.PolicyRule
	digest string
}

// undeploy deletes the job's ManifestWork (Foreground: the agent removes the objects first)
// and finishes the job when it is gone; if that takes longer than DeleteWait the job stays
// Progressing and status sync finishes it when the work disappears.
func (f *Function) undeploy(ctx context.Context, c store.Claim, j *model.Job) *failure {
	cluster, name := j.Targets.ClusterName, ocm.WorkName(j.ID)
	if fl := f.confirm(ctx); fl != nil {
		return fl
	}
	if err := f.works.Delete(ctx, cluster, name); err != nil {
		return hubFailure(err, "deleting ManifestWork "+cluster+"/"+name)
	}
	gone, err := f.works.WaitGone(ctx, cluster, name, 200*time.Millisecond, f.cfg.DeleteWait)
	if err != nil {
		return hubFailure(err, "reading ManifestWork "+cluster+"/"+name)
	}
	if !gone {
		return nil // status sync finishes it once the agent has removed the objects
	}
	if _, err := f.store.Apply(ctx, c, store.Change{To: model.Finished, Why: "ManifestWork " + name + " deleted"}); err != nil {
		return storeFailure(err)
	}
	return nil
}

// move carries a reallocation one or more steps further, make-before-break: the ManifestWork
// is applied on the new cluster; once the agent there reports it Available the new cluster
// becomes the job's target and the old work is deleted; once that is gone the move is over
// and status sync judges the job on its new cluster. If the new work fails, or is not
// Available by the move's deadline, it is deleted again and, once it is gone, the job goes
// Degraded (ReallocationFailed), still running on its old cluster. The move's phase and
// deadline are recorded on the job, so each step is idempotent and a move outlives any one
// delivery: each waits at most REALLOCATION_STEP_WAIT and leaves the rest to the next tick.
func (f *Function) move(ctx context.Context, c store.Claim, j *model.Job, rem model.Remediation) (outcome, *failure) {
	m := j.Move
	if m == nil {
		from := j.Targets.ClusterName
		to, fl := f.chooseCluster(ctx, from, rem.Target)
		if fl != nil {
			return applied, fl
		}
		now, err := f.store.Now(ctx)
		if err != nil {
			return applied, storeFailure(err)
		}
		m = &model.Move{From: from, To: to, Phase: model.MoveApply, Deadline: now.Add(f.cfg.ReallocationTimeout).UTC()}
		if fl := f.recordMove(ctx, c, m, nil, "reallocation from "+from+" to "+to); fl != nil {
			return applied, fl
		}
	}
	name := ocm.WorkName(j.ID)
	for {
		now, err := f.store.Now(ctx)
		if err != nil {
			return applied, storeFailure(err)
		}
		switch m.Phase {
		case model.MoveApply:
			// The new cluster's namespace is waited for no longer than the move has left.
			accessWait := max(min(f.cfg.AccessWait, m.Deadline.Sub(now)), 500*time.Millisecond)
			if fl := f.deploy(ctx, c, j, m.To, j.Manifests, accessWait); fl != nil {
				// What may pass is retried until the move's deadline (e.g. the new cluster's
				// agent has not opened the namespace yet); past it the move rolls back.
				if fl.Transient && now.Before(m.Deadline) {
					return applied, fl
				}
				m.Phase, m.Why = model.MoveRollback, fl.Error()
				if fl := f.recordMove(ctx, c, m, nil, "rolling back: "+m.Why); fl != nil {
					return applied, fl
				}
				continue
			}
			// Past the deadline the work is still read once: it may have become Available.
			wait := max(min(f.cfg.StepWait, m.Deadline.Sub(now)), 500*time.Millisecond)
			_, v, err := f.works.WaitVerdict(ctx, m.To, name, c.Fence, f.cfg.SyncGrace, 250*time.Millisecond, wait)
			if err != nil {
				return applied, hubFailure(err, "reading ManifestWork "+m.To+"/"+name)
			}
			switch {
			case v.Outcome == ocm.Done:
				m.Phase = model.MoveRemoveOld
				t := model.Target{ClusterName: m.To, Orchestrator: model.OCM}
				if fl := f.recordMove(ctx, c, m, &t, "moved to "+m.To+"; removing the work on "+m.From); fl != nil {
					return applied, fl
				}
			case v.Outcome == ocm.Failed:
				m.Phase, m.Why = model.MoveRollback, v.Message
				if fl := f.recordMove(ctx, c, m, nil, "rolling back: "+m.Why); fl != nil {
					return applied, fl
				}
			case !now.Before(m.Deadline):
				m.Phase = model.MoveRollback
				m.Why = fmt.Sprintf("the ManifestWork on %s was not Available within %s", m.To, f.cfg.ReallocationTimeout)
				if fl := f.recordMove(ctx, c, m, nil, "rolling back: "+m.Why); fl != nil {
					return applied, fl
				}
			default:
				return moving, nil
			}
		case model.MoveRemoveOld:
			if done, fl := f.removed(ctx, m.From, name); fl != nil || !done {
				return moving, fl
			}
			if _, err := f.store.Record(ctx, c, store.Record{EndMove: true, Why: "reallocated from " + m.From + " to " + m.To}); err != nil {
				return applied, storeFailure(err)
			}
			return applied, nil
		case model.MoveRollback:
			if done, fl := f.removed(ctx, m.To, name); fl != nil || !done {
				return moving, fl
			}
			return applied, degraded("ReallocationFailed", "%s; the job stays on %s", m.Why, m.From)
		default:
			return applied, degraded("ReallocationFailed", "unknown reallocation phase %q", m.Phase)
		}
	}
}

// recordMove records a move's new phase (and the job's new target).
func (f *Function) recordMove(ctx context.Context, c store.Claim, m *model.Move, target *model.Target, why string) *failure {
	if _, err := f.store.Record(ctx, c, store.Record{Move: m, Target: target, Why: why}); err != nil {
		return storeFailure(err)
	}
	return nil
}

// removed deletes a work and waits up to StepWait for it to be gone.
func (f *Function) removed(ctx context.Context, cluster, name string) (bool, *failure) {
	if fl := f.confirm(ctx); fl != nil {
		return false, fl
	}
	if err := f.works.Delete(ctx, cluster, name); err != nil {
		return false, hubFailure(err, "deleting ManifestWork "+cluster+"/"+name)
	}
	gone, err := f.works.WaitGone(ctx, cluster, name, 250*time.Millisecond, f.cfg.StepWait)
	if err != nil {
		return false, hubFailure(err, "reading ManifestWork "+cluster+"/"+name)
	}
	return gone, nil
}

// chooseCluster picks where a reallocation goes, among the clusters this hub manages: the
// cluster the job names; else the first cluster the default Placement chose other than the
// current one; else any other managed cluster (in name order).
func (f *Function) chooseCluster(ctx context.Context, current string, named *model.Target) (string, *failure) {
	mine, err := f.clusters.List(ctx)
	if err != nil {
		return "", hubFailure(err, "listing ManagedClusters")
	}
	managed := map[string]bool{}
	for _, c := range mine {
		managed[c] = true
	}
	if named != nil && named.ClusterName != "" {
		switch {
		case named.ClusterName == current:
			return "", degraded("SameCluster", "the job already runs on %s", current)
		case !managed[named.ClusterName]:
			return "", degraded("ClusterNotManaged", "this hub does not manage cluster %s (it manages %v)", named.ClusterName, mine)
		}
		return named.ClusterName, nil
	}
	if f.cfg.DefaultPlacement != "" {
		ref, err := ocm.ParsePlacementRef(f.cfg.DefaultPlacement, f.cfg.PlacementNamespace)
		if err != nil {
			return "", degraded("NoTarget", "%v", err)
		}
		clusters, err := f.hub.PlacementClusters(ctx, ref)
		if err != nil && !errors.Is(err, ocm.ErrNoDecision) {
			return "", hubFailure(err, "reading the placement")
		}
		for _, c := range clusters {
			if c != current && managed[c] {
				return c, nil
			}
		}
		return "", degraded("NoTarget", "placement %s chose no cluster of this hub other than %s", ref, current)
	}
	for _, c := range mine {
		if c != current && c != ocm.LocalCluster {
			return c, nil
		}
	}
	return "", degraded("NoTarget", "no ManagedCluster other than %s to move to", current)
}

// sweep does what job.created events did not: executes the executable jobs of this hub's
// clusters (lost events, jobs given a target late, takeovers of jobs whose owner's lease
// lapsed past the takeover TTL), resumes this hub's executions that are over without having
// been applied (they died, failed transiently, or are reallocations waiting for their next
// step), registers the clusters this hub manages, and marks jobs whose cluster no hub manages.
func (f *Function) sweep(ctx context.Context) error {
	mine, err := f.clusters.List(ctx)
	if err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	if err := f.store.RegisterHub(ctx, f.hubID, mine, f.cfg.HubRegistration); err != nil {
		return err
	}
	// Status reads (no manifests) are enough to choose; execute reads each job whole once it
	// is promoted.
	ready, err := f.store.ExecutableJobStatus(ctx, model.OCM, f.hubID)
	if err != nil {
		return err
	}
	// Only a Progressing job can be resumable: the hub's Finished jobs are not read at all.
	owned, err := f.store.ProgressingJobStatusOfOwner(ctx, f.hubID)
	if err != nil {
		return err
	}
	managed := map[string]bool{}
	for _, c := range mine {
		managed[c] = true
	}
	var todo []*model.Job
	var strangers []*model.Job
	for i := range ready {
		j := &ready[i]
		if j.Targets == nil || orchestrator(j) != model.OCM {
			continue
		}
		if !managed[j.Targets.ClusterName] {
			if j.State == model.Created {
				strangers = append(strangers, j)
			}
			continue
		}
		todo = append(todo, j)
	}
	for i := range owned {
		if f.resumable(&owned[i]) {
			todo = append(todo, &owned[i])
		}
	}
	failed := 0
	for n, j := range todo {
		if n >= f.cfg.SweepMax {
			break
		}
		if code := events.StatusOf(f.execute(ctx, j, f.resumable(j), nil)); code >= 500 {
			failed++
		}
	}
	if len(strangers) > 0 {
		if err := f.markUnmanaged(ctx, strangers); err != nil {
			return err
		}
	}
	if failed > 0 {
		return fmt.Errorf("sweep: %d of %d jobs failed transiently", failed, min(len(todo), f.cfg.SweepMax))
	}
	return nil
}

// markUnmanaged gives the Created jobs whose cluster no registered hub manages a condition
// saying so (Progressing=False, NoManagingHub); they stay Created until a hub manages it.
func (f *Function) markUnmanaged(ctx context.Context, jobs []*model.Job) error {
	hubs, err := f.store.Hubs(ctx)
	if err != nil {
		return err
	}
	managedBy := map[string][]string{}
	for id, h := range hubs {
		for _, c := range h.Clusters {
			managedBy[c] = append(managedBy[c], id)
		}
	}
	for _, j := range jobs {
		cluster := j.Targets.ClusterName
		if len(managedBy[cluster]) > 0 {
			continue // another hub's to run
		}
		msg := fmt.Sprintf("no hub sharing this store manages cluster %s (%d hubs registered); the job runs once one does", cluster, len(hubs))
		err := store.RetryOnResourceChange(func() error {
			cur, err := f.store.GetJobStatus(ctx, j.ID)
			if err != nil {
				return err
			}
			r := model.Resource{ID: cur.ID, JobID: cur.ID}
			if cur.Resource != nil {
				r = *cur.Resource
				r.Conditions = append([]model.Condition(nil), cur.Resource.Conditions...)
			}
			if c := r.Condition(model.ConditionProgressing); c != nil && c.Reason == model.ReasonNoManagingHub && c.Message == msg {
				return nil
			}
			r.SetCondition(metav1.Condition{Type: model.ConditionProgressing, Status: metav1.ConditionFalse,
				Reason: model.ReasonNoManagingHub, Message: msg})
			_, err = f.store.WriteCreatedResource(ctx, cur.ID, cur.Resource, r)
			return err
		})
		if err != nil && !errors.Is(err, store.ErrWrongState) && !errors.Is(err, store.ErrNotFound) {
			return err
		}
	}
	return nil
}

func condition(typ string, status bool, reason, message string, fence uint64) metav1.Condition {
	s := metav1.ConditionFalse
	if status {
		s = metav1.ConditionTrue
	}
	if len(message) > 32000 {
		message = message[:32000]
	}
	return metav1.Condition{Type: typ, Status: s, Reason: reason, Message: message, ObservedGeneration: int64(fence)}
}

// failure is why an execution did not succeed: degraded (the job goes Degraded with this
// reason; retrying cannot help) or transient (answered 503, the broker retries).
type failure struct {
	Reason    string
	Message   string
	Transient bool
}

func (f *failure) Error() string { return f.Reason + ": " + f.Message }

func degraded(reason, format string, args ...any) *failure {
	return &failure{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

func transient(format string, args ...any) *failure {
	return &failure{Reason: "Unavailable", Message: fmt.Sprintf(format, args...), Transient: true}
}

// hubFailure classifies an API server error: what the server refuses for good degrades the
// job; what may pass (timeouts, 5xx, connection errors, the context's end) is transient.
func hubFailure(err error, what string) *failure {
	var im *ocm.InvalidManifestError
	switch {
	case errors.As(err, &im):
		return degraded("ManifestInvalid", "%s: %v", what, err)
	case apierrors.IsInvalid(err), apierrors.IsBadRequest(err), apierrors.IsRequestEntityTooLargeError(err),
		apierrors.IsUnsupportedMediaType(err):
		return degraded("ManifestRejected", "%s: %v", what, err)
	case apierrors.IsForbidden(err):
		return degraded("Forbidden", "%s: %v", what, err)
	case apierrors.IsNotFound(err):
		return degraded("ClusterNotFound", "%s: %v", what, err)
	}
	return transient("%s: %v", what, err)
}

// storeFailure: a refused guard means the job changed under this execution (taken over,
// re-opened); anything else is Redis. Either way this execution stops, and is not degraded
// from here (a stale write, which the store would refuse anyway).
func storeFailure(err error) *failure {
	return transient("state store: %v", err)
}
