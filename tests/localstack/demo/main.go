// Command demo is `make demo`: against a running `make run`, it submits the bundled example
// application (config/examples/guestbook.yaml), prints every job's state transitions until
// the application is deployed, scales one component out with a Policy Manager incompliance,
// then stops and deletes the application — the whole ocm-jobs flow, step by step.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

var stateNames = map[int]string{1: "Created", 2: "Progressing", 3: "Finished", 4: "Degraded"}
var typeNames = map[int]string{5: "CreateDeployment", 6: "DeleteDeployment", 7: "UpdateDeployment", 8: "ReplaceDeployment"}

type job struct {
	ID      string `json:"id"`
	UpperID string `json:"ID"`
	Name    string `json:"job_group_name"`
	Type    int    `json:"type"`
	SubType string `json:"sub_type"`
	State   int    `json:"state"`
	Targets struct {
		Cluster string `json:"cluster_name"`
	} `json:"targets"`
	Resource *struct {
		Name string `json:"resource_name"`
	} `json:"resource"`
}

func (j job) id() string {
	if j.ID != "" {
		return j.ID
	}
	return j.UpperID
}

type group struct {
	ID            string        `json:"id"`
	Name          string        `json:"appName"`
	Jobs          []job         `json:"jobs"`
	PolicyManager *registration `json:"policy_manager"`
}

// registration is the group's Policy Manager registration, as GET /jobmanager/groups/{id} shows it.
type registration struct {
	State     string   `json:"state"`
	Phase     string   `json:"phase"`
	Delivered string   `json:"delivered"`
	Pending   []string `json:"pending"`
	Attempts  int      `json:"attempts"`
	LastError string   `json:"last_error"`
}

type demo struct {
	env    map[string]string
	client *http.Client
	seen   map[string]string
	// spokes is what the spokes' API servers last showed (watchReplicas).
	spokes spokeView
}

func main() {
	d := &demo{client: &http.Client{Timeout: 30 * time.Second}, seen: map[string]string{}}
	if err := d.run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func (d *demo) run(ctx context.Context) error {
	run := os.Getenv("RUN_DIR")
	if run == "" {
		run = ".run"
	}
	var err error
	if d.env, err = readEnv(filepath.Join(run, "env")); err != nil {
		return fmt.Errorf("%w — start `make run` in another shell first", err)
	}
	if err := live(d.env["LOCALSTACK_PID"]); err != nil {
		return fmt.Errorf("%s is stale: %w — start `make run` in another shell first", filepath.Join(run, "env"), err)
	}
	descriptor, err := os.ReadFile(filepath.Join("config", "examples", "guestbook.yaml"))
	if err != nil {
		return err
	}

	if ui := d.env["UI_URL"]; ui != "" {
		fmt.Printf("web UI (signed in with TOKEN): %s\n", ui)
	}
	// The spokes' own view of the application, printed as it changes, beside the jobs'.
	watch, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go d.watchReplicas(watch, "guestbook")

	step("1. submit the application (eu.icos.jobgroup.create.v1 to the jobs function)")
	var g group
	if err := d.event(ctx, d.env["JOBS_URL"], "eu.icos.jobgroup.create.v1", "application/yaml", descriptor, &g); err != nil {
		return err
	}
	fmt.Printf("   job group %s (%s) with %d jobs\n", g.ID, g.Name, len(g.Jobs))

	step("2. the executor turns each job into a ManifestWork; status sync reports back")
	if _, err := d.follow(ctx, g.ID, 3*time.Minute, func(j job) bool { return j.State == 3 || j.State == 4 }); err != nil {
		return err
	}

	step("2b. the group is registered with the ICOS Dynamic Policy Manager: created, then started once its jobs run (the cron tick)")
	if err := d.registration(ctx, g.ID, "started"); err != nil {
		return err
	}

	step("3. a Policy Manager incompliance asks to scale the frontend out")
	inc := map[string]any{
		"id": uuid.NewString(), "policyName": "frontend-cpu", "policyId": "p-1", "currentValue": "93", "threshold": "80",
		"measurementBackend": "prometheus", "remediation": "scale-out",
		"subject": map[string]string{"type": "app", "appName": "guestbook", "appInstance": g.ID, "appComponent": "frontend"},
	}
	body, _ := json.Marshal(inc)
	if err := d.rest(ctx, http.MethodPost, d.env["INCOMPLIANCE_URL"]+"/jobmanager/policies/incompliance", body, nil); err != nil {
		return err
	}
	if _, err := d.follow(ctx, g.ID, 2*time.Minute, func(j job) bool { return j.State == 3 || j.State == 4 }); err != nil {
		return err
	}
	if !d.spokes.waitDesired(ctx, "cluster1  guestbook/frontend", 2, time.Minute) {
		fmt.Println("   the spoke cluster1 did not show 2 desired replicas of guestbook/frontend within a minute")
	}

	idBody, _ := json.Marshal(map[string]string{"id": g.ID})
	step("3b. restart the application (eu.icos.jobgroup.restart.v1): every running job becomes an UpdateDeployment restart that sets kubectl.kubernetes.io/restartedAt on its pod templates, and nothing else")
	if err := d.event(ctx, d.env["JOBS_URL"], "eu.icos.jobgroup.restart.v1", "application/json", idBody, nil); err != nil {
		return err
	}
	if _, err := d.follow(ctx, g.ID, 2*time.Minute, func(j job) bool { return j.SubType == "restart" && (j.State == 3 || j.State == 4) }); err != nil {
		return err
	}
	if err := d.report(ctx, g.ID); err != nil {
		return err
	}
	if err := d.rollout(ctx); err != nil {
		return err
	}

	step("4. stop the application (eu.icos.jobgroup.stop.v1): running jobs become DeleteDeployment jobs")
	if err := d.event(ctx, d.env["JOBS_URL"], "eu.icos.jobgroup.stop.v1", "application/json", idBody, nil); err != nil {
		return err
	}
	if _, err := d.follow(ctx, g.ID, 2*time.Minute, func(j job) bool { return j.Type == 6 && (j.State == 3 || j.State == 4) }); err != nil {
		return err
	}

	step("5. delete the application (eu.icos.jobgroup.delete.v1)")
	if err := d.event(ctx, d.env["JOBS_URL"], "eu.icos.jobgroup.delete.v1", "application/json", idBody, nil); err != nil {
		return err
	}
	fmt.Println("   deleted")

	step("6. what the Policy Manager received (stopped and deleted are delivered after the requests, or by the next tick)")
	if err := d.received(ctx, g.ID); err != nil {
		return err
	}
	fmt.Println("\n   the demo is over")
	return nil
}

// registration waits until the group's Policy Manager registration delivered event, printing
// every change of it.
func (d *demo) registration(ctx context.Context, groupID, event string) error {
	if d.env["POLICY_MANAGER_URL"] == "" {
		fmt.Println("   POLICY_MANAGER_URL is unset: not registered (the jobs function logs it in .run/logs/jobs.log)")
		return nil
	}
	deadline := time.Now().Add(2 * time.Minute)
	last := ""
	for {
		var g group
		if err := d.get(ctx, d.env["JOBS_URL"]+"/jobmanager/groups/"+groupID, &g); err != nil {
			return err
		}
		if r := g.PolicyManager; r != nil {
			now := fmt.Sprintf("%s: delivered %q, pending %v, attempts %d", r.State, r.Delivered, r.Pending, r.Attempts)
			if r.LastError != "" && r.Attempts > 0 {
				now += ", last error: " + r.LastError
			}
			if now != last {
				fmt.Printf("   %s  policy_manager %s\n", time.Now().Format("15:04:05.000"), now)
				last = now
			}
			if r.Delivered == event && len(r.Pending) == 0 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the Policy Manager registration did not deliver %s in time", event)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// received prints what the local Policy Manager stand-in received about the group, once its
// deleted is there (with a real Policy Manager, the registration the group showed last).
func (d *demo) received(ctx context.Context, groupID string) error {
	base := d.env["POLICY_MANAGER_URL"]
	if base == "" {
		fmt.Println("   POLICY_MANAGER_URL is unset: nothing was sent")
		return nil
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var recs []struct {
			At              time.Time `json:"at"`
			Event           string    `json:"event"`
			AppInstance     string    `json:"app_instance"`
			Service         string    `json:"service"`
			DescriptorBytes int       `json:"descriptor_bytes"`
			Callback        string    `json:"callback"`
			Auth            string    `json:"auth"`
		}
		if err := d.get(ctx, strings.TrimSuffix(base, "/")+"/recorder/requests", &recs); err != nil {
			fmt.Printf("   %s is not the local stand-in (%v): see the jobs function's log\n", base, err)
			return nil
		}
		var mine []string
		done := false
		for _, r := range recs {
			if r.AppInstance != groupID {
				continue
			}
			line := fmt.Sprintf("%s  POST /polman/registry/api/v1/icos/app  event=%-8s app_instance=%s service=%s auth=%s",
				r.At.Local().Format("15:04:05.000"), r.Event, short(r.AppInstance), r.Service, r.Auth)
			if r.Event == "created" {
				line += fmt.Sprintf(" app_descriptor=<%d bytes> callback=%s", r.DescriptorBytes, r.Callback)
			}
			mine = append(mine, line)
			done = done || r.Event == "deleted"
		}
		if done {
			for _, l := range mine {
				fmt.Println("   " + l)
			}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the Policy Manager did not get the group's deleted in time; it got %d events", len(mine))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// get reads JSON with the demo's token.
func (d *demo) get(ctx context.Context, url string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if tok := d.env["TOKEN"]; tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %d %s", url, resp.StatusCode, raw)
	}
	return json.Unmarshal(raw, out)
}

// report prints the group's per-instance report (GET /jobmanager/groups/{id}/report), one
// line per component and cluster.
func (d *demo) report(ctx context.Context, groupID string) error {
	step("3c. the per-instance report (GET /jobmanager/groups/{id}/report, from Redis only)")
	var rep struct {
		Components []struct {
			Name      string `json:"name"`
			Instances []struct {
				Cluster   string `json:"cluster"`
				State     string `json:"state"`
				Oakestra  string `json:"oakestra_status"`
				Workloads []struct {
					Kind      string `json:"kind"`
					Name      string `json:"name"`
					Desired   *int64 `json:"desired"`
					Available *int64 `json:"availableReplicas"`
				} `json:"workloads"`
			} `json:"instances"`
		} `json:"components"`
	}
	if err := d.get(ctx, d.env["JOBS_URL"]+"/jobmanager/groups/"+groupID+"/report", &rep); err != nil {
		return err
	}
	for _, c := range rep.Components {
		for _, in := range c.Instances {
			line := fmt.Sprintf("   %-12s %-10s %-9s %-8s", c.Name, in.Cluster, in.State, in.Oakestra)
			for _, w := range in.Workloads {
				line += fmt.Sprintf("  %s/%s %s/%s available", w.Kind, w.Name, count(w.Available), count(w.Desired))
			}
			fmt.Println(line)
		}
	}
	return nil
}

func count(n *int64) string {
	if n == nil {
		return "?"
	}
	return fmt.Sprint(*n)
}

func step(s string) { fmt.Printf("\n== %s\n", s) }

// event sends a CloudEvent in binary mode straight to a function and decodes its reply.
func (d *demo) event(ctx context.Context, url, typ, contentType string, data []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(data))
	if err != nil {
		return err
	}
	req.Header.Set("Ce-Specversion", "1.0")
	req.Header.Set("Ce-Id", uuid.NewString())
	req.Header.Set("Ce-Source", "/ocm-jobs/demo")
	req.Header.Set("Ce-Type", typ)
	req.Header.Set("Content-Type", contentType)
	// Events are authenticated: the broker's sender identity for the jobs function.
	req.Header.Set("Authorization", "Bearer "+d.env["JOBS_EVENTS_TOKEN"])
	return d.do(req, out)
}

func (d *demo) rest(ctx context.Context, method, url string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	return d.do(req, out)
}

func (d *demo) do(req *http.Request, out any) error {
	// Events carry the broker's sender identity (set by event); REST calls the user's token.
	if tok := d.env["TOKEN"]; tok != "" && req.Header.Get("Authorization") == "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	fmt.Printf("   %s %s -> %d\n", req.Method, req.URL.Path+" "+req.Header.Get("Ce-Type"), resp.StatusCode)
	if resp.StatusCode == http.StatusNotImplemented {
		return fmt.Errorf("not implemented yet: %s", strings.TrimSpace(string(raw)))
	}
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %d %s", req.Method, req.URL, resp.StatusCode, strings.TrimSpace(string(raw)))
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("reading the answer: %w: %s", err, raw)
		}
	}
	return nil
}

// follow polls the group and prints every change of a job's type or state, until done holds
// for every job.
func (d *demo) follow(ctx context.Context, groupID string, timeout time.Duration, done func(job) bool) (group, error) {
	deadline := time.Now().Add(timeout)
	for {
		var g group
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, d.env["JOBS_URL"]+"/jobmanager/groups/"+groupID, nil)
		if tok := d.env["TOKEN"]; tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := d.client.Do(req)
		if err != nil {
			return g, err
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return g, fmt.Errorf("GET group %s: %d %s", groupID, resp.StatusCode, raw)
		}
		if err := json.Unmarshal(raw, &g); err != nil {
			return g, err
		}
		all := len(g.Jobs) > 0
		for _, j := range g.Jobs {
			now := fmt.Sprintf("%s%s %s", typeNames[j.Type], suffix(j.SubType), stateNames[j.State])
			if d.seen[j.id()] != now {
				fmt.Printf("   %s  job %s  %-10s -> %s\n", time.Now().Format("15:04:05.000"), short(j.id()), j.Targets.Cluster, now)
				d.seen[j.id()] = now
			}
			all = all && done(j)
		}
		if all {
			return g, nil
		}
		if time.Now().After(deadline) {
			return g, errors.New("timed out waiting for the jobs")
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func suffix(sub string) string {
	if sub == "" {
		return ""
	}
	return "(" + sub + ")"
}

func short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

func readEnv(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimPrefix(strings.TrimSpace(sc.Text()), "export ")
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		env[k] = strings.Trim(v, `"`)
	}
	return env, sc.Err()
}

// live checks that the localstack an env file names is still running: a SIGKILLed `make run`
// cannot remove its env itself (its janitor does, unless it was killed too).
func live(pid string) error {
	if pid == "" {
		return errors.New("it names no LOCALSTACK_PID")
	}
	n, err := strconv.Atoi(pid)
	if err != nil || n <= 0 {
		return fmt.Errorf("bad LOCALSTACK_PID %q", pid)
	}
	// /proc/<pid>/stat is "pid (comm) state …". A PID can be reused, so the process must
	// still be a localstack, and not one that has ended but was not reaped yet (Z).
	stat, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
	i := bytes.LastIndexByte(stat, ')')
	if err != nil || i < 0 || !bytes.HasSuffix(stat[:i], []byte("(localstack")) || bytes.HasPrefix(bytes.TrimSpace(stat[i+1:]), []byte("Z")) {
		return fmt.Errorf("localstack (pid %s) is no longer running", pid)
	}
	return nil
}
