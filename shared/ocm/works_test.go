package ocm

import (
	"strings"
	"testing"
)

func TestDecodeList(t *testing.T) {
	raw := `{"kind":"ManifestWorkList","apiVersion":"work.open-cluster-management.io/v1","metadata":{"resourceVersion":"9","continue":"abc"},"items":[` +
		`{"metadata":{"name":"job-a","namespace":"c1","uid":"u1","generation":2,"annotations":{"jobmanager.icos.eu/fence":"4"}},"spec":{"workload":{"manifests":[{"kind":"ConfigMap"}]}},"status":{"conditions":[{"type":"Applied","status":"True","lastTransitionTime":"2026-01-01T10:00:00Z","reason":"r","message":"m"}]}},` +
		`{"metadata":{"name":"job-b","namespace":"c2","uid":"u2"}}]}`
	var l workList
	var got []*Work
	if err := decodeList(strings.NewReader(raw), &l, func(w *Work) { got = append(got, w) }); err != nil {
		t.Fatal(err)
	}
	if l.Metadata.Continue != "abc" || len(got) != 2 || got[0].Metadata.Generation != 2 || got[0].Fence() != 4 ||
		len(got[0].Status.Conditions) != 1 || got[1].Metadata.Namespace != "c2" || got[1].Fence() != 0 {
		t.Fatalf("decoded %+v, items %+v", l, got)
	}
	if err := decodeList(strings.NewReader(`{"items":[{"metadata":`), &l, func(*Work) {}); err == nil {
		t.Fatal("a truncated list decoded")
	}
}

// TestGenerated: the work a deployment manager made with generateName is found by its prefix
// and a five-character suffix, and only when it is the one such work.
func TestGenerated(t *testing.T) {
	named := func(names ...string) []*Work {
		var out []*Work
		for _, n := range names {
			out = append(out, &Work{Metadata: WorkMeta{Name: n}})
		}
		return out
	}
	for _, tc := range []struct {
		works []string
		want  string
	}{
		{[]string{"job-1", "web-ab12c", "webx-ab12c"}, "web-ab12c"},
		{[]string{"web-ab12c", "web-zz99z"}, ""},
		{[]string{"web-toolong", "web-", "web"}, ""},
		{nil, ""},
	} {
		got := Generated(named(tc.works...), "web")
		if (got == nil && tc.want != "") || (got != nil && got.Metadata.Name != tc.want) {
			t.Errorf("%v: got %v, want %q", tc.works, got, tc.want)
		}
	}
}
