package packaging

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/ocm-jobs/ocm-jobs/config"
	sharedconfig "github.com/ocm-jobs/ocm-jobs/shared/config"
)

// TestOverlaysApplyToRealAPIServer applies every object each overlay renders with
// --dry-run=server and strict field validation: the Knative and OCM CRD schemas and the
// built-in types all accept them.
func TestOverlaysApplyToRealAPIServer(t *testing.T) {
	ctx := context.Background()
	// A dry-run creates nothing, so the namespace the objects go to must exist for real.
	if err := env.Hub.EnsureNamespace(ctx, Namespace); err != nil {
		t.Fatal(err)
	}
	for _, overlay := range append(overlays(t), localOverlay) {
		t.Run(overlay, func(t *testing.T) {
			doc := render(t, "overlays/"+overlay)
			objs := decode(t, doc)
			out, err := kubectl(ctx, doc, "apply", "--dry-run=server", "--validate=strict", "-f", "-")
			if err != nil {
				t.Fatal(err)
			}
			applied := strings.Count(string(out), "(server dry run)")
			if applied != len(objs) {
				t.Errorf("%d objects rendered, %d accepted:\n%s", len(objs), applied, out)
			}
			t.Logf("%s: %d objects accepted by the API server", overlay, applied)
		})
	}
}

// TestBrokenManifestsAreRejected proves the dry-run check can fail: each case breaks one
// rendered object the way a careless edit would, and the API server must refuse it.
func TestBrokenManifestsAreRejected(t *testing.T) {
	ctx := context.Background()
	if err := env.Hub.EnsureNamespace(ctx, Namespace); err != nil {
		t.Fatal(err)
	}
	objs := decode(t, render(t, "overlays/dev"))
	cases := map[string]struct {
		kind, name string
		breakIt    func(o *unstructured.Unstructured) error
		want       string
	}{
		"trigger filter misspelt": {
			kind: "Trigger", name: "ocm-jobs-executor-job-created",
			breakIt: func(o *unstructured.Unstructured) error {
				attrs, _, _ := unstructured.NestedMap(o.Object, "spec", "filter", "attributes")
				unstructured.RemoveNestedField(o.Object, "spec", "filter", "attributes")
				return unstructured.SetNestedMap(o.Object, attrs, "spec", "filter", "attribute")
			},
			want: `unknown field "spec.filter.attribute"`,
		},
		"trigger retry not a number": {
			kind: "Trigger", name: "ocm-jobs-jobs-jobgroup-create",
			breakIt: func(o *unstructured.Unstructured) error {
				return unstructured.SetNestedField(o.Object, "five", "spec", "delivery", "retry")
			},
			want: "spec.delivery.retry",
		},
		"service probe port of the wrong type": {
			kind: "Service", name: "ocm-jobs-executor",
			breakIt: func(o *unstructured.Unstructured) error {
				return setContainerField(o, true, "readinessProbe", "httpGet", "port")
			},
			want: "readinessProbe.httpGet.port",
		},
		"service concurrency not a number": {
			kind: "Service", name: "ocm-jobs-jobs",
			breakIt: func(o *unstructured.Unstructured) error {
				return unstructured.SetNestedField(o.Object, "lots", "spec", "template", "spec", "containerConcurrency")
			},
			want: "containerConcurrency",
		},
		"pingsource with an unknown field": {
			kind: "PingSource", name: "ocm-jobs-cron",
			breakIt: func(o *unstructured.Unstructured) error {
				return unstructured.SetNestedField(o.Object, "*/1 * * * *", "spec", "cron")
			},
			want: `unknown field "spec.cron"`,
		},
		"cluster role with a bad rule": {
			kind: "ClusterRole", name: "ocm-jobs-executor",
			breakIt: func(o *unstructured.Unstructured) error {
				return unstructured.SetNestedField(o.Object, "manifestworks", "rules")
			},
			want: "rules",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var obj *unstructured.Unstructured
			for _, o := range objs {
				if o.GetKind() == tc.kind && o.GetName() == tc.name {
					obj = o.DeepCopy()
				}
			}
			if obj == nil {
				t.Fatalf("%s %s is not rendered by the dev overlay", tc.kind, tc.name)
			}
			// The intact object is accepted, so the refusal below is the breakage's doing.
			good, err := yaml.Marshal(obj.Object)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := kubectl(ctx, good, "apply", "--dry-run=server", "--validate=strict", "-f", "-"); err != nil {
				t.Fatalf("the intact %s is refused: %v", tc.kind, err)
			}
			if err := tc.breakIt(obj); err != nil {
				t.Fatal(err)
			}
			bad, err := yaml.Marshal(obj.Object)
			if err != nil {
				t.Fatal(err)
			}
			_, err = kubectl(ctx, bad, "apply", "--dry-run=server", "--validate=strict", "-f", "-")
			if err == nil {
				t.Fatalf("the API server accepted the broken %s:\n%s", tc.kind, bad)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("refused, but not for %q: %v", tc.want, err)
			}
		})
	}
}

// setContainerField sets a field of the first container of a Knative Service's template.
func setContainerField(o *unstructured.Unstructured, value any, path ...string) error {
	containers, _, err := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
	if err != nil || len(containers) == 0 {
		return fmt.Errorf("no containers: %v", err)
	}
	c := containers[0].(map[string]any)
	if err := unstructured.SetNestedField(c, value, path...); err != nil {
		return err
	}
	return unstructured.SetNestedSlice(o.Object, containers, "spec", "template", "spec", "containers")
}

// TestFunctionServicesAreWired checks what the schemas cannot: each overlay runs every
// function as its own Service with the right FUNCTION, account, probes and scaling, binds
// K_SINK to the broker, references secrets instead of inlining them, and sets no variable
// that nothing reads.
func TestFunctionServicesAreWired(t *testing.T) {
	vars, err := config.Variables()
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, v := range append(vars, config.External...) {
		known[v.Name] = true
	}
	for _, overlay := range overlays(t) {
		t.Run(overlay, func(t *testing.T) {
			objs := decode(t, render(t, "overlays/"+overlay))
			services := ofKind(objs, "Service")
			bindings := ofKind(objs, "SinkBinding")
			for _, fn := range sharedconfig.Functions {
				name := "ocm-jobs-" + fn
				svc, ok := services[name]
				if !ok || svc.GetAPIVersion() != "serving.knative.dev/v1" {
					t.Errorf("Knative Service %s is missing", name)
					continue
				}
				checkFunctionService(t, fn, svc, known)
				if !boundToBroker(svc, bindings) {
					t.Errorf("%s: no SinkBinding gives it K_SINK = the broker ocm-jobs", name)
				}
				// Events are not public, and they are authenticated (sender identity).
				if svc.GetLabels()["networking.knative.dev/visibility"] != "cluster-local" {
					t.Errorf("%s: not cluster-local (label networking.knative.dev/visibility)", name)
				}
				env := envOf(svc)
				if env["AUTH_CLOUDEVENTS"] == "false" || env["EVENTS_OIDC_ISSUER"] == "" || env["EVENTS_AUDIENCES"] != name {
					t.Errorf("%s: event authentication: AUTH_CLOUDEVENTS=%q EVENTS_OIDC_ISSUER=%q EVENTS_AUDIENCES=%q, want on, an issuer, audience %s",
						name, env["AUTH_CLOUDEVENTS"], env["EVENTS_OIDC_ISSUER"], env["EVENTS_AUDIENCES"], name)
				}
			}
			for _, tr := range ofKind(objs, "Trigger") {
				sub, _, _ := unstructured.NestedString(tr.Object, "spec", "subscriber", "ref", "name")
				if aud, _, _ := unstructured.NestedString(tr.Object, "spec", "subscriber", "audience"); strings.HasPrefix(sub, "ocm-jobs-") && sub != "ocm-jobs-deadletter" && aud != sub {
					t.Errorf("Trigger %s: subscriber audience %q, want %q (the audience its function accepts)", tr.GetName(), aud, sub)
				}
			}
			// The public entry serves the REST API only.
			api, ok := services["ocm-jobs-api"]
			if !ok {
				t.Error("Knative Service ocm-jobs-api (the public REST entry) is missing")
			} else if env := envOf(api); api.GetLabels()["networking.knative.dev/visibility"] == "cluster-local" || env["REST_ONLY"] != "true" || env["FUNCTION"] != "jobs,incompliance" {
				t.Errorf("ocm-jobs-api: visibility %q, REST_ONLY=%q, FUNCTION=%q; want public, REST only, jobs and incompliance",
					api.GetLabels()["networking.knative.dev/visibility"], env["REST_ONLY"], env["FUNCTION"])
			}
			exec := annotation(services["ocm-jobs-executor"], "autoscaling.knative.dev/max-scale")
			jobs := annotation(services["ocm-jobs-jobs"], "autoscaling.knative.dev/max-scale")
			if atoi(exec) <= 0 || atoi(exec) >= atoi(jobs) {
				t.Errorf("executor max-scale %s should be bounded and below the intake's %s", exec, jobs)
			}
			if cc, _, _ := unstructured.NestedInt64(services["ocm-jobs-executor"].Object, "spec", "template", "spec", "containerConcurrency"); cc <= 0 || cc > 10 {
				t.Errorf("executor containerConcurrency %d: want bounded (1..10)", cc)
			}
			for _, s := range ofKind(objs, "Secret") {
				if overlay != "dev" || s.GetName() != "ocm-jobs-redis" {
					t.Errorf("overlay %s inlines Secret %s: secrets are created by the operator and referenced", overlay, s.GetName())
				}
			}
			switch overlay {
			case "dev":
				checkDevRedis(t, objs)
			case "production":
				if len(ofKind(objs, "StatefulSet")) != 0 {
					t.Errorf("production runs a StatefulSet: its Redis is external")
				}
				for _, name := range []string{"ocm-jobs-jobs", "ocm-jobs-incompliance", "ocm-jobs-api"} {
					if refs := configRefs(services[name]); refs["JWT_ISSUER"] != "ocm-jobs-auth" || refs["JWT_AUDIENCE"] != "ocm-jobs-auth" {
						t.Errorf("%s: production must check the REST tokens' issuer and audience (JWT_ISSUER, JWT_AUDIENCE from ConfigMap ocm-jobs-auth): %v", name, refs)
					}
				}
			}
		})
	}
}

// configRefs are the ConfigMaps a Service's env variables come from, by variable.
func configRefs(svc *unstructured.Unstructured) map[string]string {
	out := map[string]string{}
	containers, _, _ := unstructured.NestedSlice(svc.Object, "spec", "template", "spec", "containers")
	for _, c := range containers {
		envs, _, _ := unstructured.NestedSlice(c.(map[string]any), "env")
		for _, e := range envs {
			e := e.(map[string]any)
			n, _ := e["name"].(string)
			if ref, _, _ := unstructured.NestedString(e, "valueFrom", "configMapKeyRef", "name"); ref != "" {
				out[n] = ref
			}
		}
	}
	return out
}

// envOf are the literal env values of a Service's container.
func envOf(svc *unstructured.Unstructured) map[string]string {
	out := map[string]string{}
	containers, _, _ := unstructured.NestedSlice(svc.Object, "spec", "template", "spec", "containers")
	for _, c := range containers {
		envs, _, _ := unstructured.NestedSlice(c.(map[string]any), "env")
		for _, e := range envs {
			e := e.(map[string]any)
			n, _ := e["name"].(string)
			v, _ := e["value"].(string)
			out[n] = v
		}
	}
	return out
}

func checkFunctionService(t *testing.T, fn string, svc *unstructured.Unstructured, known map[string]bool) {
	t.Helper()
	name := svc.GetName()
	spec, _, _ := unstructured.NestedMap(svc.Object, "spec", "template", "spec")
	if sa, _ := spec["serviceAccountName"].(string); sa != name {
		t.Errorf("%s: serviceAccountName %q, want %q", name, sa, name)
	}
	if cc, ok := spec["containerConcurrency"].(int64); !ok || cc <= 0 {
		t.Errorf("%s: containerConcurrency %v, want a bound", name, spec["containerConcurrency"])
	}
	for _, a := range []string{"autoscaling.knative.dev/min-scale", "autoscaling.knative.dev/max-scale"} {
		if annotation(svc, a) == "" {
			t.Errorf("%s: annotation %s is missing", name, a)
		}
	}
	containers, _, _ := unstructured.NestedSlice(svc.Object, "spec", "template", "spec", "containers")
	if len(containers) != 1 {
		t.Fatalf("%s: %d containers, want 1", name, len(containers))
	}
	c := containers[0].(map[string]any)
	for probe, path := range map[string]string{"readinessProbe": "/health/readiness", "livenessProbe": "/health/liveness"} {
		if got, _, _ := unstructured.NestedString(c, probe, "httpGet", "path"); got != path {
			t.Errorf("%s: %s path %q, want %q (where func's deployer and func-go put it)", name, probe, got, path)
		}
	}
	if _, ok, _ := unstructured.NestedMap(c, "resources", "requests"); !ok {
		t.Errorf("%s: no resource requests", name)
	}
	envs, _, _ := unstructured.NestedSlice(c, "env")
	values := map[string]string{}
	for _, e := range envs {
		e := e.(map[string]any)
		n, _ := e["name"].(string)
		if !known[n] {
			t.Errorf("%s: sets %s, which no function reads (not in config/environment.md)", name, n)
		}
		v, hasValue := e["value"].(string)
		values[n] = v
		if sensitive(n) && hasValue {
			t.Errorf("%s: %s is inlined; reference a Secret with valueFrom.secretKeyRef", name, n)
		}
		if sensitive(n) {
			if ref, _, _ := unstructured.NestedString(e, "valueFrom", "secretKeyRef", "name"); ref == "" {
				t.Errorf("%s: %s does not come from a Secret", name, n)
			}
		}
	}
	if values["FUNCTION"] != fn {
		t.Errorf("%s: FUNCTION=%q, want %q", name, values["FUNCTION"], fn)
	}
	if _, ok := values["REDIS_URL"]; !ok {
		t.Errorf("%s: REDIS_URL is not set", name)
	}
	if !strings.HasPrefix(values["LISTEN_ADDRESS"], "0.0.0.0:") {
		t.Errorf("%s: LISTEN_ADDRESS=%q: func-go listens on loopback unless told otherwise, and the kubelet's probes would fail", name, values["LISTEN_ADDRESS"])
	}
}

// sensitive names the variables that carry credentials or a URL that may embed a password.
func sensitive(name string) bool {
	return name == "REDIS_URL" || strings.Contains(name, "KEY") || strings.Contains(name, "SECRET") || strings.Contains(name, "PASSWORD") || strings.Contains(name, "TOKEN")
}

func boundToBroker(svc *unstructured.Unstructured, bindings map[string]*unstructured.Unstructured) bool {
	for _, b := range bindings {
		kind, _, _ := unstructured.NestedString(b.Object, "spec", "subject", "kind")
		api, _, _ := unstructured.NestedString(b.Object, "spec", "subject", "apiVersion")
		sinkKind, _, _ := unstructured.NestedString(b.Object, "spec", "sink", "ref", "kind")
		sinkName, _, _ := unstructured.NestedString(b.Object, "spec", "sink", "ref", "name")
		if kind != "Service" || api != "serving.knative.dev/v1" || sinkKind != "Broker" || sinkName != "ocm-jobs" {
			continue
		}
		if n, _, _ := unstructured.NestedString(b.Object, "spec", "subject", "name"); n == svc.GetName() {
			return true
		}
		sel, ok, _ := unstructured.NestedStringMap(b.Object, "spec", "subject", "selector", "matchLabels")
		if !ok || len(sel) == 0 {
			continue
		}
		labels := svc.GetLabels()
		match := true
		for k, v := range sel {
			if labels[k] != v {
				match = false
			}
		}
		if match {
			return true
		}
	}
	return false
}

func checkDevRedis(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	sts, ok := ofKind(objs, "StatefulSet")["ocm-jobs-redis"]
	if !ok {
		t.Fatal("dev: StatefulSet ocm-jobs-redis is missing")
	}
	containers, _, _ := unstructured.NestedSlice(sts.Object, "spec", "template", "spec", "containers")
	args, _, _ := unstructured.NestedStringSlice(containers[0].(map[string]any), "args")
	if !strings.Contains(strings.Join(args, " "), "--appendonly yes") {
		t.Errorf("dev Redis args %v: AOF persistence is off", args)
	}
	claims, _, _ := unstructured.NestedSlice(sts.Object, "spec", "volumeClaimTemplates")
	if len(claims) == 0 {
		t.Errorf("dev Redis has no PVC")
	}
	secret, ok := ofKind(objs, "Secret")["ocm-jobs-redis"]
	if !ok {
		t.Fatal("dev: Secret ocm-jobs-redis (REDIS_URL) is missing")
	}
	url, _, _ := unstructured.NestedString(secret.Object, "stringData", "url")
	if url == "" {
		data, _, _ := unstructured.NestedString(secret.Object, "data", "url")
		url = data
	}
	if url == "" {
		t.Errorf("dev: Secret ocm-jobs-redis has no url")
	}
}

func annotation(o *unstructured.Unstructured, key string) string {
	if o == nil {
		return ""
	}
	a, _, _ := unstructured.NestedStringMap(o.Object, "spec", "template", "metadata", "annotations")
	return a[key]
}

// atoi is -1 for anything but a number.
func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return -1
	}
	return n
}
