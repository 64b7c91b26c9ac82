package executor

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	workv1 "open-cluster-management.io/api/work/v1"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/ocm"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
)

// fieldManager owns the ManifestWorks' fields in server-side apply.
const fieldManager = "ocm-jobs"

// run executes a promoted job by its type. It returns the ManifestWork it applied (nil when
// the job finished here, e.g. a delete) or why it failed.
func (f *Function) run(ctx context.Context, c store.Claim, j *model.Job) (*workv1.ManifestWork, *failure) {
	if j.Targets == nil || j.Targets.ClusterName == "" {
		return nil, degraded("NoTarget", "the job has no target cluster")
	}
	switch j.Type {
	case model.CreateDeployment, model.ReplaceDeployment:
		return f.deploy(ctx, j, j.Targets.ClusterName, j.Manifests)
	case model.DeleteDeployment:
		return nil, f.undeploy(ctx, c, j)
	case model.UpdateDeployment:
		rem := model.Remediation{Action: j.SubType}
		if j.Remediation != nil {
			rem = *j.Remediation
			if rem.Action == "" {
				rem.Action = j.SubType
			}
		}
		if rem.Action == model.Reallocation {
			return f.reallocate(ctx, c, j, rem)
		}
		ms, err := Remediate(j.Manifests, rem, f.opts)
		if err != nil {
			var na *NotApplicableError
			if errors.As(err, &na) {
				return nil, degraded(na.Reason, "%s", na.Message)
			}
			return nil, degraded("RemediationFailed", "%v", err)
		}
		// Apply first, then record: a re-executed remediation recomputes from the stored
		// manifests and lands on the same result instead of applying twice.
		work, fl := f.deploy(ctx, j, j.Targets.ClusterName, ms)
		if fl != nil {
			return nil, fl
		}
		if _, err := f.store.Redeploy(ctx, c, ms, nil, string(rem.Action)); err != nil {
			return nil, storeFailure(err)
		}
		return work, nil
	}
	return nil, degraded("UnknownJobType", "job type %d cannot be executed", j.Type)
}

// deploy server-side applies the job's ManifestWork on cluster: a retried apply converges on
// the same single ManifestWork (deterministic name, whole spec owned by ocm-jobs).
func (f *Function) deploy(ctx context.Context, j *model.Job, cluster string, manifests []model.PlainManifest) (*workv1.ManifestWork, *failure) {
	if fl := f.checkCluster(ctx, cluster); fl != nil {
		return nil, fl
	}
	mw, fl := buildWork(j, cluster, f.hubID, manifests)
	if fl != nil {
		return nil, fl
	}
	body, err := json.Marshal(mw)
	if err != nil {
		return nil, degraded("ManifestInvalid", "%v", err)
	}
	f.faults.BeforeApply(ctx)
	got, err := f.hub.Work.WorkV1().ManifestWorks(cluster).Patch(ctx, mw.Name, types.ApplyPatchType, body,
		metav1.PatchOptions{FieldManager: fieldManager, Force: ptr.To(true)})
	if err != nil {
		return nil, hubFailure(err, "applying ManifestWork "+cluster+"/"+mw.Name)
	}
	return got, nil
}

// checkCluster refuses a target that is not a ManagedCluster of this hub. A cluster seen
// recently is not asked for again: clusters come and go far slower than jobs.
func (f *Function) checkCluster(ctx context.Context, cluster string) *failure {
	if f.clusters.fresh(cluster) {
		return nil
	}
	ok, err := f.hub.ClusterExists(ctx, cluster)
	if err != nil {
		return hubFailure(err, "reading ManagedCluster "+cluster)
	}
	if !ok {
		return degraded("ClusterNotFound", "no ManagedCluster %q on this hub", cluster)
	}
	f.clusters.saw(cluster)
	return nil
}

// clusterCache remembers for a short time which ManagedClusters exist.
type clusterCache struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

const clusterCacheTTL = 10 * time.Second

func (c *clusterCache) fresh(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Since(c.seen[name]) < clusterCacheTTL
}

func (c *clusterCache) saw(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen == nil {
		c.seen = map[string]time.Time{}
	}
	c.seen[name] = time.Now()
}

// undeploy deletes the job's ManifestWork (Foreground: the agent removes the objects first)
// and finishes the job when it is gone; if that takes longer than DeleteWait the job stays
// Progressing and status sync finishes it when the work disappears.
func (f *Function) undeploy(ctx context.Context, c store.Claim, j *model.Job) *failure {
	works := f.hub.Work.WorkV1().ManifestWorks(j.Targets.ClusterName)
	name := ocm.WorkName(j.ID)
	// The work's own DeleteOption (Foreground) makes the agent remove the objects before it
	// lets the work go; the ManifestWork object itself has no dependents to propagate to.
	err := works.Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return hubFailure(err, "deleting ManifestWork "+j.Targets.ClusterName+"/"+name)
	}
	deadline := time.Now().Add(f.cfg.DeleteWait)
	for {
		_, err := works.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			if _, err := f.store.Finish(ctx, c, "ManifestWork "+name+" deleted"); err != nil {
				return storeFailure(err)
			}
			return nil
		}
		if err != nil {
			return hubFailure(err, "reading ManifestWork "+name)
		}
		if time.Now().After(deadline) {
			return nil // status sync finishes it once the agent has removed the objects
		}
		select {
		case <-ctx.Done():
			return transient("%v", ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// reallocate moves a job to another cluster, make-before-break: the ManifestWork is applied on
// the new cluster, and only once the agent there reports it Available is the old one deleted
// and the new target recorded. If the new one never becomes Available, it is removed again
// and the old one kept.
func (f *Function) reallocate(ctx context.Context, c store.Claim, j *model.Job, rem model.Remediation) (*workv1.ManifestWork, *failure) {
	from := j.Targets.ClusterName
	to, fl := f.chooseCluster(ctx, from, rem.Target)
	if fl != nil {
		return nil, fl
	}
	work, fl := f.deploy(ctx, j, to, j.Manifests)
	if fl != nil {
		return nil, fl
	}
	works := f.hub.Work.WorkV1().ManifestWorks(to)
	deadline := time.Now().Add(f.cfg.ReallocationTimeout)
	for {
		got, err := works.Get(ctx, work.Name, metav1.GetOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return nil, hubFailure(err, "reading ManifestWork "+to+"/"+work.Name)
		}
		if err == nil && meta.IsStatusConditionTrue(got.Status.Conditions, workv1.WorkAvailable) {
			work = got
			break
		}
		if time.Now().After(deadline) {
			_ = works.Delete(context.WithoutCancel(ctx), work.Name, metav1.DeleteOptions{})
			return nil, degraded("ReallocationFailed", "the ManifestWork on %s was not Available within %s; the job stays on %s", to, f.cfg.ReallocationTimeout, from)
		}
		select {
		case <-ctx.Done():
			return nil, transient("%v", ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
	old := f.hub.Work.WorkV1().ManifestWorks(from)
	if err := old.Delete(ctx, ocm.WorkName(j.ID), metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return nil, hubFailure(err, "deleting the old ManifestWork on "+from)
	}
	t := model.Target{ClusterName: to, Orchestrator: model.OCM}
	if _, err := f.store.Redeploy(ctx, c, nil, &t, "reallocated from "+from+" to "+to); err != nil {
		return nil, storeFailure(err)
	}
	return work, nil
}

// chooseCluster picks where a reallocation goes: the cluster the job names; else the first
// cluster the default Placement chose other than the current one; else any other
// ManagedCluster of the hub (in name order).
func (f *Function) chooseCluster(ctx context.Context, current string, named *model.Target) (string, *failure) {
	if named != nil && named.ClusterName != "" {
		if named.ClusterName == current {
			return "", degraded("SameCluster", "the job already runs on %s", current)
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
			if c != current {
				return c, nil
			}
		}
		return "", degraded("NoTarget", "placement %s chose no cluster other than %s", ref, current)
	}
	list, err := f.hub.Cluster.ClusterV1().ManagedClusters().List(ctx, metav1.ListOptions{})
	if err != nil {
		return "", hubFailure(err, "listing ManagedClusters")
	}
	var names []string
	for _, mc := range list.Items {
		if mc.Name != current && mc.Name != ocm.LocalCluster {
			names = append(names, mc.Name)
		}
	}
	sort.Strings(names)
	if len(names) == 0 {
		return "", degraded("NoTarget", "no ManagedCluster other than %s to move to", current)
	}
	return names[0], nil
}

// markDispatched records on the job's resource that this execution applied its ManifestWork.
func (f *Function) markDispatched(ctx context.Context, c store.Claim, j *model.Job, work *workv1.ManifestWork) (*model.Resource, error) {
	// Status sync may write the resource meanwhile: write only over what was read, and on a
	// conflict read again and redo (the two writers set different conditions). A few tries
	// are plenty: status sync writes a job at most once per tick.
	for attempt := 0; ; attempt++ {
		prev := j.Resource
		r := model.Resource{ID: j.ID, JobID: j.ID}
		if prev != nil {
			r = *prev
			r.Conditions = append([]metav1.Condition(nil), prev.Conditions...)
		}
		r.ClusterName, r.ManifestWorkName, r.ManifestWorkUID = work.Namespace, work.Name, string(work.UID)
		if r.ResourceName == "" {
			r.ResourceName = j.Component
		}
		meta.RemoveStatusCondition(&r.Conditions, model.ConditionDegraded)
		r.SetCondition(condition(model.ConditionDispatched, true, "ManifestWorkApplied", "ManifestWork "+work.Namespace+"/"+work.Name+" applied", c.Fence))
		_, err := f.store.WriteResourceStatusIf(ctx, c, prev, r)
		if err == nil || !errors.Is(err, store.ErrResourceChanged) || attempt == 4 {
			return &r, err
		}
		if j, err = f.store.GetJobStatus(ctx, j.ID); err != nil {
			return nil, err
		}
	}
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

// hubFailure classifies an API server error: what the server refuses for good degrades the
// job; what may pass (timeouts, 5xx, connection errors) is transient.
func hubFailure(err error, what string) *failure {
	switch {
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

// storeFailure: a refused guard means another execution took the job over (degrading it
// from here would be a stale write, which the store refuses anyway); anything else is Redis.
func storeFailure(err error) *failure {
	return transient("state store: %v", err)
}
