package packaging

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/ocm-jobs/ocm-jobs/tests/servers"
)

// FuncModule is the func CLI whose Go scaffolding the image is built with (tests/tools/install.sh).
const FuncModule = "knative.dev/func@v0.44.0"

// funcYAML is the part of func.yaml the build depends on.
type funcYAML struct {
	SpecVersion string `json:"specVersion"`
	Name        string `json:"name"`
	Runtime     string `json:"runtime"`
	Registry    string `json:"registry"`
	Created     string `json:"created"`
	Invoke      string `json:"invoke"`
	Build       struct {
		Builder string `json:"builder"`
	} `json:"build"`
}

// TestFuncScaffoldingServesTheRootPackage does what func's host builder does with the root
// package — detect the method signature the way func does, take the matching Go scaffolding
// from the func module itself, build it against this tree — then runs the result against a
// real Redis and checks that func-go's server hands CloudEvents and health checks to our code.
func TestFuncScaffoldingServesTheRootPackage(t *testing.T) {
	root := repoRoot(t)
	raw, err := os.ReadFile(filepath.Join(root, "func.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var f funcYAML
	if err := yaml.UnmarshalStrict(raw, &f); err != nil {
		t.Fatalf("func.yaml: %v", err)
	}
	if f.Name != "ocm-jobs" || f.Runtime != "go" || f.Build.Builder != "host" || f.SpecVersion == "" || f.Created == "" || f.Registry == "" {
		t.Errorf("func.yaml %+v: want name ocm-jobs, runtime go, builder host, and the fields a build writes (specVersion, created, registry) committed", f)
	}
	// invoke: http because the CloudEvents scaffolding serves nothing but CloudEvents at /, and
	// the REST API shares the process (see function.go's package comment).
	if f.Invoke != "http" {
		t.Errorf("func.yaml invoke %q, want http", f.Invoke)
	}
	static, instanced := detectSignature(t, root)
	if static == instanced {
		t.Fatalf("root package: package-level Handle %v, New %v; func needs exactly one of them", static, instanced)
	}
	kind := "static"
	if instanced {
		kind = "instanced"
	}
	invoke := map[string]string{"http": "http", "cloudevent": "cloudevents"}[f.Invoke]
	scaffold := funcScaffolding(t, "go/scaffolding/"+kind+"-"+invoke)

	// The func-go the scaffolding requires is the one image.sh pins.
	want := regexp.MustCompile(`knative\.dev/func-go (v\S+)`).FindStringSubmatch(string(scaffold["go.mod"]))
	script, err := os.ReadFile(filepath.Join(root, "tests", "tools", "image.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if want == nil || !strings.Contains(string(script), "FUNC_GO_VERSION:-"+want[1]+"}") {
		t.Errorf("func's scaffolding requires func-go %v; tests/tools/image.sh must pin the same", want)
	}

	dir := t.TempDir()
	for name, content := range scaffold {
		if name == "f" { // a link to the function root, replaced as func does
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, name), content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(root, filepath.Join(dir, "f")); err != nil {
		t.Fatal(err)
	}
	modfile := filepath.Join(dir, "scaffold", "go.mod")
	if out, err := exec.Command("bash", filepath.Join(root, "tests", "tools", "image.sh"), "modfile", modfile).CombinedOutput(); err != nil {
		t.Fatalf("image.sh modfile: %v\n%s", err, out)
	}
	bin := filepath.Join(dir, "f.bin")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = dir
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-buildvcs=false -modfile="+modfile+" -mod=mod")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("func's %s-%s scaffolding does not compile against the root package: %v\n%s", kind, invoke, err, out)
	}
	checkServes(t, bin)
}

// TestImageLayout checks the OCI image `make image` built with the func CLI: an index of
// Linux platforms whose images run /func/f, and whose amd64 binary serves as the scaffolding
// does.
func TestImageLayout(t *testing.T) {
	layout := filepath.Join(repoRoot(t), ".func", "image")
	idx := readJSON[ociIndex](t, filepath.Join(layout, "index.json"), "run `make image` first: it builds the image with the func CLI")
	platforms := map[string]ociDescriptor{}
	for _, m := range idx.Manifests {
		p := m.Platform.OS + "/" + m.Platform.Architecture
		if m.Platform.Variant != "" {
			p += "/" + m.Platform.Variant
		}
		platforms[p] = m
	}
	for _, p := range []string{"linux/amd64", "linux/arm64"} {
		if _, ok := platforms[p]; !ok {
			t.Errorf("image has no %s (has %v)", p, idx.Manifests)
		}
	}
	amd64, ok := platforms["linux/amd64"]
	if !ok {
		t.FailNow()
	}
	manifest := readJSON[ociManifest](t, blob(layout, amd64.Digest), "")
	config := readJSON[ociConfig](t, blob(layout, manifest.Config.Digest), "")
	cmd := append(append([]string(nil), config.Config.Entrypoint...), config.Config.Cmd...)
	if len(cmd) == 0 || cmd[0] != "/func/f" {
		t.Errorf("image runs %v, want /func/f", cmd)
	}
	var bin []byte
	for _, l := range manifest.Layers {
		if b := fileInLayer(t, blob(layout, l.Digest), "func/f"); b != nil {
			bin = b
		}
	}
	if bin == nil {
		t.Fatal("no /func/f in the amd64 image's layers")
	}
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	checkServes(t, path)
}

// detectSignature reports what func's Go detector reports: whether any .go file of the
// function root (tests included) declares a package-level Handle (static) or New (instanced).
func detectSignature(t *testing.T, root string) (static, instanced bool) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(root, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range files {
		parsed, err := parser.ParseFile(token.NewFileSet(), file, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		for _, d := range parsed.Decls {
			if fn, ok := d.(*ast.FuncDecl); ok && fn.Recv == nil {
				static = static || fn.Name.Name == "Handle"
				instanced = instanced || fn.Name.Name == "New"
			}
		}
	}
	return static, instanced
}

// funcScaffolding returns the files of one scaffolding directory from the templates func
// embeds (a zip written as a Go byte slice in generate/zz_filesystem_generated.go).
func funcScaffolding(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out, err := exec.Command("go", "mod", "download", "-json", FuncModule).Output()
	if err != nil {
		t.Fatalf("go mod download %s: %v", FuncModule, err)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		t.Fatalf("go mod download %s: %v %s", FuncModule, err, out)
	}
	src, err := os.ReadFile(filepath.Join(mod.Dir, "generate", "zz_filesystem_generated.go"))
	if err != nil {
		t.Fatal(err)
	}
	var hexDigits bytes.Buffer
	for _, m := range regexp.MustCompile(`0x([0-9a-f]{2})`).FindAllSubmatch(src, -1) {
		hexDigits.Write(m[1])
	}
	zipped, err := hex.DecodeString(hexDigits.String())
	if err != nil {
		t.Fatal(err)
	}
	zr, err := zip.NewReader(bytes.NewReader(zipped), int64(len(zipped)))
	if err != nil {
		t.Fatalf("func's embedded templates: %v", err)
	}
	files := map[string][]byte{}
	for _, zf := range zr.File {
		if path.Dir(zf.Name) != dir || strings.HasSuffix(zf.Name, "/") {
			continue
		}
		rc, err := zf.Open()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		files[path.Base(zf.Name)] = b
	}
	if files["main.go"] == nil || files["go.mod"] == nil {
		t.Fatalf("func %s has no scaffolding %s", FuncModule, dir)
	}
	return files
}

// checkServes runs a built function binary as a Knative Service would (all four functions,
// real Redis) and checks that func-go's server answers the health paths and hands CloudEvents
// to the root package.
func checkServes(t *testing.T, bin string) {
	t.Helper()
	port, err := servers.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", fmt.Sprint(port))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := exec.CommandContext(ctx, bin)
	// As in k8s/: the JWT key of the REST API from a Secret, the hub from the ServiceAccount
	// (here the test hub's kubeconfig).
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Env = append(os.Environ(), "LISTEN_ADDRESS="+addr, "REDIS_URL="+env.Redis.URL(), "HUB_ID=packaging-test",
		"LOG_LEVEL=debug", "KUBECONFIG="+env.Hub.Kubeconfig, "KEYCLOAK_PUBLIC_KEY="+base64.StdEncoding.EncodeToString(der),
		// What is checked here is the routing; event authentication has its own tests.
		"AUTH_CLOUDEVENTS=false")
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("function log:\n%s", logs.String())
		}
	}()
	base := "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/health/readiness")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never became ready (last: %v)", bin, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if status, _ := get(t, base+"/health/liveness"); status != http.StatusOK {
		t.Errorf("/health/liveness: %d", status)
	}
	// An event type no function subscribes to: only the root package's router says so.
	req, _ := http.NewRequest(http.MethodPost, base+"/", strings.NewReader(`{}`))
	req.Header.Set("Ce-Specversion", "1.0")
	req.Header.Set("Ce-Id", "packaging-1")
	req.Header.Set("Ce-Source", "/tests/packaging")
	req.Header.Set("Ce-Type", "eu.icos.nothing.v1")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "is not handled by this process") {
		t.Errorf("unsubscribed event type: %d %q, want 400 from the root router", resp.StatusCode, body)
	}
	// The REST API shares the process: its routes reach the jobs function, which wants a token.
	if status, body := get(t, base+"/jobmanager/groups"); status != http.StatusUnauthorized {
		t.Errorf("GET /jobmanager/groups without a token: %d %q, want 401 from the REST API", status, body)
	}
	// A request that is no CloudEvent is refused by our server, not answered 2xx.
	if status, body := get(t, base+"/"); status < 400 || status >= 500 {
		t.Errorf("GET / (no CloudEvent): %d %q, want 4xx", status, body)
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// OCI image layout, as much as the test reads.
type (
	ociDescriptor struct {
		Digest   string `json:"digest"`
		Platform struct {
			OS           string `json:"os"`
			Architecture string `json:"architecture"`
			Variant      string `json:"variant"`
		} `json:"platform"`
	}
	ociIndex    struct{ Manifests []ociDescriptor }
	ociManifest struct {
		Config ociDescriptor
		Layers []ociDescriptor
	}
	ociConfig struct {
		Config struct {
			Entrypoint []string
			Cmd        []string
		} `json:"config"`
	}
)

func blob(layout, digest string) string {
	return filepath.Join(layout, "blobs", strings.Replace(digest, ":", string(filepath.Separator), 1))
}

func readJSON[T any](t *testing.T, file, hint string) T {
	t.Helper()
	var v T
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v %s", err, hint)
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return v
}

// fileInLayer returns the content of name in a gzipped tar layer, nil if absent.
func fileInLayer(t *testing.T, layer, name string) []byte {
	t.Helper()
	fh, err := os.Open(layer)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	gz, err := gzip.NewReader(fh)
	if err != nil {
		t.Fatalf("%s: %v", layer, err)
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			t.Fatalf("%s: %v", layer, err)
		}
		if strings.TrimPrefix(h.Name, "/") == name && h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
}
