package jobs

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/go-cmp/cmp"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
)

func componentsOf(app *Application) map[string][]string {
	out := map[string][]string{}
	for _, c := range app.Components {
		for _, o := range c.Objects {
			out[c.Name] = append(out[c.Name], o.GetKind()+"/"+o.GetName())
		}
	}
	return out
}

func TestParseExampleApplication(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "config", "examples", "guestbook.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	app, ferr := ParseDescriptor(raw)
	if ferr != nil {
		t.Fatalf("parse: %v", ferr)
	}
	if app.Name != "guestbook" || len(app.Components) != 2 {
		t.Fatalf("app %q with %d components", app.Name, len(app.Components))
	}
	want := map[string][]string{
		"frontend": {"Deployment/frontend", "Service/frontend-svc", "ConfigMap/frontend-config"},
		"backend":  {"Deployment/backend", "Service/backend-svc", "ConfigMap/backend-config"},
	}
	if diff := cmp.Diff(want, componentsOf(app)); diff != "" {
		t.Errorf("components (-want +got):\n%s", diff)
	}
	if got := app.Components[1].Targets; got == nil || got.ClusterName != "cluster2" || got.Orchestrator != "ocm" {
		t.Errorf("backend targets = %+v", got)
	}
	m, err := app.Components[0].Manifests()
	if err != nil || len(m) != 3 || !strings.Contains(m[0].YamlString, "kind: Deployment") {
		t.Errorf("manifests: %v %+v", err, m)
	}
}

func TestParseKeepsAnyKind(t *testing.T) {
	app, ferr := ParseDescriptor([]byte(`
name: crd-app
components:
  - name: c
    manifests: [{name: widget}, {name: route}]
manifests:
  - apiVersion: example.com/v1alpha1
    kind: Widget
    metadata: {name: widget}
    spec: {size: 3}
  - apiVersion: networking.k8s.io/v1
    kind: Ingress
    metadata: {name: route}
`))
	if ferr != nil {
		t.Fatal(ferr)
	}
	if diff := cmp.Diff(map[string][]string{"c": {"Widget/widget", "Ingress/route"}}, componentsOf(app)); diff != "" {
		t.Error(diff)
	}
}

func TestParsePlainMultiDocument(t *testing.T) {
	app, ferr := ParseDescriptor([]byte(`
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: shop, labels: {app.kubernetes.io/part-of: shop}}
spec:
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers: [{name: api, image: api:1, envFrom: [{configMapRef: {name: api-config}}]}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: api-config, namespace: shop}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec: {selector: {app: api}, ports: [{port: 80}]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: shop}
spec:
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: db, image: postgres:16}]}
---
apiVersion: v1
kind: Secret
metadata: {name: unrelated, namespace: shop}
`))
	if ferr != nil {
		t.Fatal(ferr)
	}
	if app.Name != "shop" || app.Namespace != "shop" {
		t.Errorf("name %q namespace %q", app.Name, app.Namespace)
	}
	want := map[string][]string{
		"api":         {"Deployment/api", "ConfigMap/api-config", "Service/api"},
		"db":          {"StatefulSet/db"},
		"shop-shared": {"Secret/unrelated"},
	}
	if diff := cmp.Diff(want, componentsOf(app)); diff != "" {
		t.Errorf("components (-want +got):\n%s", diff)
	}
}

func TestParseReportsEveryProblem(t *testing.T) {
	tests := map[string]struct {
		in   string
		want []string // substrings of the error, each must appear
	}{
		"not YAML": {in: "name: [unclosed", want: []string{"does not parse"}},
		"empty":    {in: "  \n", want: []string{"empty"}},
		"scalar":   {in: "just a string", want: []string{"not a mapping"}},
		"ICOS descriptor with several mistakes": {in: `
components:
  - name: web
    manifests: [{name: web}, {name: nope}]
  - name: web
    type: helm
    manifests: [{name: web}]
    targets: {cluster_name: c1, orchestrator: kubernetes}
  - name: Bad_Name
manifests:
  - apiVersion: apps/v1
    kind: Deployment
    metadata: {name: web}
  - kind: Service
    metadata: {name: svc}
`, want: []string{
			"missing field(s)", "apiVersion, name",
			`components[0].manifests[1].name`, `manifest "nope"`,
			`duplicate component name "web"`, "components[1].name",
			"components[1].type", "components[1].targets.orchestrator",
			"components[2].name", "components[2].manifests",
			"manifests[1].apiVersion",
		}},
		"duplicate manifest names": {in: `
name: app
components: [{name: a, manifests: [{name: x}]}]
manifests:
  - {apiVersion: v1, kind: ConfigMap, metadata: {name: x}}
  - {apiVersion: v1, kind: Secret, metadata: {name: x}}
`, want: []string{`manifest name "x" is used by more than one manifest`, "manifests[1].metadata.name"}},
		"a cluster named twice": {in: `
name: app
components: [{name: a, manifests: [{name: x}], targets: [{cluster_name: a, orchestrator: ocm}, {cluster_name: a, orchestrator: ocm}]}]
manifests: [{apiVersion: v1, kind: ConfigMap, metadata: {name: x}}]
`, want: []string{"cluster a is named twice", "components[0].targets[1].cluster_name"}},
		"plain YAML without kind": {in: "apiVersion: v1\nmetadata: {name: a}\n---\nkind: ConfigMap\nmetadata: {}\n", want: []string{
			"documents[0].kind", "documents[1].apiVersion", "documents[1].metadata.name",
		}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			app, ferr := ParseDescriptor([]byte(tc.in))
			if ferr == nil {
				t.Fatalf("parsed: %+v", app)
			}
			msg := ferr.Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error does not mention %q:\n%s", w, msg)
				}
			}
		})
	}
}

func TestParseTargetsAsListOfOne(t *testing.T) {
	app, ferr := ParseDescriptor([]byte(`
name: app
components: [{name: a, manifests: [{name: x}], targets: [{cluster_name: cluster1, orchestrator: ocm}]}]
manifests: [{apiVersion: v1, kind: ConfigMap, metadata: {name: x}}]
`))
	if ferr != nil {
		t.Fatal(ferr)
	}
	if tg := app.Components[0].Targets; tg == nil || tg.ClusterName != "cluster1" {
		t.Errorf("targets %+v", tg)
	}
}

func TestParseTargetsAsList(t *testing.T) {
	app, ferr := ParseDescriptor([]byte(`
name: app
components: [{name: a, manifests: [{name: x}], targets: [{cluster_name: cluster1, orchestrator: ocm}, {cluster_name: cluster2, orchestrator: ocm}]}]
manifests: [{apiVersion: v1, kind: ConfigMap, metadata: {name: x}}]
`))
	if ferr != nil {
		t.Fatal(ferr)
	}
	var got []string
	for _, tg := range app.Components[0].AllTargets() {
		got = append(got, tg.ClusterName)
	}
	if strings.Join(got, ",") != "cluster1,cluster2" {
		t.Errorf("targets %v, want cluster1,cluster2", got)
	}
}

func TestParseJSONDescriptor(t *testing.T) {
	app, ferr := ParseDescriptor([]byte(`{"name":"app","components":[{"name":"a","manifests":[{"name":"x"}]}],
		"manifests":[{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}]}`))
	if ferr != nil {
		t.Fatal(ferr)
	}
	if app.Components[0].Targets != nil {
		t.Errorf("no targets expected, got %+v", app.Components[0].Targets)
	}
}

// FuzzParseDescriptor: any input either parses into components that each have objects, or is
// refused with a message; it never panics.
func FuzzParseDescriptor(f *testing.F) {
	seeds := []string{
		"name: a\ncomponents: [{name: c, manifests: [{name: x}]}]\nmanifests: [{apiVersion: v1, kind: ConfigMap, metadata: {name: x}}]",
		"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {template: {metadata: {labels: {a: b}}}}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {selector: {a: b}}",
		"components: [{name: c, targets: [1, 2]}]",
		"components: {}",
		"components: [{name: c, manifests: [{name: x}], targets: {cluster_name: 3}}]\nmanifests: [{metadata: []}]",
		"---\n---\n",
		`{"components": null}`,
	}
	if raw, err := os.ReadFile(filepath.Join("..", "..", "config", "examples", "guestbook.yaml")); err == nil {
		seeds = append(seeds, string(raw))
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		app, ferr := ParseDescriptor(data)
		if ferr != nil {
			if ferr.Error() == "" {
				t.Fatal("refusal without a message")
			}
			return
		}
		if app.Name == "" || len(app.Components) == 0 {
			t.Fatalf("accepted without a name or components: %+v", app)
		}
		for _, c := range app.Components {
			if c.Name == "" || len(c.Objects) == 0 {
				t.Fatalf("component without a name or objects: %+v", c)
			}
			if _, err := c.Manifests(); err != nil {
				t.Fatalf("manifests do not serialize: %v", err)
			}
		}
	})
}

// TestLimits: a small descriptor whose components all reference one big manifest is refused
// before a single copy is made; so are too many components and too many manifests.
func TestLimits(t *testing.T) {
	shared := `  - apiVersion: v1
    kind: ConfigMap
    metadata: {name: big}
    data: {blob: "` + strings.Repeat("x", 100_000) + `"}
`
	descriptor := func(components, refs int) []byte {
		var b strings.Builder
		b.WriteString("name: bomb\ncomponents:\n")
		for i := 0; i < components; i++ {
			fmt.Fprintf(&b, "  - name: c%d\n    manifests:\n", i)
			for r := 0; r < refs; r++ {
				b.WriteString("      - name: big\n")
			}
		}
		b.WriteString("manifests:\n" + shared)
		return []byte(b.String())
	}
	for name, tc := range map[string]struct {
		data []byte
		want string
	}{
		"expanded bytes": {descriptor(90, 1), "MAX_EXPANDED_BYTES"},
		"components":     {descriptor(2000, 1), "MAX_COMPONENTS"},
		"manifests":      {descriptor(1, 101), "MAX_COMPONENT_MANIFESTS"},
	} {
		t.Run(name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			app, ferr := ParseDescriptor(tc.data)
			runtime.ReadMemStats(&after)
			if app != nil || ferr == nil || !strings.Contains(ferr.Error(), tc.want) {
				t.Fatalf("parsed %v, error %v; want a refusal naming %s", app != nil, ferr, tc.want)
			}
			// The descriptor is parsed once; nothing is copied per reference.
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 40*uint64(len(tc.data))+(8<<20) {
				t.Errorf("refusing a %d-byte descriptor allocated %d bytes", len(tc.data), alloc)
			}
		})
	}
	if app, ferr := (Limits{}).Parse(descriptor(3, 2)); ferr != nil || len(app.Components) != 3 {
		t.Errorf("no limits: %v", ferr)
	}
}

// TestParseShellLayouts: the three descriptor layouts the icos-shell has posted (A: whole
// objects referenced by metadata.name; B: {name, manifest}; C: a header document, then one
// document per object) become the same application.
func TestParseShellLayouts(t *testing.T) {
	var first *Application
	for _, layout := range []string{"a", "b", "c"} {
		raw, err := os.ReadFile(filepath.Join("..", "..", "tests", "integration", "testdata", "shell-layout-"+layout+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		app, ferr := ParseDescriptor(raw)
		if ferr != nil {
			t.Fatalf("layout %s: %v", layout, ferr)
		}
		if app.Name != "hello" || len(app.Components) != 1 || app.Components[0].Targets == nil || app.Components[0].Targets.ClusterName != "cluster1" {
			t.Fatalf("layout %s: %+v", layout, app)
		}
		if diff := cmp.Diff(map[string][]string{"web": {"Deployment/web", "ConfigMap/web-config"}}, componentsOf(app)); diff != "" {
			t.Errorf("layout %s (-want +got):\n%s", layout, diff)
		}
		if first == nil {
			first = app
			continue
		}
		a, _ := first.Components[0].Manifests()
		b, _ := app.Components[0].Manifests()
		if diff := cmp.Diff(a, b); diff != "" {
			t.Errorf("layout %s manifests differ from layout a:\n%s", layout, diff)
		}
	}
	// Layout B's errors point into the wrapped object.
	_, ferr := ParseDescriptor([]byte("name: x\ncomponents: [{name: c, manifests: [{name: m}]}]\nmanifests: [{name: m, manifest: {kind: ConfigMap, metadata: {name: m}}}]\n"))
	if ferr == nil || !strings.Contains(ferr.Error(), "manifests[0].manifest.apiVersion") {
		t.Errorf("layout B error: %v", ferr)
	}
}

// TestStrictRollout: the REST update's rollout field and the update event's rollout extension
// are read strictly: a wrong type or an unknown field is a 422 naming its path.
func TestStrictRollout(t *testing.T) {
	for name, tc := range map[string]struct {
		raw, want string
		status    int
	}{
		"absent":        {raw: "", status: 0},
		"canary":        {raw: `{"strategy":"canary","canary":"cluster1","minSuccessTime":"5s"}`, status: 0},
		"percentage":    {raw: `{"strategy":"progressive","maxConcurrency":"50%"}`, status: 0},
		"wrong type":    {raw: `{"strategy":"canary","rollbackOnFailure":"yes"}`, want: "rollout.rollbackOnFailure", status: 422},
		"unknown field": {raw: `{"strategy":"canary","canaries":["cluster1"]}`, want: "rollout.canaries", status: 422},
		"not an object": {raw: `[1]`, want: "rollout", status: 422},
	} {
		t.Run(name, func(t *testing.T) {
			rs, fl := strictRollout([]byte(tc.raw))
			switch {
			case tc.status == 0 && fl != nil:
				t.Fatalf("refused: %v", fl)
			case tc.status == 0 && tc.raw != "" && rs == nil:
				t.Fatal("no strategy read")
			case tc.status != 0 && (fl == nil || fl.Status != tc.status || !strings.Contains(fl.Message, tc.want)):
				t.Fatalf("got %+v, want %d naming %s", fl, tc.status, tc.want)
			}
		})
	}
}

// TestRolloutExtension: the create and update events' rollout extension is read as the REST
// update's rollout field is: a bad one is a 422 naming its path.
func TestRolloutExtension(t *testing.T) {
	e := event.New()
	if rs, fl := rolloutOf(e); rs != nil || fl != nil {
		t.Fatalf("no extension: %+v %v", rs, fl)
	}
	e.SetExtension(ExtRollout, `{"strategy":"progressive","maxConcurrency":1,"minSuccessTime":"2s"}`)
	if rs, fl := rolloutOf(e); fl != nil || rs == nil || rs.Strategy != model.RolloutProgressive || rs.MaxConcurrency.IntValue() != 1 {
		t.Fatalf("a good extension: %+v %v", rs, fl)
	}
	e.SetExtension(ExtRollout, `{"strategy":"canary","canary":1}`)
	if _, fl := rolloutOf(e); fl == nil || fl.Status != 422 || !strings.Contains(fl.Message, "rollout.canary") {
		t.Fatalf("a bad extension: %v", fl)
	}
}
