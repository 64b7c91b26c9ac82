package remediation

import (
	"fmt"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
)

// AnnotationRestartedAt is the pod template annotation `kubectl rollout restart` sets: a new
// value makes the workload's controller replace every pod, and nothing else changes.
const AnnotationRestartedAt = "kubectl.kubernetes.io/restartedAt"

// restartable says which kinds a restart bumps: those whose controller rolls their pods when
// the template changes (a Job's or a bare Pod's template is immutable).
var restartable = map[[2]string]bool{
	{"apps", "Deployment"}: true, {"apps", "StatefulSet"}: true, {"apps", "DaemonSet"}: true,
	{"extensions", "Deployment"}: true, {"extensions", "DaemonSet"}: true,
}

// restart sets the restart annotation to r.RestartedAt on the pod template of every
// Deployment, StatefulSet and DaemonSet (or the one r.Workload names); a job without one is
// NoWorkload. A template that already carries this very value is left as it is.
func restart(objs []*object, r model.Remediation, _ Options) error {
	if r.RestartedAt == "" {
		return notApplicable(ReasonInvalidManifest, "a restart needs restarted_at")
	}
	ts, err := targets(objs, r.Workload, func(o *object) bool {
		return o.obj != nil && restartable[[2]string{o.group, o.kind}]
	}, "Deployment, StatefulSet or DaemonSet: nothing to restart")
	if err != nil {
		return err
	}
	for _, o := range ts {
		spec, err := childMap(o.obj, "spec")
		if err != nil {
			return invalidManifest(o, err)
		}
		tpl, err := childMap(spec, "template")
		if err != nil {
			return invalidManifest(o, fmt.Errorf("spec.%w", err))
		}
		md, err := childMap(tpl, "metadata")
		if err != nil {
			return invalidManifest(o, fmt.Errorf("spec.template.%w", err))
		}
		ann, err := childMap(md, "annotations")
		if err != nil {
			return invalidManifest(o, fmt.Errorf("spec.template.metadata.%w", err))
		}
		if ann[AnnotationRestartedAt] != r.RestartedAt {
			ann[AnnotationRestartedAt] = r.RestartedAt
			o.changed = true
		}
	}
	return nil
}
