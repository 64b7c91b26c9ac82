package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/ocm"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
	"github.com/ocm-jobs/ocm-jobs/tests/chaos/invariants"
)

// Collect reads the world into a snapshot for the checks: every key of the store (jobs of
// deleted groups included, each with its history), every ManifestWork of ocm-jobs on both
// hubs, the objects jobs deployed on both spokes, the recorded events, and what the workload
// and the faults did.
func Collect(ctx context.Context, st *Stack, d *Driver, fr *FaultRunner) (invariants.Snapshot, error) {
	s := invariants.Snapshot{
		HubOf:  map[string]string{},
		Groups: map[string]invariants.Group{}, Incompliances: map[string]model.Incompliance{},
		Events: st.Recorder.Events(), Creates: d.Creates(), RedisKills: fr.RedisKills(), Drift: fr.Drift(),
		Remediation: invariants.DefaultSteps,
	}
	for hub, c := range clusterOfHub {
		s.HubOf[c] = st.HubIDs[hub]
	}
	if err := collectStore(ctx, st, &s); err != nil {
		return s, fmt.Errorf("reading the store: %w", err)
	}
	problems, err := st.Store.CheckConsistency(ctx)
	if err != nil {
		return s, fmt.Errorf("checking the store: %w", err)
	}
	s.StoreProblems = problems
	for hub, h := range st.Hubs {
		// The jobs' works; the access works of namespaces (no job label) are not a job's.
		list, err := h.Work.WorkV1().ManifestWorks("").List(ctx, metav1.ListOptions{LabelSelector: ocm.ManagedSelector + "," + ocm.LabelJob})
		if err != nil {
			return s, fmt.Errorf("listing the ManifestWorks of hub %s: %w", hub, err)
		}
		for _, w := range list.Items {
			s.Works = append(s.Works, invariants.Work{Hub: st.HubIDs[hub], Namespace: w.Namespace, Name: w.Name,
				Labels: w.Labels, Annotations: w.Annotations, Deleting: w.DeletionTimestamp != nil})
		}
	}
	for _, c := range clusters {
		objs, err := spokeObjects(ctx, st, c)
		if err != nil {
			return s, fmt.Errorf("reading spoke %s: %w", c, err)
		}
		s.SpokeObjects = append(s.SpokeObjects, objs...)
	}
	return s, nil
}

// spokeObjects are the Deployments, ConfigMaps and Namespaces on a cluster that carry the
// ICOS instance annotation (what jobs deployed).
func spokeObjects(ctx context.Context, st *Stack, cluster string) ([]invariants.SpokeObject, error) {
	spoke := st.Env.Spoke(cluster)
	kube := spoke.Kube
	owners, err := appliedOwners(ctx, st, cluster)
	if err != nil {
		return nil, err
	}
	var out []invariants.SpokeObject
	mk := func(kind string, m metav1.ObjectMeta) invariants.SpokeObject {
		o := invariants.SpokeObject{Cluster: cluster, Kind: kind, Namespace: m.Namespace, Name: m.Name,
			Instance: m.Annotations[ocm.AnnotationInstance], Component: m.Annotations[ocm.AnnotationComponent]}
		var by []string
		for _, ref := range m.OwnerReferences {
			if ref.Kind == "AppliedManifestWork" {
				by = append(by, owners(ref))
			}
		}
		o.Owner = strings.Join(by, "; ")
		return o
	}
	deps, err := kube.AppsV1().Deployments("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	for i := range deps.Items {
		dp := &deps.Items[i]
		if dp.Annotations[ocm.AnnotationInstance] == "" || dp.DeletionTimestamp != nil {
			continue // not ours, or on its way out (its deletion was asked for)
		}
		o := mk("Deployment", dp.ObjectMeta)
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(dp)
		if err != nil {
			return nil, err
		}
		spec, err := invariants.SpecOf(u)
		if err != nil {
			return nil, fmt.Errorf("Deployment %s/%s: %w", dp.Namespace, dp.Name, err)
		}
		o.Spec = &spec
		out = append(out, o)
	}
	cms, err := kube.CoreV1().ConfigMaps("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	for _, cm := range cms.Items {
		if cm.Annotations[ocm.AnnotationInstance] != "" && cm.DeletionTimestamp == nil {
			out = append(out, mk("ConfigMap", cm.ObjectMeta))
		}
	}
	nss, err := kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	for _, ns := range nss.Items {
		// A Terminating namespace was deleted; the namespace controller is emptying it.
		if ns.Annotations[ocm.AnnotationInstance] != "" && ns.DeletionTimestamp == nil {
			out = append(out, mk("Namespace", ns.ObjectMeta))
		}
	}
	return out, nil
}

// appliedOwners describes the AppliedManifestWork an owner reference names: whether it (with
// that uid) still exists, is being deleted, and whether its hub ManifestWork still exists.
func appliedOwners(ctx context.Context, st *Stack, cluster string) (func(metav1.OwnerReference) string, error) {
	applied, err := st.Env.Spoke(cluster).Work.WorkV1().AppliedManifestWorks().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing AppliedManifestWorks: %w", err)
	}
	hub := ""
	for h, c := range clusterOfHub {
		if c == cluster {
			hub = h
		}
	}
	return func(ref metav1.OwnerReference) string {
		for _, a := range applied.Items {
			if a.UID != ref.UID {
				continue
			}
			state := "exists"
			if a.DeletionTimestamp != nil {
				state = "being deleted"
			}
			work := "gone"
			if h := st.Hubs[hub]; h != nil {
				if _, err := h.Work.WorkV1().ManifestWorks(cluster).Get(ctx, a.Spec.ManifestWorkName, metav1.GetOptions{}); err == nil {
					work = "exists"
				} else if !apierrors.IsNotFound(err) {
					work = err.Error()
				}
			}
			return fmt.Sprintf("owned by AppliedManifestWork %s, which %s, %d applied resources listed; its ManifestWork %s/%s: %s",
				a.Name, state, len(a.Status.AppliedResources), cluster, a.Spec.ManifestWorkName, work)
		}
		return fmt.Sprintf("owned by AppliedManifestWork %s (uid %s), which is gone", ref.Name, ref.UID)
	}, nil
}

// collectStore reads every key of the store: it is the one place here that knows the store's
// key layout (shared/store/doc.go) beyond its API; the histories and incompliances are read
// through the store's API.
func collectStore(ctx context.Context, st *Stack, s *invariants.Snapshot) error {
	var keys []string
	it := st.RDB.Scan(ctx, 0, storePrefix+":{b:*", 1000).Iterator()
	for it.Next(ctx) {
		keys = append(keys, it.Val())
	}
	if err := it.Err(); err != nil {
		return err
	}
	pipe := st.RDB.Pipeline()
	hashes := map[string]*redis.MapStringStringCmd{}
	sets := map[string]*redis.StringSliceCmd{}
	var incs []string
	for _, k := range keys {
		_, rest, ok := strings.Cut(k, "}:")
		if !ok {
			continue
		}
		switch {
		case strings.HasPrefix(rest, "job:"):
			hashes[k] = pipe.HGetAll(ctx, k)
		case strings.HasPrefix(rest, "group:") && strings.HasSuffix(rest, ":jobs"):
			sets[k] = pipe.SMembers(ctx, k)
		case strings.HasPrefix(rest, "group:") && !strings.Contains(strings.TrimPrefix(rest, "group:"), ":"):
			hashes[k] = pipe.HGetAll(ctx, k)
		case strings.HasPrefix(rest, "inc:"):
			incs = append(incs, strings.TrimPrefix(rest, "inc:"))
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		return err
	}
	groupJobs := map[string][]string{}
	for k, c := range sets {
		_, rest, _ := strings.Cut(k, "}:")
		groupJobs[strings.TrimSuffix(strings.TrimPrefix(rest, "group:"), ":jobs")] = c.Val()
	}
	for k, c := range hashes {
		h := c.Val()
		if len(h) == 0 {
			continue
		}
		_, rest, _ := strings.Cut(k, "}:")
		if id, ok := strings.CutPrefix(rest, "group:"); ok {
			s.Groups[id] = invariants.Group{ID: id, Deleted: h["deleted_at"] != "", Jobs: groupJobs[id]}
			continue
		}
		j, err := decodeJob(h)
		if err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
		hist, err := st.Store.History(ctx, j.ID)
		if errors.Is(err, store.ErrNotFound) {
			hist, err = nil, nil // invariant 7 reports a job without history
		}
		if err != nil {
			return fmt.Errorf("history of job %s: %w", j.ID, err)
		}
		for a, b := 0, len(hist)-1; a < b; a, b = a+1, b-1 {
			hist[a], hist[b] = hist[b], hist[a]
		}
		j.History = hist
		s.Jobs = append(s.Jobs, j)
	}
	for _, id := range incs {
		in, err := st.Store.GetIncompliance(ctx, id)
		if err != nil {
			return fmt.Errorf("incompliance %s: %w", id, err)
		}
		s.Incompliances[id] = *in
	}
	return nil
}

// decodeJob reads a job hash, deleted or not (the store's own decoder skips deleted jobs).
func decodeJob(h map[string]string) (invariants.Job, error) {
	var doc struct {
		ID         string `json:"id"`
		JobGroupID string `json:"job_group_id"`
		Name       string `json:"job_group_name"`
		Namespace  string `json:"namespace"`
		Component  string `json:"component"`
	}
	if err := json.Unmarshal([]byte(h["doc"]), &doc); err != nil {
		return invariants.Job{}, fmt.Errorf("doc: %w", err)
	}
	j := invariants.Job{Deleted: h["deleted_at"] != "", Job: model.Job{
		ID: doc.ID, JobGroupID: doc.JobGroupID, JobGroupName: doc.Name, Namespace: doc.Namespace, Component: doc.Component,
		OwnerID: h["owner"], SubType: model.SubType(h["sub_type"]), Orchestrator: model.Orchestrator(h["orch"]),
	}}
	st, _ := strconv.Atoi(h["state"])
	ty, _ := strconv.Atoi(h["type"])
	j.State, j.Type = model.JobState(st), model.JobType(ty)
	j.Fence, _ = strconv.ParseUint(h["fence"], 10, 64)
	if ms, err := strconv.ParseInt(h["updated_at"], 10, 64); err == nil {
		j.UpdatedAt = time.UnixMilli(ms)
	}
	for field, into := range map[string]any{"manifests": &j.Manifests, "targets": &j.Targets, "resource": &j.Resource, "remediation": &j.Remediation} {
		if v := h[field]; v != "" {
			if err := json.Unmarshal([]byte(v), into); err != nil {
				return j, fmt.Errorf("%s: %w", field, err)
			}
		}
	}
	return j, nil
}
