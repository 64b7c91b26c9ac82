package packaging

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// TestDevOverlayProvisionsTheDashboard: the dev overlay renders the Grafana dashboard as the
// ConfigMap Grafana's dashboard sidecar loads (label grafana_dashboard=1, a fixed name), with
// the JSON of k8s/overlays/dev/grafana as it is.
func TestDevOverlayProvisionsTheDashboard(t *testing.T) {
	want, err := os.ReadFile(filepath.Join(repoRoot(t), "k8s", "overlays", "dev", "grafana", "ocm-jobs-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, o := range decode(t, render(t, "overlays/dev")) {
		if o.GetKind() != "ConfigMap" || o.GetName() != "ocm-jobs-grafana-dashboard" {
			continue
		}
		found = true
		if o.GetNamespace() != "ocm-jobs" || o.GetLabels()["grafana_dashboard"] != "1" {
			t.Errorf("dashboard ConfigMap in namespace %q with labels %v; want ocm-jobs and grafana_dashboard=1", o.GetNamespace(), o.GetLabels())
		}
		data, _ := o.Object["data"].(map[string]any)
		got, _ := data["ocm-jobs-dashboard.json"].(string)
		if got != string(want) {
			t.Errorf("the ConfigMap's ocm-jobs-dashboard.json (%d bytes) is not the file (%d bytes)", len(got), len(want))
		}
		var doc map[string]any
		if err := json.Unmarshal([]byte(got), &doc); err != nil || doc["uid"] != "ocm-jobs" {
			t.Errorf("the provisioned dashboard is not the ocm-jobs dashboard: %v", err)
		}
	}
	if !found {
		t.Error("overlays/dev renders no ConfigMap ocm-jobs-grafana-dashboard")
	}
}
