package jobs

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const oakestraShop = `{
  "sla_version": "v2.0", "customerID": "Admin",
  "applications": [{
    "applicationID": "", "application_name": "shop", "application_namespace": "test", "application_desc": "a shop",
    "microservices": [{
      "microserviceID": "", "microservice_name": "web", "microservice_namespace": "test",
      "virtualization": "container", "cmd": ["nginx", "-g", "daemon off;"], "environment": ["MODE=demo"],
      "memory": 100, "vcpus": 1, "vgpus": 0, "vtpus": 0, "bandwidth_in": 0, "bandwidth_out": 0, "storage": 0,
      "code": "docker.io/library/nginx:1.27", "state": "", "port": "8080:80;53/udp", "addresses": {"rr_ip": ""},
      "added_files": [], "constraints": [{"type": "direct", "cluster": "cluster1"}]
    }, {
      "microservice_name": "batch", "microservice_namespace": "test", "virtualization": "container",
      "code": "busybox", "cmd": ["true"], "one_shot": true
    }]
  }, {
    "application_name": "other", "application_namespace": "ns",
    "microservices": [{"microservice_name": "api", "microservice_namespace": "ns", "virtualization": "container", "code": "nginx"}]
  }]
}`

func TestParseOakestraSLA(t *testing.T) {
	if !IsOakestraSLA([]byte(oakestraShop)) || IsOakestraSLA([]byte("name: app\ncomponents: []\n")) {
		t.Fatal("IsOakestraSLA does not tell an SLA from an ICOS descriptor")
	}
	descs, ferr := ParseOakestraSLA([]byte(oakestraShop), false)
	if ferr != nil {
		t.Fatalf("a valid SLA: %v", ferr)
	}
	if len(descs) != 2 {
		t.Fatalf("%d descriptors, want one per application", len(descs))
	}
	app, ferr := ParseDescriptor(descs[0])
	if ferr != nil {
		t.Fatalf("the converted descriptor does not parse: %v\n%s", ferr, descs[0])
	}
	if app.Name != "shop" || app.Namespace != "shop-test" || app.Description != "a shop" {
		t.Errorf("application %q namespace %q description %q", app.Name, app.Namespace, app.Description)
	}
	got := map[string][]string{}
	targets := map[string]string{}
	for _, c := range app.Components {
		got[c.Name] = nil
		for _, o := range c.Objects {
			got[c.Name] = append(got[c.Name], o.GetKind()+"/"+o.GetName())
		}
		if c.Targets != nil {
			targets[c.Name] = c.Targets.ClusterName
		}
	}
	if d := cmp.Diff(map[string][]string{"web": {"Deployment/web", "Service/web"}, "batch": {"Job/batch"}}, got); d != "" {
		t.Errorf("components (-want +got):\n%s", d)
	}
	if d := cmp.Diff(map[string]string{"web": "cluster1"}, targets); d != "" {
		t.Errorf("targets (-want +got): %s", d)
	}
	ms, _ := app.Components[0].Manifests()
	for _, want := range []string{"memory: 100Mi", "cpu: \"1\"", "image: docker.io/library/nginx:1.27", "- name: MODE", "containerPort: 80", "daemon off;"} {
		if !strings.Contains(ms[0].YamlString, want) {
			t.Errorf("the Deployment lacks %q:\n%s", want, ms[0].YamlString)
		}
	}
	for _, want := range []string{"port: 8080", "targetPort: 80", "port: 53", "protocol: UDP"} {
		if !strings.Contains(ms[1].YamlString, want) {
			t.Errorf("the Service lacks %q:\n%s", want, ms[1].YamlString)
		}
	}

	bad := map[string]struct {
		sla    string
		ignore bool
		paths  []string // every path the error must list
	}{
		"fields asking for what has no equivalent": {sla: strings.NewReplacer(`"vgpus": 0`, `"vgpus": 1`, `"bandwidth_in": 0`, `"bandwidth_in": 500`,
			`{"rr_ip": ""}`, `{"rr_ip": "10.30.0.1"}`, `"type": "direct", "cluster": "cluster1"`, `"type": "latency", "threshold": 50`).Replace(oakestraShop),
			paths: []string{"applications[0].microservices[0].vgpus", "applications[0].microservices[0].bandwidth_in",
				"applications[0].microservices[0].addresses", "applications[0].microservices[0].constraints[0].type"}},
		"bad version":       {sla: strings.Replace(oakestraShop, `"v2.0"`, `"v1.0"`, 1), paths: []string{"sla_version"}},
		"bad port":          {sla: strings.Replace(oakestraShop, `"8080:80;53/udp"`, `"80:http"`, 1), paths: []string{"applications[0].microservices[0].port"}},
		"no image":          {sla: strings.Replace(oakestraShop, `"code": "nginx"`, `"code": ""`, 1), paths: []string{"applications[1].microservices[0].code"}},
		"bad name":          {sla: strings.Replace(oakestraShop, `"application_name": "other"`, `"application_name": "my-app"`, 1), paths: []string{"applications[1].application_name"}},
		"an id set by user": {sla: strings.Replace(oakestraShop, `"microserviceID": ""`, `"microserviceID": "x"`, 1), paths: []string{"applications[0].microservices[0].microserviceID"}},
	}
	for name, tc := range bad {
		t.Run(name, func(t *testing.T) {
			out, ferr := ParseOakestraSLA([]byte(tc.sla), tc.ignore)
			if ferr == nil || out != nil {
				t.Fatalf("accepted: %d descriptors", len(out))
			}
			msg := ferr.Error()
			for _, p := range tc.paths {
				if !strings.Contains(msg, p) {
					t.Errorf("the error does not list %s: %s", p, msg)
				}
			}
		})
	}
	t.Run("ignoreUnsupported", func(t *testing.T) {
		sla := strings.NewReplacer(`"vgpus": 0`, `"vgpus": 1`, `{"rr_ip": ""}`, `{"rr_ip": "10.30.0.1"}`).Replace(oakestraShop)
		if _, ferr := ParseOakestraSLA([]byte(sla), true); ferr != nil {
			t.Errorf("ignored fields still refused: %v", ferr)
		}
	})
}
