// Package packaging tests how ocm-jobs is installed: the kustomize overlays of k8s/ against a
// real kube-apiserver carrying the Knative Serving/Eventing and OCM CRDs, the RBAC of each
// function's ServiceAccount with RBAC authorization on, the Triggers against the functions'
// subscriptions, and the root package against func's Go scaffolding.
package packaging

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/ocm-jobs/ocm-jobs/tests/servers"
)

var env *servers.Env

func TestMain(m *testing.M) {
	servers.Main(m, servers.Need{Redis: true, Hub: true, Knative: true}, &env)
}

// Namespace is where k8s/ installs ocm-jobs.
const Namespace = "ocm-jobs"

// repoRoot is the module root (tests run in their package directory).
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// localOverlay is `make run`'s overlay (tests/localstack), not an install: no Knative
// Serving, the functions run as processes. Only the dry-run check takes it.
const localOverlay = "local"

// overlays are the install overlays under k8s/overlays (all but localOverlay); dev and
// production must be among them.
func overlays(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(repoRoot(t), "k8s", "overlays"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() && e.Name() != localOverlay {
			out = append(out, e.Name())
		}
	}
	for _, want := range []string{"dev", "production"} {
		if !contains(out, want) {
			t.Fatalf("k8s/overlays/%s is missing (have %v)", want, out)
		}
	}
	return out
}

// kubectl runs the kubectl of the tool cache against the test hub.
func kubectl(ctx context.Context, stdin []byte, args ...string) ([]byte, error) {
	bin, err := servers.Bin("kubectl")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"--kubeconfig", env.Hub.Kubeconfig}, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("kubectl %s: %w\n%s%s", strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return out, nil
}

// render is `kubectl kustomize` of a directory under k8s/.
func render(t *testing.T, dir string) []byte {
	t.Helper()
	out, err := kubectl(context.Background(), nil, "kustomize", filepath.Join(repoRoot(t), "k8s", dir))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// decode splits multi-document YAML into objects; numbers become int64 where they are
// integers, as the API server reads them.
func decode(t *testing.T, doc []byte) []*unstructured.Unstructured {
	t.Helper()
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(doc)))
	var out []*unstructured.Unstructured
	for {
		raw, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("reading YAML: %v", err)
		}
		js, err := yaml.YAMLToJSON(raw)
		if err != nil {
			t.Fatalf("decoding YAML: %v", err)
		}
		var m map[string]any
		if err := utiljson.Unmarshal(js, &m); err != nil {
			t.Fatalf("decoding YAML: %v", err)
		}
		if m == nil {
			continue
		}
		out = append(out, &unstructured.Unstructured{Object: m})
	}
}

// ofKind returns the objects of one kind, by name.
func ofKind(objs []*unstructured.Unstructured, kind string) map[string]*unstructured.Unstructured {
	out := map[string]*unstructured.Unstructured{}
	for _, o := range objs {
		if o.GetKind() == kind {
			out[o.GetName()] = o
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
