package integration

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ocm-jobs/ocm-jobs/functions/jobs"
	"github.com/ocm-jobs/ocm-jobs/shared/auth"
)

// TestRoutesByRole: every REST route, called with a token of each role alone and with none,
// answers as the one route table says: 401 without a token, 403 (with a JSON error) for a role
// the route does not take, and neither for a role it takes.
func TestRoutesByRole(t *testing.T) {
	f := startFunctions(t, nil)
	table := jobs.RouteRoles()
	table["POST /jobmanager/policies/incompliance"] = []auth.Role{auth.RolePolicyManager}
	tokens := map[auth.Role]string{}
	for _, r := range auth.AllRoles {
		tok, err := f.issuer.Sign(auth.Grant{Subject: "as-" + string(r), TTL: time.Hour, Roles: []auth.Role{r}, Owner: "owner-1"})
		if err != nil {
			t.Fatal(err)
		}
		tokens[r] = tok
	}
	patterns := make([]string, 0, len(table))
	for p := range table {
		patterns = append(patterns, p)
	}
	sort.Strings(patterns)
	checked := 0
	for _, pattern := range patterns {
		method, path, _ := strings.Cut(pattern, " ")
		path = strings.NewReplacer("{id}", "0a000000-0000-4000-8000-000000000001", "{orchestrator}", "ocm", "{owner}", "owner-1").Replace(path)
		allowed := map[auth.Role]bool{}
		for _, r := range table[pattern] {
			allowed[r] = true
		}
		if table[pattern] == nil {
			if r := f.rest(t, method, path, nil, ""); r.status == http.StatusUnauthorized || r.status == http.StatusForbidden {
				t.Errorf("%s with no token: %d, want the route open", pattern, r.status)
			}
			continue
		}
		if r := f.rest(t, method, path, "{}", ""); r.status != http.StatusUnauthorized {
			t.Errorf("%s with no token: %d %s, want 401", pattern, r.status, r.body)
		}
		for _, role := range auth.AllRoles {
			r := f.rest(t, method, path, "{}", tokens[role])
			checked++
			switch {
			case allowed[role] && (r.status == http.StatusUnauthorized || r.status == http.StatusForbidden):
				t.Errorf("%s as %s: %d %s, want it allowed", pattern, role, r.status, r.body)
			case !allowed[role] && r.status != http.StatusForbidden:
				t.Errorf("%s as %s: %d %s, want 403", pattern, role, r.status, r.body)
			case !allowed[role] && !strings.Contains(string(r.body), `"error"`):
				t.Errorf("%s as %s: 403 without a JSON error: %s", pattern, role, r.body)
			}
		}
	}
	t.Logf("%d routes × %d roles checked, plus no token", len(patterns), len(auth.AllRoles))
	if checked == 0 {
		t.Fatal("no route was checked")
	}
}

// TestDeploymentManagerActsAsItsOwner: a deployment manager's token names the owner it acts
// as; promoting, listing or reporting for another owner is 403, and a report from the right
// owner at a stale fence is 409.
func TestDeploymentManagerActsAsItsOwner(t *testing.T) {
	f := startFunctions(t, nil)
	sign := func(owner string) string {
		tok, err := f.issuer.Sign(auth.Grant{Subject: owner, TTL: time.Hour, Roles: []auth.Role{auth.RoleDeploymentManager}, Owner: owner})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	nuvla, other := sign("nuvla-1"), sign("nuvla-2")
	var g struct {
		Jobs []struct {
			ID string `json:"id"`
		} `json:"jobs"`
	}
	r := f.rest(t, http.MethodPost, "/jobmanager/groups", `
name: owned
components:
  - {name: web, manifests: [{name: cfg}], targets: {cluster_name: edge-1, orchestrator: nuvla}}
manifests:
  - {apiVersion: v1, kind: ConfigMap, metadata: {name: cfg}}
`, f.token)
	if r.status != http.StatusCreated {
		t.Fatalf("POST /groups: %d %s", r.status, r.body)
	}
	r.decode(t, &g)
	id := g.Jobs[0].ID
	if r := f.rest(t, http.MethodGet, "/jobmanager/jobs/executable/nuvla/nuvla-1", nil, other); r.status != http.StatusForbidden {
		t.Errorf("listing another owner's executable jobs: %d", r.status)
	}
	if r := f.rest(t, http.MethodPatch, "/jobmanager/jobs/promote/"+id, `{"owner_id":"nuvla-1"}`, other); r.status != http.StatusForbidden {
		t.Errorf("promoting as another owner: %d %s", r.status, r.body)
	}
	r = f.rest(t, http.MethodPatch, "/jobmanager/jobs/promote/"+id, `{"owner_id":"nuvla-1"}`, nuvla)
	if r.status != http.StatusNoContent {
		t.Fatalf("promote: %d %s", r.status, r.body)
	}
	fence := r.header.Get("X-Fence")
	if r := f.rest(t, http.MethodPut, "/jobmanager/jobs", `{"id":"`+id+`","owner_id":"nuvla-1","state":3}`, other); r.status != http.StatusForbidden {
		t.Errorf("a report as another owner: %d %s", r.status, r.body)
	}
	if r := f.rest(t, http.MethodPut, "/jobmanager/jobs", `{"id":"`+id+`","owner_id":"nuvla-1","state":3,"fence":`+fence+`9}`, nuvla); r.status != http.StatusConflict {
		t.Errorf("a report at a stale fence: %d %s", r.status, r.body)
	}
	if r := f.rest(t, http.MethodPut, "/jobmanager/jobs", `{"id":"`+id+`","owner_id":"nuvla-1","state":3,"fence":`+fence+`}`, nuvla); r.status != http.StatusOK {
		t.Errorf("the owner's report: %d %s", r.status, r.body)
	}
}

// TestEventsNeedASenderIdentity: with Knative Eventing's OIDC sender identity the CloudEvents
// endpoint takes only a token the cluster's issuer made for one of its audiences — a token of
// the API server's TokenRequest for a service account — and answers 401 to an event without a
// token, with a token for another audience, or with a token no key of the cluster signed.
func TestEventsNeedASenderIdentity(t *testing.T) {
	ctx := context.Background()
	f := startFunctions(t, map[string]string{"AUTH_CLOUDEVENTS": "true", "EVENTS_OIDC_ISSUER": "hub", "EVENTS_AUDIENCES": "ocm-jobs-jobs,ocm-jobs"})
	id, err := env.Hub.SenderIdentity(ctx, "knative-eventing", "mt-broker-filter")
	if err != nil {
		t.Fatal(err)
	}
	right, err := id.Token(ctx, "ocm-jobs")
	if err != nil {
		t.Fatal(err)
	}
	wrong, err := env.Hub.Token(ctx, "knative-eventing", "mt-broker-filter", "somebody-else", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	send := func(n int, token string) reply {
		return f.eventWith(t, "eu.icos.jobgroup.create.v1", fmt.Sprintf("oidc-%d", n),
			map[string]string{"Content-Type": "application/yaml", "Authorization": "Bearer " + token}, []byte(nuvlaApp))
	}
	for n, tc := range []struct {
		name, token string
		want        int
	}{
		{"no token", "", http.StatusUnauthorized},
		{"another audience", wrong, http.StatusUnauthorized},
		{"a REST token (another issuer)", f.token, http.StatusUnauthorized},
		{"the broker's identity", right, http.StatusOK},
	} {
		if r := send(n, tc.token); r.status != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, r.status, r.body, tc.want)
		}
	}
}
