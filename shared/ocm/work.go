package ocm

import (
	"strings"

	workv1 "open-cluster-management.io/api/work/v1"
)

// Labels on every ManifestWork ocm-jobs owns (DESIGN.md, "On the hub").
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = "ocm-jobs"
	LabelJob       = "jobmanager.icos.eu/job"
	LabelInstance  = "app.icos.eu/instance"
	LabelComponent = "app.icos.eu/component"
	// LabelOwner is the hub that owns the job, so a hub lists only its own works.
	LabelOwner = "jobmanager.icos.eu/owner"
)

// ICOS annotations kept on the manifests of a job.
const (
	AnnotationName      = "app.icos.eu/name"
	AnnotationComponent = "app.icos.eu/component"
	AnnotationInstance  = "app.icos.eu/instance"
)

// ManagedSelector selects every ManifestWork ocm-jobs owns.
const ManagedSelector = LabelManagedBy + "=" + ManagedBy

// OwnerSelector selects the ManifestWorks of the jobs one hub owns.
func OwnerSelector(hubID string) string {
	return ManagedSelector + "," + LabelOwner + "=" + LabelValue(hubID)
}

// WorkName is the deterministic name of a job's ManifestWork: a retried create can never
// make a second one.
func WorkName(jobID string) string { return "job-" + jobID }

// LabelValue makes s a valid label value (at most 63 characters of [A-Za-z0-9_.-], starting
// and ending alphanumeric); a UID or UUID passes unchanged.
func LabelValue(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			b.WriteRune(r)
		default:
			b.WriteRune('-')
		}
	}
	v := b.String()
	if len(v) > 63 {
		v = v[:63]
	}
	return strings.Trim(v, "-_.")
}

// Feedback names the status-feedback values read for each workload.
const (
	FeedbackReplicas          = "replicas"
	FeedbackReadyReplicas     = "readyReplicas"
	FeedbackAvailableReplicas = "availableReplicas"
)

// WorkloadKinds are the kinds whose replica counts the work agent reports back.
var WorkloadKinds = map[string]string{"Deployment": "apps", "StatefulSet": "apps"}

// FeedbackRule asks the work agent for a workload's replica counts (JSON paths work for
// Deployments and StatefulSets alike).
func FeedbackRule(group, resource, namespace, name string) workv1.ManifestConfigOption {
	return workv1.ManifestConfigOption{
		ResourceIdentifier: workv1.ResourceIdentifier{Group: group, Resource: resource, Namespace: namespace, Name: name},
		FeedbackRules: []workv1.FeedbackRule{{
			Type: workv1.JSONPathsType,
			JsonPaths: []workv1.JsonPath{
				{Name: FeedbackReplicas, Path: ".status.replicas"},
				{Name: FeedbackReadyReplicas, Path: ".status.readyReplicas"},
				{Name: FeedbackAvailableReplicas, Path: ".status.availableReplicas"},
			},
		}},
	}
}
