package incompliance

import (
	"strings"
	"testing"
)

func TestDecodeShapes(t *testing.T) {
	tests := map[string]struct {
		in        string
		component string
		resource  string
		patch     string
		image     string
		target    string
	}{
		"Policy Manager webhook (appInstance + appComponent, no resourceId)": {
			in: `{"id":"i-1","currentValue":93.5,"threshold":80,"policyName":"cpu","policyId":"p","measurementBackend":"prometheus",
				"subject":{"type":"app","appName":"shop","appInstance":"g-1","appComponent":"web"},"extraLabels":{"team":"a"},"remediation":"scale-out"}`,
			component: "web",
		},
		"Job Manager shape (resourceId)": {
			in:       `{"ID":"i-2","currentValue":"93","threshold":"80","policyName":"cpu","subject":{"resourceId":"job-1"},"remediation":"scale-up"}`,
			resource: "job-1",
		},
		"patch as an object": {
			in:    `{"policyName":"p","subject":{"resourceId":"j"},"remediation":"patch","patch":{"spec":{"replicas":3}}}`,
			patch: `{"spec":{"replicas":3}}`, resource: "j",
		},
		"patch and image in extraLabels": {
			in:    `{"policyName":"p","subject":{"resourceId":"j"},"remediation":"patch","extraLabels":{"patch":"spec: {paused: true}","image":"nginx:1.28"}}`,
			patch: "spec: {paused: true}", image: "nginx:1.28", resource: "j",
		},
		"reallocation with a target cluster": {
			in:     `{"policyName":"p","subject":{"resourceId":"j"},"remediation":"reallocation","targetCluster":"cluster2"}`,
			target: "cluster2", resource: "j",
		},
		"secure without an image": {
			in: `{"policyName":"p","subject":{"resourceId":"j"},"remediation":"secure"}`, resource: "j",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r, ferr := Decode([]byte(tc.in))
			if ferr != nil {
				t.Fatal(ferr)
			}
			s := r.Incompliance.Subject
			if s.AppComponent != tc.component || s.ResourceID != tc.resource {
				t.Errorf("subject %+v", s)
			}
			if r.Remediation.Patch != tc.patch || r.Remediation.Image != tc.image {
				t.Errorf("remediation %+v", r.Remediation)
			}
			if tc.target != "" && (r.Remediation.Target == nil || r.Remediation.Target.ClusterName != tc.target) {
				t.Errorf("target %+v", r.Remediation.Target)
			}
			if r.Remediation.Action != r.Incompliance.Remediation {
				t.Errorf("action %q != remediation %q", r.Remediation.Action, r.Incompliance.Remediation)
			}
		})
	}
}

func TestDecodeRefusals(t *testing.T) {
	tests := map[string]struct {
		in   string
		want []string
	}{
		"not JSON":                {in: `{"policyName":`, want: []string{"not valid JSON"}},
		"everything missing":      {in: `{}`, want: []string{"policyName", "remediation", "subject names no job"}},
		"unknown remediation":     {in: `{"policyName":"p","subject":{"resourceId":"j"},"remediation":"reboot"}`, want: []string{"reboot", "scale-out"}},
		"half a subject":          {in: `{"policyName":"p","subject":{"appInstance":"g"},"remediation":"scale-in"}`, want: []string{"appComponent"}},
		"patch without document":  {in: `{"policyName":"p","subject":{"resourceId":"j"},"remediation":"patch"}`, want: []string{"patch"}},
		"value that is an object": {in: `{"policyName":"p","subject":{"resourceId":"j"},"remediation":"scale-in","currentValue":{"a":1}}`, want: []string{"currentValue"}},
		"bad workload":            {in: `{"policyName":"p","subject":{"resourceId":"j"},"remediation":"scale-in","workload":"web"}`, want: []string{"Kind/name"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r, ferr := Decode([]byte(tc.in))
			if ferr == nil {
				t.Fatalf("accepted: %+v", r)
			}
			for _, w := range tc.want {
				if !strings.Contains(ferr.Error(), w) {
					t.Errorf("error does not mention %q: %v", w, ferr)
				}
			}
		})
	}
}

// FuzzDecode: any body is either decoded into a request that names a job and a valid
// remediation, or refused with a message; never a panic.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"id":"i","policyName":"cpu","subject":{"appInstance":"g","appComponent":"c"},"remediation":"scale-out"}`,
		`{"ID":"i","policyName":"cpu","subject":{"resourceId":"j"},"remediation":"patch","patch":{"a":1}}`,
		`{"policyName":"p","subject":{"resourceId":"j"},"remediation":"reallocation","target":{"cluster_name":"c"}}`,
		`{"extraLabels":{"patch":""},"remediation":"patch"}`,
		`[]`, `null`, `"x"`, `{"patch":null}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, ferr := Decode(data)
		if ferr != nil {
			if ferr.Error() == "" {
				t.Fatal("refusal without a message")
			}
			return
		}
		in := r.Incompliance
		if in.PolicyName == "" || !in.Remediation.Valid() {
			t.Fatalf("accepted an incompliance without policy or valid remediation: %+v", in)
		}
		if in.Subject.ResourceID == "" && (in.Subject.AppInstance == "" || in.Subject.AppComponent == "") {
			t.Fatalf("accepted an incompliance that names no job: %+v", in.Subject)
		}
	})
}
