package servers

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	clusterclient "open-cluster-management.io/api/client/cluster/clientset/versioned"
	operatorclient "open-cluster-management.io/api/client/operator/clientset/versioned"
	workclient "open-cluster-management.io/api/client/work/clientset/versioned"
	operatorv1 "open-cluster-management.io/api/operator/v1"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Module versions of the CRD YAML a hub is started with. OCM's comes from go.mod; Knative's
// modules are not dependencies, so their versions are pinned here.
const (
	ocmAPIModule          = "open-cluster-management.io/api"
	knativeServingModule  = "knative.dev/serving@v0.51.0"
	knativeEventingModule = "knative.dev/eventing@v0.46.0"
)

// ocmCRDFiles are the OCM CRDs a hub carries, relative to the api module.
var ocmCRDFiles = []string{
	"work/v1/0000_00_work.open-cluster-management.io_manifestworks.crd.yaml",
	"work/v1/0000_01_work.open-cluster-management.io_appliedmanifestworks.crd.yaml",
	"cluster/v1/0000_00_clusters.open-cluster-management.io_managedclusters.crd.yaml",
	"cluster/v1beta1/0000_02_clusters.open-cluster-management.io_placements.crd.yaml",
	"cluster/v1beta1/0000_03_clusters.open-cluster-management.io_placementdecisions.crd.yaml",
	"cluster/v1alpha1/0000_05_clusters.open-cluster-management.io_addonplacementscores.crd.yaml",
	// Cluster sets and their bindings: what a Placement chooses from (tests/servers/placement.go).
	"cluster/v1beta2/0000_00_clusters.open-cluster-management.io_managedclustersets.crd.yaml",
	"cluster/v1beta2/0000_01_clusters.open-cluster-management.io_managedclustersetbindings.crd.yaml",
	"operator/v1/0000_01_operator.open-cluster-management.io_clustermanagers.crd.yaml",
}

// HubOptions configure an API server.
type HubOptions struct {
	// Dir holds the kubeconfig and logs; a new temporary directory when empty.
	Dir string
	// Knative adds the Knative Serving and Eventing CRDs.
	Knative bool
}

// Hub is a kube-apiserver + etcd on loopback with OCM's CRDs, started by envtest. It serves
// as the OCM hub and, with an Agent, as a managed cluster too.
type Hub struct {
	Env *envtest.Environment
	// Config is an admin (system:masters) REST config.
	Config *rest.Config
	// Kubeconfig is the path of an admin kubeconfig file.
	Kubeconfig string
	Dir        string

	Kube kubernetes.Interface
	Work workclient.Interface
	OCM  clusterclient.Interface

	ownDir bool
	kcm    *Process
	// stopped releases the thread that started kube-apiserver and etcd (see onOwnThread).
	stopped  chan struct{}
	stopOnce sync.Once
	// apiserver is the kube-apiserver once RestartAPIServer replaced envtest's.
	apiserver *Process
}

// StartHub starts etcd and kube-apiserver from the tool cache with OCM's CRDs installed.
func StartHub(opts HubOptions) (*Hub, error) {
	ownDir := opts.Dir == ""
	if ownDir {
		d, err := os.MkdirTemp("", "ocm-jobs-hub-")
		if err != nil {
			return nil, err
		}
		opts.Dir = d
	}
	// envtest starts kube-apiserver and etcd through wrappers that give them a parent-death
	// signal, as every other server here has.
	wrapped := map[string]string{}
	for _, b := range []string{"kube-apiserver", "etcd"} {
		bin, err := Bin(b)
		if err != nil {
			return nil, err
		}
		if wrapped[b], err = deathSignalWrapper(filepath.Join(opts.Dir, "bin"), b, bin); err != nil {
			return nil, err
		}
	}
	apiDir, err := moduleDir(ocmAPIModule)
	if err != nil {
		return nil, err
	}
	var paths []string
	for _, f := range ocmCRDFiles {
		paths = append(paths, filepath.Join(apiDir, f))
	}
	if opts.Knative {
		serving, err := moduleDir(knativeServingModule)
		if err != nil {
			return nil, err
		}
		eventing, err := moduleDir(knativeEventingModule)
		if err != nil {
			return nil, err
		}
		paths = append(paths, filepath.Join(serving, "config/core/300-resources"), filepath.Join(eventing, "config/core/resources"))
	}
	env := &envtest.Environment{
		// kubectl comes from here; the servers are the wrappers, named explicitly so that
		// KUBEBUILDER_ASSETS cannot bypass them.
		BinaryAssetsDirectory:    BinDir(),
		ControlPlane:             envtest.ControlPlane{Etcd: &envtest.Etcd{Path: wrapped["etcd"]}},
		CRDInstallOptions:        envtest.CRDInstallOptions{Paths: paths, ErrorIfPathMissing: true},
		ControlPlaneStartTimeout: 2 * time.Minute,
		ControlPlaneStopTimeout:  30 * time.Second,
	}
	apiserver := env.ControlPlane.GetAPIServer()
	// The OIDC discovery document names the JWKS where the API server really listens (by
	// default it names the machine's first interface): Knative's OIDC verifier follows it.
	apiserver.Configure().Set("external-hostname", "127.0.0.1")
	apiserver.Path = wrapped["kube-apiserver"]
	apiserver.Out = mustLog(filepath.Join(opts.Dir, "apiserver.log"))
	apiserver.Err = apiserver.Out
	h := &Hub{Env: env, Dir: opts.Dir, ownDir: ownDir, stopped: make(chan struct{})}
	var cfg *rest.Config
	err = onOwnThread(func() error {
		var err error
		cfg, err = env.Start()
		return err
	}, h.stopped)
	if err != nil {
		_ = env.Stop()
		return nil, fmt.Errorf("starting kube-apiserver + etcd (envtest, binaries in %s): %w", BinDir(), err)
	}
	h.Config = cfg
	admin, err := env.AddUser(envtest.User{Name: "ocm-jobs-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		h.Stop()
		return nil, fmt.Errorf("adding admin user: %w", err)
	}
	h.Config = rest.CopyConfig(admin.Config())
	h.Config.QPS, h.Config.Burst = 1000, 2000
	kc, err := admin.KubeConfig()
	if err != nil {
		h.Stop()
		return nil, err
	}
	h.Kubeconfig = filepath.Join(opts.Dir, "kubeconfig")
	if err := os.WriteFile(h.Kubeconfig, kc, 0o600); err != nil {
		h.Stop()
		return nil, err
	}
	if h.Kube, err = kubernetes.NewForConfig(h.Config); err == nil {
		if h.Work, err = workclient.NewForConfig(h.Config); err == nil {
			h.OCM, err = clusterclient.NewForConfig(h.Config)
		}
	}
	if err != nil {
		h.Stop()
		return nil, err
	}
	if err := h.startControllers(); err != nil {
		h.Stop()
		return nil, err
	}
	// Every OCM hub has the ClusterManager cluster-manager; its UID is the default hub id.
	cm := &operatorv1.ClusterManager{ObjectMeta: metav1.ObjectMeta{Name: "cluster-manager"}}
	oc, err := operatorclient.NewForConfig(h.Config)
	if err == nil {
		_, err = oc.OperatorV1().ClusterManagers().Create(context.Background(), cm, metav1.CreateOptions{})
	}
	if err != nil && !apierrors.IsAlreadyExists(err) {
		h.Stop()
		return nil, fmt.Errorf("creating ClusterManager cluster-manager: %w", err)
	}
	return h, nil
}

// HubID is the UID of the hub's ClusterManager cluster-manager (the functions' default hub id).
func (h *Hub) HubID(ctx context.Context) (string, error) {
	oc, err := operatorclient.NewForConfig(h.Config)
	if err != nil {
		return "", err
	}
	cm, err := oc.OperatorV1().ClusterManagers().Get(ctx, "cluster-manager", metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	return string(cm.UID), nil
}

// URL is the API server's address.
func (h *Hub) URL() string { return h.Config.Host }

// startControllers runs kube-controller-manager against the API server with the controllers
// a managed cluster needs here: the garbage collector (the work agent deletes applied objects
// with Foreground propagation, which only the collector completes), the namespace controller
// and the workload controllers (so Deployments and StatefulSets get real status and replica
// counts to feed back; no scheduler or kubelet runs, so their pods stay Pending).
func (h *Hub) startControllers() error {
	bin, err := Bin("kube-controller-manager")
	if err != nil {
		return err
	}
	p, err := startProcess("kube-controller-manager", filepath.Join(h.Dir, "kube-controller-manager.log"), nil, bin,
		"--kubeconfig="+h.Kubeconfig, "--leader-elect=false", "--secure-port=0",
		"--controllers=garbagecollector,namespace,deployment,replicaset,statefulset,daemonset",
		"--concurrent-gc-syncs=5", "--v=1")
	if err != nil {
		return err
	}
	h.kcm = p
	time.Sleep(300 * time.Millisecond)
	if p.Exited() {
		return fmt.Errorf("kube-controller-manager exited at start; log %s:\n%s", p.Log, p.tail())
	}
	return nil
}

// RestartAPIServer kills the hub's kube-apiserver (SIGKILL), waits down, and starts it again
// with the same arguments — same port, certificates and etcd, so every client's kubeconfig
// stays valid — and returns once it is ready. etcd keeps running: nothing stored is lost.
func (h *Hub) RestartAPIServer(ctx context.Context, down time.Duration) error {
	args, err := h.apiServerArgs()
	if err != nil {
		return err
	}
	if h.apiserver != nil {
		h.apiserver.Kill()
	} else {
		pid, err := childPID("kube-apiserver", "--secure-port="+h.port())
		if err != nil {
			return err
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			return fmt.Errorf("killing kube-apiserver %d: %w", pid, err)
		}
	}
	select {
	case <-ctx.Done():
	case <-time.After(down):
	}
	bin, err := Bin("kube-apiserver")
	if err != nil {
		return err
	}
	p, err := startProcess("kube-apiserver", filepath.Join(h.Dir, "apiserver.log"), nil, bin, args...)
	if err != nil {
		return err
	}
	h.apiserver = p
	// Each probe is bounded: on a loaded machine one /readyz can hang until the API server's own
	// request timeout (60 s, then a reset stream), which would eat the whole wait.
	return waitFor(ctx, p, 3*time.Minute, func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := h.Kube.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err
	})
}

// apiServerArgs are the arguments the running kube-apiserver was started with.
func (h *Hub) apiServerArgs() ([]string, error) {
	if h.apiserver != nil {
		return h.apiserver.cmd.Args[1:], nil
	}
	pid, err := childPID("kube-apiserver", "--secure-port="+h.port())
	if err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return nil, err
	}
	args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	return args[1:], nil
}

// port is the API server's secure port.
func (h *Hub) port() string {
	u, err := url.Parse(h.Config.Host)
	if err != nil {
		return ""
	}
	return u.Port()
}

// childPID finds the child process of this one running command name with an argument arg.
func childPID(name, arg string) (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	me := strconv.Itoa(os.Getpid())
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// pid (comm) state ppid …: comm may hold spaces, so read after its closing paren.
		rest := string(stat)
		if i := strings.LastIndexByte(rest, ')'); i >= 0 {
			rest = rest[i+1:]
		}
		if f := strings.Fields(rest); len(f) < 2 || f[1] != me {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		args := strings.Split(string(cmdline), "\x00")
		if filepath.Base(args[0]) != name {
			continue
		}
		for _, a := range args[1:] {
			if a == arg {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("no %s child process with %s", name, arg)
}

// Stop stops kube-apiserver and etcd and removes their data (and Dir, if StartHub made it).
func (h *Hub) Stop() {
	h.stopOnce.Do(func() {
		h.kcm.Stop(5 * time.Second)
		h.apiserver.Stop(10 * time.Second)
		if h.Env != nil {
			_ = h.Env.Stop()
		}
		close(h.stopped)
		if h.ownDir {
			_ = os.RemoveAll(h.Dir)
		}
	})
}

// EnsureNamespace creates a namespace if it does not exist.
func (h *Hub) EnsureNamespace(ctx context.Context, name string) error {
	_, err := h.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", name, err)
	}
	return nil
}

// moduleDir returns the directory of a module in the module cache, downloading it if needed.
// A module named without a version is the one go.mod requires (asked of `go list -m`, which
// works from anywhere inside this module, as tests and `make run` are).
func moduleDir(mod string) (string, error) {
	var out []byte
	var err error
	if strings.Contains(mod, "@") {
		out, err = exec.Command("go", "mod", "download", "-json", mod).Output()
	} else {
		out, err = exec.Command("go", "list", "-m", "-json", mod).Output()
	}
	if err != nil {
		return "", fmt.Errorf("locating module %s: %w", mod, err)
	}
	var info struct {
		Dir   string
		Error any
	}
	if err := json.Unmarshal(out, &info); err != nil {
		return "", fmt.Errorf("locating module %s: %w", mod, err)
	}
	if info.Dir == "" {
		if strings.Contains(mod, "@") {
			return "", fmt.Errorf("module %s: not in the module cache: %v", mod, info.Error)
		}
		return moduleDir(mod + "@" + versionOf(mod))
	}
	return info.Dir, nil
}

// versionOf is the version go.mod requires of mod.
func versionOf(mod string) string {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", mod).Output()
	if err != nil {
		return "latest"
	}
	return strings.TrimSpace(string(out))
}

func mustLog(path string) *os.File {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return os.Stderr
	}
	return f
}
