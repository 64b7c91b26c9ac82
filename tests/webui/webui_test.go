package webui

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/google/uuid"

	"github.com/ocm-jobs/ocm-jobs/functions/jobs/webui"
	"github.com/ocm-jobs/ocm-jobs/tests/servers"
)

// TestWebUI drives the web UI in headless Chromium on the `make run` stack: a bad token is
// refused; the page loads with the token of make run's link (taken out of the address bar);
// a group created through the API appears and its jobs finish on the page without a reload;
// an incompliance's scale-out shows 2 desired replicas and the incompliance as applied; a
// cancelled stop changes nothing; a confirmed stop undeploys the group (no ManifestWork on the
// hub, no Deployment on either spoke); start and delete from the page work. Any console
// error or uncaught exception of the page fails the test.
func TestWebUI(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("Debian's chromium is not installed (%v): `make tools` installs it (tests/tools/install.sh apt)", err)
	}
	shots := artifactDir(t)

	redis, err := servers.StartRedis(servers.RedisOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("starting redis-server: %v", err)
	}
	t.Cleanup(redis.Stop)
	st := startStack(t, redis.URL())
	api := &client{base: st.env["JOBS_URL"], token: st.env["TOKEN"]}
	uiURL := st.env["JOBS_URL"] + webui.Path

	// The UI's files carry the strict policy.
	resp, err := http.Get(uiURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("Content-Security-Policy"); got != webui.ContentSecurityPolicy || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d, Content-Security-Policy %q", uiURL, resp.StatusCode, got)
	}

	b := startBrowser(t, chromium)

	// 1. Without a token: the sign-in form. A bad token is refused and not kept.
	b.expect(true)
	b.do(t, "open the UI", chromedp.Navigate(uiURL), chromedp.WaitVisible(`#signin`))
	b.shot(t, shots, "01-sign-in")
	b.do(t, "sign in with a bad token", chromedp.SendKeys(`#token`, "not-a-token"), chromedp.Click(`#signin-form button[type=submit]`))
	b.waitFor(t, "the bad token refused", 30*time.Second, `document.getElementById('signin-error').textContent.includes('refused') && document.getElementById('app').hidden`)
	if kept := b.eval(t, `sessionStorage.getItem('ocm-jobs.token') === null`); kept != true {
		t.Error("a refused token was kept in sessionStorage")
	}
	b.shot(t, shots, "02-bad-token")
	b.expect(false)

	// 2. make run's link: the token in the fragment, taken into sessionStorage and out of the
	// address bar.
	b.do(t, "open make run's link", chromedp.Navigate("about:blank"), chromedp.Navigate(uiURL+"#token="+api.token))
	b.waitFor(t, "the groups list", 30*time.Second, `!document.getElementById('app').hidden && document.getElementById('status').textContent.startsWith('updated')`)
	if clean := b.eval(t, `!location.href.includes('token') && sessionStorage.getItem('ocm-jobs.token') === `+jsString(api.token)); clean != true {
		t.Errorf("after the link: location %v; want the token in sessionStorage and not in the address bar", b.eval(t, `location.href`))
	}
	// A marker that a reload would lose: every later step happens without one.
	b.eval(t, `window.noReload = 'still here'`)

	// 3. A group created through the API appears, and its jobs finish on the page.
	descriptor, err := os.ReadFile(filepath.Join("..", "..", "config", "examples", "guestbook.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var g struct {
		ID   string `json:"id"`
		Jobs []struct {
			ID string `json:"id"`
		} `json:"jobs"`
	}
	api.must(t, http.MethodPost, "/jobmanager/groups", descriptor, http.StatusCreated, &g)
	row := fmt.Sprintf(`#groups tr[data-group=%q]`, g.ID)
	b.waitFor(t, "the new group in the list", time.Minute, `document.querySelector(`+jsString(row)+`) !== null`)
	b.do(t, "open the group", chromedp.Click(row))
	b.waitFor(t, "the group's jobs Finished", 4*time.Minute,
		`document.querySelectorAll('#matrix td.job[data-state="Finished"][data-type="CreateDeployment"]').length === 2`)
	b.waitFor(t, "the replica feedback", 2*time.Minute, `document.querySelector('#matrix li.workload[data-workload="Deployment/frontend"][data-desired="1"]') !== null`)
	if n := b.eval(t, `document.querySelectorAll('#matrix thead th[data-cluster]').length`); n != float64(2) {
		t.Errorf("matrix columns: %v clusters, want cluster1 and cluster2", n)
	}
	if n := b.eval(t, `document.querySelectorAll('#timeline li').length`); n.(float64) < 6 {
		t.Errorf("timeline has %v entries, want at least create, promote, finish of both jobs", n)
	}
	b.shot(t, shots, "03-deployed")

	// 4. An incompliance scales the frontend out: 2 desired replicas, the incompliance applied.
	inc := uuid.NewString()
	body, _ := json.Marshal(map[string]any{"id": inc, "policyName": "frontend-cpu", "currentValue": "93", "threshold": "80",
		"remediation": "scale-out", "subject": map[string]string{"appInstance": g.ID, "appComponent": "frontend"}})
	(&client{base: st.env["INCOMPLIANCE_URL"], token: api.token}).must(t, http.MethodPost, "/jobmanager/policies/incompliance", body, http.StatusOK, nil)
	b.waitFor(t, "the incompliance applied", 2*time.Minute, `document.querySelector('#incompliances tr[data-incompliance="`+inc+`"][data-outcome="applied"]') !== null`)
	b.waitFor(t, "2 desired replicas", 3*time.Minute, `document.querySelector('#matrix li.workload[data-workload="Deployment/frontend"][data-desired="2"]') !== null`)
	b.shot(t, shots, "04-scaled-out")

	// 5. A cancelled stop does nothing.
	b.do(t, "stop, then cancel", chromedp.Click(`#action-stop`), chromedp.WaitVisible(`#confirm`), chromedp.Click(`#confirm-cancel`))
	b.waitFor(t, "the cancel noted", 10*time.Second, `document.getElementById('action-result').textContent === 'stop cancelled' && !document.getElementById('confirm').open`)
	for _, j := range api.group(t, g.ID).Jobs {
		if j.Type == 6 {
			t.Fatalf("a cancelled stop re-opened job %s as a DeleteDeployment", j.ID)
		}
	}

	// 6. A confirmed stop undeploys the group: nothing left on the hub or the spokes.
	b.do(t, "stop, confirmed", chromedp.Click(`#action-stop`), chromedp.WaitVisible(`#confirm`))
	b.shot(t, shots, "05-confirm-stop")
	b.do(t, "confirm", chromedp.Click(`#confirm-ok`))
	b.waitFor(t, "the group Stopped", 4*time.Minute, `document.getElementById('group').dataset.state === 'Stopped'`)
	b.shot(t, shots, "06-stopped")
	kubectl := st.env["KUBECTL"]
	waitGone(t, "ManifestWorks of the group on the hub", kubectl, st.env["KUBECONFIG"], "get", "manifestworks", "-A", "-l", "app.icos.eu/instance="+g.ID, "-o", "name")
	waitGone(t, "Deployments on cluster1", kubectl, st.env["KUBECONFIG"], "get", "deployments", "-n", "guestbook", "-o", "name")
	waitGone(t, "Deployments on cluster2", kubectl, st.env["CLUSTER2_KUBECONFIG"], "get", "deployments", "-n", "guestbook", "-o", "name")

	// 7. Start it again from the page, then stop it again: the page follows both.
	b.do(t, "start, confirmed", chromedp.Click(`#action-start`), chromedp.WaitVisible(`#confirm`), chromedp.Click(`#confirm-ok`))
	b.waitFor(t, "the group Running again", 4*time.Minute, `document.getElementById('group').dataset.state === 'Running'`)
	b.do(t, "stop again", chromedp.Click(`#action-stop`), chromedp.WaitVisible(`#confirm`), chromedp.Click(`#confirm-ok`))
	b.waitFor(t, "the group Stopped again", 4*time.Minute, `document.getElementById('group').dataset.state === 'Stopped'`)

	// 8. Delete, confirmed: the group leaves the page and the API.
	b.do(t, "delete, confirmed", chromedp.Click(`#action-delete`), chromedp.WaitVisible(`#confirm`), chromedp.Click(`#confirm-ok`))
	b.waitFor(t, "the group gone from the page", time.Minute,
		`document.querySelector(`+jsString(row)+`) === null && document.getElementById('group').hidden && document.getElementById('action-result').textContent.startsWith('deleted')`)
	b.shot(t, shots, "07-deleted")
	if status := api.do(t, http.MethodGet, "/jobmanager/groups/"+g.ID, nil, nil); status != http.StatusNotFound {
		t.Errorf("GET the deleted group: %d, want 404", status)
	}
	if marker := b.eval(t, `window.noReload`); marker != "still here" {
		t.Errorf("the page was reloaded on the way (marker %v)", marker)
	}
	b.checkConsole(t)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.refused == 0 {
		t.Error("the browser never saw the bad token refused (a 401)")
	}
}

// browser is a headless Chromium with one tab, whose console is watched.
type browser struct {
	ctx context.Context
	mu  sync.Mutex
	// problems are the console errors and exceptions seen.
	problems []string
	// expect401 marks the step where the page is expected to get a 401 (a bad token): the
	// browser logs the failed request as an error, which is then the point of the step.
	expect401 bool
	refused   int
}

// startBrowser starts Chromium with the project's flags and a fresh profile; it is closed
// (and waited for) when the test ends.
func startBrowser(t *testing.T, path string) *browser {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 1000),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	b := &browser{ctx: ctx}
	// Start the browser, then watch its console from the first page on.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("starting %s: %v", path, err)
	}
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type != chromedp.ConsoleError && !m.IsException() {
				continue
			}
			b.mu.Lock()
			if b.expect401 && m.Source == "network" && strings.Contains(m.Text, "status of 401") {
				b.refused++
			} else {
				b.problems = append(b.problems, fmt.Sprintf("%s %s (%s:%d)", m.Type, m.Text, m.URL, m.Line))
			}
			b.mu.Unlock()
		}
	}()
	return b
}

func (b *browser) expect(refusal bool) {
	time.Sleep(200 * time.Millisecond) // the refusal's message may trail the page's reaction
	b.mu.Lock()
	defer b.mu.Unlock()
	b.expect401 = refusal
}

func (b *browser) do(t *testing.T, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.checkConsole(t)
		t.Fatalf("%s: %v", what, err)
	}
}

func (b *browser) eval(t *testing.T, expr string) any {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[any](expr))
	if err != nil {
		t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

// waitFor evaluates cond in the page until it is true. Evaluation through the DevTools
// protocol is not the page's own script, so the page's CSP (no eval) does not stand in its way.
func (b *browser) waitFor(t *testing.T, what string, timeout time.Duration, cond string) {
	t.Helper()
	t0 := time.Now()
	for {
		if v := b.eval(t, cond); v == true {
			t.Logf("%s after %v", what, time.Since(t0).Round(100*time.Millisecond))
			return
		}
		if time.Since(t0) > timeout {
			b.checkConsole(t)
			t.Fatalf("%s: not after %v; the page says: %v", what, timeout, b.eval(t, `document.getElementById('status').textContent + ' | ' + document.getElementById('action-result').textContent + ' | ' + document.getElementById('signin-error').textContent`))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// shot saves a screenshot of the whole page as dir/name.png.
func (b *browser) shot(t *testing.T, dir, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// checkConsole fails the test on any console error or uncaught exception of the page.
func (b *browser) checkConsole(t *testing.T) {
	t.Helper()
	time.Sleep(200 * time.Millisecond) // let the last messages arrive
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range b.problems {
		t.Errorf("browser console: %s", p)
	}
	b.problems = nil
}

// artifactDir is where the screenshots go: $TEST_ARTIFACTS/webui, else ./artifacts (which
// git ignores).
func artifactDir(t *testing.T) string {
	t.Helper()
	dir := "artifacts"
	if base := os.Getenv("TEST_ARTIFACTS"); base != "" {
		dir = filepath.Join(base, "webui")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(dir)
	t.Logf("screenshots in %s", abs)
	return abs
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// waitGone runs kubectl until it lists nothing.
func waitGone(t *testing.T, what, kubectl, kubeconfig string, args ...string) {
	t.Helper()
	t0 := time.Now()
	for {
		cmd := exec.Command(kubectl, append([]string{"--kubeconfig", kubeconfig}, args...)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr // "No resources found" goes there
		out, err := cmd.Output()
		if err == nil && len(bytes.TrimSpace(out)) == 0 {
			t.Logf("no %s (after %v)", what, time.Since(t0).Round(100*time.Millisecond))
			return
		}
		if time.Since(t0) > 2*time.Minute {
			t.Fatalf("%s still there 2m after the stop: %v\n%s%s", what, err, out, stderr.Bytes())
		}
		time.Sleep(time.Second)
	}
}

// client calls the REST API with a bearer token.
type client struct {
	base, token string
}

type restGroup struct {
	Jobs []struct {
		ID    string `json:"id"`
		Type  int    `json:"type"`
		State int    `json:"state"`
	} `json:"jobs"`
}

func (c *client) group(t *testing.T, id string) restGroup {
	t.Helper()
	var g restGroup
	c.must(t, http.MethodGet, "/jobmanager/groups/"+id, nil, http.StatusOK, &g)
	return g
}

func (c *client) must(t *testing.T, method, path string, body []byte, want int, out any) {
	t.Helper()
	if status := c.do(t, method, path, body, out); status != want {
		t.Fatalf("%s %s: %d, want %d", method, path, status, want)
	}
}

func (c *client) do(t *testing.T, method, path string, body []byte, out any) int {
	t.Helper()
	req, err := http.NewRequest(method, c.base+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	if strings.HasSuffix(path, "/groups") && method == http.MethodPost {
		req.Header.Set("Content-Type", "application/yaml")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, raw)
		}
	}
	if resp.StatusCode >= 300 {
		t.Logf("%s %s: %d %s", method, path, resp.StatusCode, bytes.TrimSpace(raw))
	}
	return resp.StatusCode
}
