package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// rolloutDescriptor is a one-component application on cluster1 and cluster2, rolled out
// canary-first: cluster2's wave starts once cluster1's work was Available for 5s.
const rolloutDescriptor = `
name: rollout-demo
rollout: {strategy: canary, canary: cluster1, minSuccessTime: 5s}
components:
  - name: web
    manifests: [{name: web}]
    targets: [{cluster_name: cluster1, orchestrator: ocm}, {cluster_name: cluster2, orchestrator: ocm}]
manifests:
  - apiVersion: apps/v1
    kind: Deployment
    metadata: {name: web}
    spec:
      replicas: 1
      selector: {matchLabels: {app: web}}
      template:
        metadata: {labels: {app: web}}
        spec: {containers: [{name: web, image: nginx:1.27}]}
`

// rolloutView is a group's rollout as GET /jobmanager/groups/{id} shows it.
type rolloutView struct {
	Rollout *struct {
		Wave    int      `json:"wave"`
		Phase   string   `json:"phase"`
		Done    []string `json:"done"`
		Pending []string `json:"pending"`
		Failed  []string `json:"failed"`
		Waves   []struct {
			Clusters []string `json:"clusters"`
		} `json:"waves"`
	} `json:"rollout"`
}

// rollout submits a second application rolled out in two waves and prints the rollout as
// status sync's ticks step it, then stops and deletes it.
func (d *demo) rollout(ctx context.Context) error {
	step("3d. a two-wave rollout: canary cluster1 first, cluster2 once cluster1 is Available for 5s (held until then)")
	var g group
	if err := d.rest(ctx, http.MethodPost, d.env["JOBS_URL"]+"/jobmanager/groups", []byte(rolloutDescriptor), &g); err != nil {
		return err
	}
	last := ""
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		var v rolloutView
		if err := d.get(ctx, d.env["JOBS_URL"]+"/jobmanager/groups/"+g.ID, &v); err != nil {
			return err
		}
		if r := v.Rollout; r != nil {
			line := fmt.Sprintf("   wave %d/%d %-9s done [%s] pending [%s] failed [%s]", r.Wave+1, len(r.Waves), r.Phase,
				strings.Join(r.Done, " "), strings.Join(r.Pending, " "), strings.Join(r.Failed, " "))
			if line != last {
				fmt.Printf("%s %s\n", time.Now().Format("15:04:05"), line)
				last = line
			}
			if r.Phase != "rolling" {
				break
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	if err := d.rest(ctx, http.MethodPut, d.env["JOBS_URL"]+"/jobmanager/groups/stop/"+g.ID, nil, nil); err != nil {
		return err
	}
	if _, err := d.follow(ctx, g.ID, 2*time.Minute, func(j job) bool { return j.Type == 6 && (j.State == 3 || j.State == 4) }); err != nil {
		return err
	}
	return d.rest(ctx, http.MethodDelete, d.env["JOBS_URL"]+"/jobmanager/groups/"+g.ID, nil, nil)
}
