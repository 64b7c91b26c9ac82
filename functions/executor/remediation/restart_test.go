package remediation

import (
	"errors"
	"testing"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
)

func TestRemediateRestart(t *testing.T) {
	const when = "2026-12-06T12:00:00Z"
	restartedAt := func(t *testing.T, y string) any {
		t.Helper()
		m := decode(t, y)
		ann, _, _ := field(m, "spec", "template", "metadata", "annotations")
		a, _ := ann.(map[string]any)
		return a[AnnotationRestartedAt]
	}
	tests := map[string]struct {
		in       []model.PlainManifest
		workload string
		at       string
		changed  []int // indexes whose template gets the annotation
		reason   string
	}{
		"every Deployment, StatefulSet and DaemonSet": {in: job(), at: when, changed: []int{iDeployment, iStatefulSet, iDaemonSet}},
		"one named workload":                          {in: job(), workload: "StatefulSet/db", at: when, changed: []int{iStatefulSet}},
		"no pod template is NoWorkload":               {in: manifests(namespaceYAML, serviceYAML, configMapYAML), at: when, reason: ReasonNoWorkload},
		"a custom Deployment is not restarted":        {in: manifests(configMapYAML, crdObjectYAML), at: when, reason: ReasonNoWorkload},
		"a named workload that is no Deployment":      {in: job(), workload: "ConfigMap/settings", at: when, reason: ReasonNoWorkload},
		"without a time nothing changes":              {in: job(), reason: ReasonInvalidManifest},
		"a template that is not an object": {in: manifests("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {template: [1]}\n"),
			at: when, reason: ReasonInvalidManifest},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			out, err := Remediate(tc.in, model.Remediation{Action: model.Restart, Workload: tc.workload, RestartedAt: tc.at}, DefaultOptions())
			if tc.reason != "" {
				var na *NotApplicableError
				if !errors.As(err, &na) || na.Reason != tc.reason || out != nil {
					t.Fatalf("got %v (%d manifests), want %s", err, len(out), tc.reason)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			changed := map[int]bool{}
			for _, i := range tc.changed {
				changed[i] = true
			}
			for i := range tc.in {
				switch {
				case changed[i]:
					if got := restartedAt(t, out[i].YamlString); got != tc.at {
						t.Errorf("manifest %d: restartedAt %v, want %s", i, got, tc.at)
					}
					if at(t, out[i].YamlString, "spec.template.metadata.labels.app") == nil {
						t.Errorf("manifest %d lost its template labels:\n%s", i, out[i].YamlString)
					}
				case out[i].YamlString != tc.in[i].YamlString:
					t.Errorf("manifest %d changed:\n%s", i, out[i].YamlString)
				}
			}
			// Restarting again with the same time changes nothing more.
			again, err := Remediate(out, model.Remediation{Action: model.Restart, Workload: tc.workload, RestartedAt: tc.at}, DefaultOptions())
			if err != nil {
				t.Fatal(err)
			}
			for i := range out {
				if again[i].YamlString != out[i].YamlString {
					t.Errorf("manifest %d changed by the same restart again", i)
				}
			}
		})
	}
}
