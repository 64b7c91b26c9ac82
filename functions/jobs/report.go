package jobs

import (
	"context"
	"net/http"
	"sort"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
)

// GroupReport is GET /groups/{id}/report: per component and cluster, what runs and how it is
// doing, from what the store holds (status sync keeps it current): no hub call per request.
type GroupReport struct {
	ID         string            `json:"id"`
	AppName    string            `json:"appName"`
	Components []ComponentReport `json:"components"`
	// Rollout is the group's rollout in waves, if it has one: wave, clusters done / pending /
	// failed.
	Rollout *model.Rollout `json:"rollout,omitempty"`
}

// ComponentReport is one component of the group: one instance per cluster it runs on.
type ComponentReport struct {
	Name      string           `json:"name"`
	Instances []InstanceReport `json:"instances"`
}

// InstanceReport is one job of a component: its cluster, state and workloads.
type InstanceReport struct {
	JobID   string `json:"job_id"`
	Cluster string `json:"cluster,omitempty"`
	// Type, SubType and State are the job's, by name.
	Type    string `json:"type"`
	SubType string `json:"sub_type,omitempty"`
	State   string `json:"state"`
	// OakestraStatus is the state in Oakestra's instance vocabulary (REQUESTED … RUNNING).
	OakestraStatus string `json:"oakestra_status"`
	// LastTransition is the job's newest recorded change of state (or re-open).
	LastTransition *model.HistoryEntry  `json:"last_transition,omitempty"`
	Workloads      []WorkloadReport     `json:"workloads"`
	Services       []ServiceReport      `json:"services"`
	Conditions     []model.Condition    `json:"conditions"`
	Incompliances  []IncomplianceReport `json:"open_incompliances"`
}

// WorkloadReport is one workload: replicas desired by its manifest, and what the work agent
// last reported of it (absent until reported).
type WorkloadReport struct {
	Kind              string `json:"kind"`
	Namespace         string `json:"namespace,omitempty"`
	Name              string `json:"name"`
	Desired           *int64 `json:"desired,omitempty"`
	Replicas          *int64 `json:"replicas,omitempty"`
	ReadyReplicas     *int64 `json:"readyReplicas,omitempty"`
	AvailableReplicas *int64 `json:"availableReplicas,omitempty"`
}

// ServiceReport is one Service of the job, with its ports (from its manifest).
type ServiceReport struct {
	Namespace string        `json:"namespace,omitempty"`
	Name      string        `json:"name"`
	Type      string        `json:"type,omitempty"`
	Ports     []ServicePort `json:"ports"`
}

// ServicePort is one port of a Service.
type ServicePort struct {
	Name       string `json:"name,omitempty"`
	Port       int64  `json:"port"`
	TargetPort any    `json:"targetPort,omitempty"`
	NodePort   int64  `json:"nodePort,omitempty"`
	Protocol   string `json:"protocol,omitempty"`
}

// IncomplianceReport is an incompliance about the job that is not over: pending, or applied
// by a remediation the job has not finished.
type IncomplianceReport struct {
	ID          string        `json:"id"`
	PolicyName  string        `json:"policyName"`
	Remediation model.SubType `json:"remediation"`
	Outcome     model.Outcome `json:"outcome"`
	ReceivedAt  *time.Time    `json:"received_at,omitempty"`
}

// groupReport reads what the report needs: the group, each job's newest history entries and the
// group's incompliances — three reads of the store, each one round trip per server.
func (s *service) groupReport(ctx context.Context, id string) (*GroupReport, *Failure) {
	g, err := s.store.GetGroup(ctx, id)
	if err != nil {
		return nil, failureOf(err)
	}
	ids := make([]string, len(g.Jobs))
	for i, j := range g.Jobs {
		ids[i] = j.ID
	}
	hist, err := s.store.RecentHistory(ctx, ids, historyLookback)
	if err != nil {
		return nil, failureOf(err)
	}
	incs, err := s.store.GroupIncompliances(ctx, id)
	if err != nil {
		return nil, failureOf(err)
	}
	r := BuildReport(g, hist, incs)
	return &r, nil
}

// historyLookback is how many newest history entries are searched for the last transition.
const historyLookback = 8

// BuildReport assembles a group's report from the group as stored, the newest history entries
// of its jobs (newest first) and its incompliances. Pure: table-tested.
func BuildReport(g *model.JobGroup, hist map[string][]model.HistoryEntry, incs []model.Incompliance) GroupReport {
	out := GroupReport{ID: g.ID, AppName: g.AppName, Components: []ComponentReport{}, Rollout: g.Rollout}
	byName := map[string]int{}
	for _, j := range g.Jobs {
		i, ok := byName[j.Component]
		if !ok {
			i = len(out.Components)
			byName[j.Component] = i
			out.Components = append(out.Components, ComponentReport{Name: j.Component})
		}
		out.Components[i].Instances = append(out.Components[i].Instances, instanceReport(j, hist[j.ID], incs))
	}
	sort.Slice(out.Components, func(a, b int) bool { return out.Components[a].Name < out.Components[b].Name })
	for _, c := range out.Components {
		sort.Slice(c.Instances, func(a, b int) bool {
			if c.Instances[a].Cluster != c.Instances[b].Cluster {
				return c.Instances[a].Cluster < c.Instances[b].Cluster
			}
			return c.Instances[a].JobID < c.Instances[b].JobID
		})
	}
	return out
}

func instanceReport(j model.Job, hist []model.HistoryEntry, incs []model.Incompliance) InstanceReport {
	r := InstanceReport{JobID: j.ID, Type: j.Type.String(), SubType: string(j.SubType), State: j.State.String(),
		OakestraStatus: OakestraStatus(&j), Workloads: []WorkloadReport{}, Services: []ServiceReport{},
		Conditions: []model.Condition{}, Incompliances: []IncomplianceReport{}}
	if j.Targets != nil {
		r.Cluster = j.Targets.ClusterName
	}
	for i := range hist {
		if e := hist[i]; e.From != e.To || len(e.Action) > 6 && e.Action[:6] == "reopen" {
			r.LastTransition = &e
			break
		}
	}
	var fed []model.WorkloadStatus
	if j.Resource != nil {
		r.Conditions = append(r.Conditions, j.Resource.Conditions...)
		fed = j.Resource.Workloads
	}
	for _, m := range j.Manifests {
		var u unstructured.Unstructured
		if err := yaml.Unmarshal([]byte(m.YamlString), &u.Object); err != nil || u.Object == nil {
			continue
		}
		ns := u.GetNamespace()
		if ns == "" {
			ns = j.Namespace
		}
		switch u.GetKind() {
		case "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job":
			w := WorkloadReport{Kind: u.GetKind(), Namespace: ns, Name: u.GetName()}
			if u.GetKind() == "Deployment" || u.GetKind() == "StatefulSet" || u.GetKind() == "ReplicaSet" {
				// Absent replicas are Kubernetes' default of 1.
				n := int64(1)
				if v, found, _ := unstructured.NestedFieldNoCopy(u.Object, "spec", "replicas"); found {
					n = number(v)
				}
				w.Desired = &n
			}
			for _, f := range fed {
				if f.Kind == w.Kind && f.Name == w.Name && (f.Namespace == "" || f.Namespace == ns) {
					w.Replicas, w.ReadyReplicas, w.AvailableReplicas = f.Replicas, f.ReadyReplicas, f.AvailableReplicas
				}
			}
			r.Workloads = append(r.Workloads, w)
		case "Service":
			sv := ServiceReport{Namespace: ns, Name: u.GetName(), Ports: []ServicePort{}}
			sv.Type, _, _ = unstructured.NestedString(u.Object, "spec", "type")
			ports, _, _ := unstructured.NestedSlice(u.Object, "spec", "ports")
			for _, p := range ports {
				pm, ok := p.(map[string]any)
				if !ok {
					continue
				}
				sp := ServicePort{TargetPort: pm["targetPort"]}
				sp.Name, _ = pm["name"].(string)
				sp.Protocol, _ = pm["protocol"].(string)
				sp.Port = number(pm["port"])
				sp.NodePort = number(pm["nodePort"])
				sv.Ports = append(sv.Ports, sp)
			}
			r.Services = append(r.Services, sv)
		}
	}
	for _, in := range incs {
		if !in.Covers(j.ID) || !openIncompliance(in, j) {
			continue
		}
		r.Incompliances = append(r.Incompliances, IncomplianceReport{ID: in.ID, PolicyName: in.PolicyName,
			Remediation: in.Remediation, Outcome: in.Outcome, ReceivedAt: in.ReceivedAt})
	}
	return r
}

// openIncompliance: pending, or applied by the remediation the job is still carrying out.
func openIncompliance(in model.Incompliance, j model.Job) bool {
	switch in.Outcome {
	case model.OutcomePending:
		return true
	case model.OutcomeApplied:
		return j.Remediation != nil && j.Remediation.IncomplianceID == in.ID && j.State != model.Finished
	}
	return false
}

func number(v any) int64 {
	switch n := v.(type) {
	case int64:
		return n
	case float64:
		return int64(n)
	case int:
		return int64(n)
	}
	return 0
}

// The Oakestra instance statuses a job maps to (oakestra_utils types/statuses.py).
const (
	OakRequested              = "REQUESTED"
	OakTargetClusterNotActive = "TargetClusterNotActive"
	OakClusterScheduled       = "CLUSTER_SCHEDULED"
	OakCreating               = "CREATING"
	OakCreated                = "CREATED"
	OakRunning                = "RUNNING"
	OakUndeployed             = "UNDEPLOYED"
	OakFailed                 = "FAILED"
)

// OakestraStatus names a job's state in Oakestra's vocabulary: waiting for a cluster is
// REQUESTED (TargetClusterNotActive when no hub manages it), a placed job waiting for its
// executor CLUSTER_SCHEDULED, executing (or re-opened for a change) CREATING, applied but not
// Available yet CREATED, Finished RUNNING; a job being or having been undeployed UNDEPLOYED,
// and a Degraded one FAILED. COMPLETED (a
// one-shot's exit) is never reported: the status feedback does not carry it.
func OakestraStatus(j *model.Job) string {
	switch {
	case j.State == model.Degraded:
		return OakFailed
	case j.Type == model.DeleteDeployment:
		return OakUndeployed
	case j.State == model.Finished:
		return OakRunning
	case j.State == model.Progressing:
		if j.Resource != nil {
			if c := j.Resource.Condition(model.ConditionApplied); c != nil && c.Status == "True" {
				return OakCreated
			}
		}
		return OakCreating
	}
	// Created: re-opened (it ran: a change waits for its executor), or not placed yet.
	if j.Fence > 0 {
		return OakCreating
	}
	if j.Targets == nil {
		return OakRequested
	}
	if j.Resource != nil {
		if c := j.Resource.Condition(model.ConditionProgressing); c != nil && c.Reason == model.ReasonNoManagingHub {
			return OakTargetClusterNotActive
		}
	}
	return OakClusterScheduled
}

// getReport is GET /groups/{id}/report.
func (f *Function) getReport(w http.ResponseWriter, r *http.Request) {
	rep, fl := f.svc.groupReport(r.Context(), r.PathValue("id"))
	answer(w, http.StatusOK, rep, fl, false)
}
