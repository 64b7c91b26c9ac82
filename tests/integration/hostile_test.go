package integration

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// hostile is one request that must be refused with a 4xx and a message, writing nothing.
type hostile struct {
	name string
	// REST: method and path; CloudEvents: typ (and headers) posted to /.
	method, path string
	typ          string
	headers      map[string]string
	body         string
	want         int // 0: any 4xx
}

func nest(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }

// descriptorWith is a one-component descriptor whose single manifest is m.
func descriptorWith(m string) string {
	return "name: hostile\ncomponents:\n  - name: c\n    manifests: [{name: x}]\n    targets: {cluster_name: cluster1, orchestrator: ocm}\nmanifests:\n  - " +
		strings.ReplaceAll(strings.TrimSpace(m), "\n", "\n    ") + "\n"
}

func billionLaughs() string {
	var b strings.Builder
	b.WriteString("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n")
	prev := "a"
	for i := 0; i < 9; i++ {
		name := fmt.Sprintf("l%d", i)
		fmt.Fprintf(&b, "%s: &%s [*%s,*%s,*%s,*%s,*%s,*%s,*%s,*%s,*%s]\n", name, name, prev, prev, prev, prev, prev, prev, prev, prev, prev)
		prev = name
	}
	return b.String()
}

func manyComponentsRefs(n int) string {
	var b strings.Builder
	b.WriteString("name: wide\ncomponents:\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "  - {name: c%d, manifests: [{name: x}]}\n", i)
	}
	b.WriteString("manifests:\n  - {apiVersion: v1, kind: ConfigMap, metadata: {name: x}}\n")
	return b.String()
}

func manyRefs(n int) string {
	var b strings.Builder
	b.WriteString("name: deep\ncomponents:\n  - name: c\n    manifests:\n")
	for i := 0; i < n; i++ {
		b.WriteString("      - {name: x}\n")
	}
	b.WriteString("manifests:\n  - {apiVersion: v1, kind: ConfigMap, metadata: {name: x}}\n")
	return b.String()
}

// TestHostileInput: a table of hostile and malformed requests, over REST and CloudEvents, each
// answered with a 4xx and a message saying what is wrong — never a 5xx — and afterwards nothing
// is written: the Redis keys of the install (but the idempotency memos, which remember those
// very answers) and the hub's ManifestWorks are what they were.
func TestHostileInput(t *testing.T) {
	f := startFunctions(t, nil)
	rdb := redisClient(t)
	prefix := os.Getenv("STORE_PREFIX") // startFunctions gives the install its own
	ctx := context.Background()
	big := strings.Repeat("x", 2<<20)
	cases := []hostile{
		// Descriptors (POST /jobmanager/groups).
		{name: "empty body", method: http.MethodPost, path: "/jobmanager/groups", body: ""},
		{name: "binary garbage", method: http.MethodPost, path: "/jobmanager/groups", body: "\x00\x01\x02\xff\xfe"},
		{name: "a YAML list", method: http.MethodPost, path: "/jobmanager/groups", body: "- a\n- b\n"},
		{name: "deeply nested", method: http.MethodPost, path: "/jobmanager/groups", body: "name: x\ncomponents: " + nest(20000)},
		{name: "alias bomb", method: http.MethodPost, path: "/jobmanager/groups", body: billionLaughs()},
		{name: "too large", method: http.MethodPost, path: "/jobmanager/groups", body: "name: x\ndescription: " + big, want: http.StatusRequestEntityTooLarge},
		{name: "2,000 components", method: http.MethodPost, path: "/jobmanager/groups", body: manyComponentsRefs(2000)},
		{name: "a component of 500 manifests", method: http.MethodPost, path: "/jobmanager/groups", body: manyRefs(500)},
		{name: "expands past the byte limit", method: http.MethodPost, path: "/jobmanager/groups",
			body: strings.Replace(manyComponentsRefs(90), "metadata: {name: x}}", "metadata: {name: x}, data: {b: "+strings.Repeat("y", 100000)+"}}", 1)},
		{name: "component name with a control character", method: http.MethodPost, path: "/jobmanager/groups",
			body: strings.Replace(descriptorWith("{apiVersion: v1, kind: ConfigMap, metadata: {name: x}}"), "name: c\n", "name: \"c\\u0007\"\n", 1)},
		{name: "component name in unicode", method: http.MethodPost, path: "/jobmanager/groups",
			body: strings.Replace(descriptorWith("{apiVersion: v1, kind: ConfigMap, metadata: {name: x}}"), "name: c\n", "name: cömponent\n", 1)},
		{name: "component name injecting a label", method: http.MethodPost, path: "/jobmanager/groups",
			body: strings.Replace(descriptorWith("{apiVersion: v1, kind: ConfigMap, metadata: {name: x}}"), "name: c\n", "name: \"a,app.kubernetes.io/managed-by=x\"\n", 1)},
		{name: "component name too long", method: http.MethodPost, path: "/jobmanager/groups",
			body: strings.Replace(descriptorWith("{apiVersion: v1, kind: ConfigMap, metadata: {name: x}}"), "name: c\n", "name: "+strings.Repeat("c", 64)+"\n", 1)},
		{name: "duplicate components", method: http.MethodPost, path: "/jobmanager/groups",
			body: "name: dup\ncomponents:\n  - {name: c, manifests: [{name: x}]}\n  - {name: c, manifests: [{name: x}]}\nmanifests:\n  - {apiVersion: v1, kind: ConfigMap, metadata: {name: x}}\n"},
		{name: "application name in upper case", method: http.MethodPost, path: "/jobmanager/groups",
			body: strings.Replace(descriptorWith("{apiVersion: v1, kind: ConfigMap, metadata: {name: x}}"), "name: hostile", "name: Hostile", 1)},
		{name: "into kube-system", method: http.MethodPost, path: "/jobmanager/groups",
			body: descriptorWith("{apiVersion: v1, kind: Secret, metadata: {name: x, namespace: kube-system}}")},
		{name: "into another application's namespace", method: http.MethodPost, path: "/jobmanager/groups",
			body: descriptorWith("{apiVersion: v1, kind: ConfigMap, metadata: {name: x, namespace: bank}}")},
		{name: "the application namespace set to kube-system", method: http.MethodPost, path: "/jobmanager/groups",
			body: "namespace: kube-system\n" + descriptorWith("{apiVersion: v1, kind: ConfigMap, metadata: {name: x}}")},
		{name: "a ClusterRoleBinding to cluster-admin", method: http.MethodPost, path: "/jobmanager/groups",
			body: descriptorWith("{apiVersion: rbac.authorization.k8s.io/v1, kind: ClusterRoleBinding, metadata: {name: x}, roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}, subjects: [{kind: User, name: mallory}]}")},
		{name: "an admission webhook", method: http.MethodPost, path: "/jobmanager/groups",
			body: descriptorWith("{apiVersion: admissionregistration.k8s.io/v1, kind: MutatingWebhookConfiguration, metadata: {name: x}}")},
		{name: "a CRD", method: http.MethodPost, path: "/jobmanager/groups",
			body: descriptorWith("{apiVersion: apiextensions.k8s.io/v1, kind: CustomResourceDefinition, metadata: {name: x.example.com}}")},
		{name: "a PriorityClass", method: http.MethodPost, path: "/jobmanager/groups",
			body: descriptorWith("{apiVersion: scheduling.k8s.io/v1, kind: PriorityClass, metadata: {name: x}, value: 1000000000}")},
		{name: "another Namespace", method: http.MethodPost, path: "/jobmanager/groups",
			body: descriptorWith("{apiVersion: v1, kind: Namespace, metadata: {name: x}}")},
		{name: "a manifest without kind", method: http.MethodPost, path: "/jobmanager/groups",
			body: descriptorWith("{apiVersion: v1, metadata: {name: x}}")},
		{name: "a manifest name with a newline", method: http.MethodPost, path: "/jobmanager/groups",
			body: strings.Replace(descriptorWith("{apiVersion: v1, kind: ConfigMap, metadata: {name: x}}"), "metadata: {name: x}", "metadata: {name: \"x\\ny\"}", 1)},
		{name: "a bogus orchestrator", method: http.MethodPost, path: "/jobmanager/groups",
			body: strings.Replace(descriptorWith("{apiVersion: v1, kind: ConfigMap, metadata: {name: x}}"), "orchestrator: ocm", "orchestrator: kubectl", 1)},
		{name: "a cluster name that is not a name", method: http.MethodPost, path: "/jobmanager/groups",
			body: strings.Replace(descriptorWith("{apiVersion: v1, kind: ConfigMap, metadata: {name: x}}"), "cluster_name: cluster1", "cluster_name: \"../cluster1\"", 1)},
		{name: "targets as a number", method: http.MethodPost, path: "/jobmanager/groups",
			body: strings.Replace(descriptorWith("{apiVersion: v1, kind: ConfigMap, metadata: {name: x}}"), "targets: {cluster_name: cluster1, orchestrator: ocm}", "targets: 12345678901234567890", 1)},
		// Ids that would reach keys (Redis, the object store).
		{name: "a group id naming another key", method: http.MethodGet, path: "/jobmanager/groups/0a000000-0000-4000-8000-000000000001:jobs"},
		{name: "a group id escaping the archive prefix", method: http.MethodGet, path: "/jobmanager/groups/..%2F..%2Fmanifests%2Fx"},
		{name: "a job id with a space", method: http.MethodGet, path: "/jobmanager/jobs/a%20b"},
		{name: "a job id with braces", method: http.MethodDelete, path: "/jobmanager/jobs/%7Bb:00%7D"},
		{name: "history of an id with a slash", method: http.MethodGet, path: "/jobmanager/jobs/a%2Fb/history"},
		// The deployment-manager API.
		{name: "a report with an impossible state", method: http.MethodPut, path: "/jobmanager/jobs", body: `{"id":"0a000000-0000-4000-8000-000000000001","owner_id":"tester","state":9}`},
		{name: "a report that is not JSON", method: http.MethodPut, path: "/jobmanager/jobs", body: "state: 3"},
		{name: "a resource of a job that does not exist", method: http.MethodPut, path: "/jobmanager/resources/status",
			body: `{"job_id":"0a000000-0000-4000-8000-000000000009","conditions":[{"type":"Applied","status":"True"}]}`},
		{name: "promote for an owner id with a colon", method: http.MethodPatch, path: "/jobmanager/jobs/promote/0a000000-0000-4000-8000-000000000001", body: `{"owner_id":"tester:evil"}`},
		{name: "an update of a group that does not exist", method: http.MethodPut, path: "/jobmanager/groups",
			body: `{"id":"0a000000-0000-4000-8000-00000000000a","descriptor":"name: x"}`},
		// Incompliances (REST).
		{name: "an incompliance setting its own outcome", method: http.MethodPost, path: "/jobmanager/policies/incompliance",
			body: `{"id":"i1","policyName":"cpu","remediation":"scale-out","subject":{"resourceId":"0a000000-0000-4000-8000-000000000001"},"outcome":"applied","job_id":"x"}`},
		{name: "an incompliance with an unknown remediation", method: http.MethodPost, path: "/jobmanager/policies/incompliance",
			body: `{"id":"i2","policyName":"cpu","remediation":"rm -rf","subject":{"resourceId":"0a000000-0000-4000-8000-000000000001"}}`},
		{name: "an incompliance id with a slash", method: http.MethodPost, path: "/jobmanager/policies/incompliance",
			body: `{"id":"../i3","policyName":"cpu","remediation":"scale-out","subject":{"resourceId":"0a000000-0000-4000-8000-000000000001"}}`},
		{name: "an incompliance that is not JSON", method: http.MethodPost, path: "/jobmanager/policies/incompliance", body: "<xml/>"},
		// CloudEvents.
		{name: "a dataref into another bucket", typ: "eu.icos.jobgroup.create.v1", headers: map[string]string{"Ce-Dataref": "s3://their-bucket/app.yaml"}, body: ""},
		{name: "a dataref climbing out of its prefix", typ: "eu.icos.jobgroup.create.v1", headers: map[string]string{"Ce-Dataref": "s3://ocm-jobs/../secrets/x"}, body: ""},
		{name: "a descriptor as an image", typ: "eu.icos.jobgroup.create.v1", headers: map[string]string{"Content-Type": "image/png"}, body: "\x89PNG"},
		{name: "an event without a type", typ: "", body: "{}", want: http.StatusBadRequest},
		{name: "a batch of events", typ: "batch", headers: map[string]string{"Content-Type": "application/cloudevents-batch+json"}, body: "[]"},
		{name: "a stop of a group id naming another key", typ: "eu.icos.jobgroup.stop.v1", body: `{"id":"0a000000-0000-4000-8000-000000000001:jobs"}`},
		{name: "an incompliance event setting server fields", typ: "eu.icos.policy.incompliance.v1",
			body: `{"id":"i4","policyName":"cpu","remediation":"scale-out","subject":{"resourceId":"0a000000-0000-4000-8000-000000000001"},"reason":"trust me"}`},
		{name: "a job.created naming no job", typ: "eu.icos.job.created.v1", body: "{}"},
		{name: "an event type nobody handles", typ: "eu.icos.jobgroup.destroy-everything.v1", body: "{}"},
	}
	if len(cases) < 40 {
		t.Fatalf("%d cases, want at least 40", len(cases))
	}
	before := installState(t, ctx, rdb, prefix)
	for i, tc := range cases {
		var r reply
		if tc.typ != "" || tc.method == "" {
			headers := map[string]string{"Content-Type": "application/yaml"}
			for k, v := range tc.headers {
				headers[k] = v
			}
			r = f.eventWith(t, tc.typ, fmt.Sprintf("hostile-%d", i), headers, []byte(tc.body))
		} else {
			r = f.rest(t, tc.method, tc.path, tc.body, f.token)
		}
		switch {
		case tc.want != 0 && r.status != tc.want:
			t.Errorf("%s: %d %s, want %d", tc.name, r.status, abbreviate(r.body), tc.want)
		case r.status < 400 || r.status >= 500:
			t.Errorf("%s: %d %s, want a 4xx", tc.name, r.status, abbreviate(r.body))
		case len(strings.TrimSpace(string(r.body))) < 10:
			t.Errorf("%s: %d with no message (%q)", tc.name, r.status, r.body)
		}
	}
	after := installState(t, ctx, rdb, prefix)
	for _, k := range diff(before, after) {
		t.Errorf("written by a refused request: %s", k)
	}
	t.Logf("%d hostile requests refused, nothing written", len(cases))
}

func abbreviate(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "…"
	}
	return string(b)
}

// installState renders the install's Redis keys (their type and content, the idempotency
// memos left out: they remember these very answers) and every ManifestWork on the hub.
func installState(t *testing.T, ctx context.Context, rdb *redis.Client, prefix string) map[string]string {
	t.Helper()
	out := map[string]string{}
	it := rdb.Scan(ctx, 0, prefix+":*", 1000).Iterator()
	for it.Next(ctx) {
		k := it.Val()
		if strings.Contains(k, ":memo:") {
			continue
		}
		typ := rdb.Type(ctx, k).Val()
		var v string
		switch typ {
		case "hash":
			h := rdb.HGetAll(ctx, k).Val()
			fields := make([]string, 0, len(h))
			for f, x := range h {
				fields = append(fields, f+"="+x)
			}
			sort.Strings(fields)
			v = strings.Join(fields, "\n")
		case "set":
			m := rdb.SMembers(ctx, k).Val()
			sort.Strings(m)
			v = strings.Join(m, ",")
		case "zset":
			v = fmt.Sprint(rdb.ZRangeWithScores(ctx, k, 0, -1).Val())
		case "list":
			v = strings.Join(rdb.LRange(ctx, k, 0, -1).Val(), "\n")
		case "stream":
			v = fmt.Sprint(rdb.XLen(ctx, k).Val())
		default:
			v = rdb.Get(ctx, k).Val()
		}
		out["redis "+k] = typ + " " + v
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	works, err := env.Hub.Work.WorkV1().ManifestWorks(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range works.Items {
		out["work "+w.Namespace+"/"+w.Name] = "exists" // its status moves with its agent
	}
	return out
}

// diff lists what differs between two states.
func diff(before, after map[string]string) []string {
	var out []string
	for k, v := range after {
		if before[k] != v {
			out = append(out, k)
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			out = append(out, k+" (gone)")
		}
	}
	sort.Strings(out)
	return out
}
