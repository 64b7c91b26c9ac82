package servers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// KnativeVersion is the Knative Eventing release `make tools` builds (tests/tools/install.sh).
const KnativeVersion = "v0.46.0"

// KnativeNamespace is where Knative Eventing's own components run.
const KnativeNamespace = "knative-eventing"

// knativeManifests are the files of Knative Eventing's own config/ that a stack applies, in
// order: the namespace, service accounts, config maps, the in-memory channel's CRD, and the
// Deployments and Services of the eventing controller, the PingSource adapter, the
// multi-tenant channel-based broker (controller, ingress, filter) and the in-memory channel
// (controller, dispatcher). No webhook and no admission configuration: the hub's API server
// could not call a webhook here, so objects must carry its defaults themselves.
var knativeManifests = []string{
	"core/100-namespace.yaml",
	"core/200-eventing-serviceaccount.yaml",
	"core/200-pingsource-mt-adapter-serviceaccount.yaml",
	"core/configmaps",
	"channels/in-memory-channel/200-imc-controller-serviceaccount.yaml",
	"channels/in-memory-channel/200-imc-dispatcher-serviceaccount.yaml",
	"channels/in-memory-channel/configmaps",
	"channels/in-memory-channel/resources",
	"channels/in-memory-channel/webhooks/secret.yaml",
	"brokers/mt-channel-broker/roles/filter-serviceaccount.yaml",
	"brokers/mt-channel-broker/roles/ingress-serviceaccount.yaml",
	"brokers/mt-channel-broker/roles/ingress-serviceaccount-oidc.yaml",
	"core/deployments/controller.yaml",
	"core/deployments/pingsource-mt-adapter.yaml",
	"brokers/mt-channel-broker/deployments/controller.yaml",
	"brokers/mt-channel-broker/deployments/broker-ingress.yaml",
	"brokers/mt-channel-broker/deployments/broker-filter.yaml",
	"channels/in-memory-channel/deployments/controller.yaml",
	"channels/in-memory-channel/deployments/dispatcher.yaml",
	"channels/in-memory-channel/deployments/dispatcher-service.yaml",
}

// KnativeDir is where `make tools` put Knative Eventing: bin/ (one binary per command) and
// config/ (the module's CRDs, config maps, roles and Deployments).
func KnativeDir() string {
	return filepath.Join(filepath.Dir(BinDir()), "knative-eventing-"+KnativeVersion)
}

// KnativeOptions configure a Knative Eventing stack.
type KnativeOptions struct {
	// Brokers are the brokers ("namespace/name") the stack's users will create: their channels'
	// names resolve from the start (a name added later resolves within Go's 5 s hosts cache).
	Brokers []string
	// OIDC turns on Knative's sender identity (feature authentication-oidc, knativeoidc.go):
	// the ingress and the channel refuse an event without a valid token, the filter presents
	// each Trigger's token to its subscriber.
	OIDC bool
}

// Knative is Knative Eventing v0.46.0 running as processes against a hub: its own
// Deployments, applied from its own config/, run by a local kubelet (kubelet.go) as pods, each
// in network and mount namespaces of its own; its Services are loopback addresses of their own,
// named in a private hosts file (netns.go).
type Knative struct {
	hub   *Hub
	Dir   string
	hosts string
	// apiAddr is the API server's host:port; every pod reaches it there.
	apiAddr string

	mu sync.Mutex
	// names maps host names to loopback addresses (the hosts file).
	names map[string]string
	// services are the forwarded addresses ("ip:port"), each served on the host.
	services map[string]*forwarder
	// backends are the pods that serve each address.
	backends map[string]func() (net.Conn, error)
	nextIP   int
	ipPrefix string

	kubelet *kubelet
	// kube is the hub's client for the kubelet's polling (API warnings silenced).
	kube kubernetes.Interface
	// written are the Endpoints written, by namespace/name, with their addresses.
	written map[string]string
	// nextPodIP numbers the pods' addresses.
	nextPodIP int
	// podEnv is added to every pod's environment (knativeoidc.go: the hub's CA).
	podEnv []string
}

// StartKnative applies Knative Eventing's config to hub and starts its components; it returns
// once the controllers, the broker's ingress and filter and the channel dispatcher run.
func StartKnative(ctx context.Context, hub *Hub, opts KnativeOptions) (*Knative, error) {
	dir := filepath.Join(hub.Dir, "knative")
	if d := os.Getenv("OCM_JOBS_KNATIVE_DIR"); d != "" {
		// Keeps the pods' logs and the hosts file after the run, for debugging.
		dir = d
	}
	if err := os.MkdirAll(filepath.Join(dir, "pods"), 0o755); err != nil {
		return nil, err
	}
	u, err := url.Parse(hub.URL())
	if err != nil {
		return nil, err
	}
	// Loopback addresses of this stack: 127.X.Y.n, X and Y from the PID so that concurrent
	// stacks (other test binaries) do not meet.
	pid := os.Getpid()
	cfg := rest.CopyConfig(hub.Config)
	cfg.WarningHandler = rest.NoWarnings{}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	k := &Knative{
		hub: hub, Dir: dir, hosts: filepath.Join(dir, "hosts"), apiAddr: u.Host, kube: kube, written: map[string]string{},
		names: map[string]string{}, services: map[string]*forwarder{}, backends: map[string]func() (net.Conn, error){},
		ipPrefix: fmt.Sprintf("127.%d.%d.", 100+pid%150, 1+(pid/150)%250),
	}
	// The Services the components compute for each other, and the channels of known brokers.
	for _, svc := range []string{"broker-ingress", "broker-filter", "imc-dispatcher"} {
		k.address(svc + "." + KnativeNamespace + ".svc.cluster.local")
	}
	dispatcher := k.names["imc-dispatcher."+KnativeNamespace+".svc.cluster.local"]
	for _, b := range opts.Brokers {
		ns, name, ok := strings.Cut(b, "/")
		if !ok {
			return nil, fmt.Errorf("broker %q: want namespace/name", b)
		}
		k.names[name+"-kne-trigger-kn-channel."+ns+".svc.cluster.local"] = dispatcher
	}
	if err := k.writeHosts(); err != nil {
		return nil, err
	}
	if err := k.apply(ctx); err != nil {
		return nil, err
	}
	if opts.OIDC {
		if err := k.enableOIDC(ctx); err != nil {
			return nil, err
		}
	}
	startKubelet(k)
	err = k.waitDeployments(ctx, 5*time.Minute, "eventing-controller", "mt-broker-controller", "mt-broker-ingress",
		"mt-broker-filter", "imc-controller", "imc-dispatcher")
	if err != nil {
		k.Stop()
		return nil, err
	}
	return k, nil
}

// apply applies Knative's manifests with kubectl (server-side, as an installer would).
func (k *Knative) apply(ctx context.Context) error {
	kubectl, err := Bin("kubectl")
	if err != nil {
		return err
	}
	cfg := filepath.Join(KnativeDir(), "config")
	if _, err := os.Stat(cfg); err != nil {
		return fmt.Errorf("Knative Eventing %s not found in %s: run `make tools` first: %w", KnativeVersion, KnativeDir(), err)
	}
	for _, m := range knativeManifests {
		out, err := exec.CommandContext(ctx, kubectl, "--kubeconfig", k.hub.Kubeconfig, "apply", "--server-side",
			"--force-conflicts", "-f", filepath.Join(cfg, m)).CombinedOutput()
		if err != nil {
			return fmt.Errorf("applying Knative's %s: %w\n%s", m, err, out)
		}
	}
	return nil
}

// Apply applies a manifest (a file or directory, or "-" with stdin) to the hub with kubectl.
func (k *Knative) Apply(ctx context.Context, manifest string) error {
	kubectl, err := Bin("kubectl")
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, kubectl, "--kubeconfig", k.hub.Kubeconfig, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(manifest)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("kubectl apply: %w\n%s", err, out)
	}
	return nil
}

// waitDeployments waits until every named Deployment of Knative's namespace is Available.
func (k *Knative) waitDeployments(ctx context.Context, timeout time.Duration, names ...string) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		var missing []string
		for _, n := range names {
			d, err := k.hub.Kube.AppsV1().Deployments(KnativeNamespace).Get(ctx, n, metav1.GetOptions{})
			if err != nil || d.Status.AvailableReplicas < 1 {
				missing = append(missing, n)
			}
		}
		if len(missing) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("Knative Eventing: %s not available after %s; pods:\n%s", strings.Join(missing, ", "),
				timeout, k.PodLogs(1500))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// address returns the loopback address of a host name, allocating one the first time.
// The caller holds no lock; the hosts file is rewritten by the caller.
func (k *Knative) address(name string) string {
	if ip, ok := k.names[name]; ok {
		return ip
	}
	k.nextIP++
	ip := k.ipPrefix + itoa(k.nextIP)
	k.names[name] = ip
	return ip
}

// writeHosts rewrites the private hosts file in place (the bind mounts keep its inode).
func (k *Knative) writeHosts() error {
	var b strings.Builder
	b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost\n")
	names := make([]string, 0, len(k.names))
	for n := range k.names {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(&b, "%s\t%s\n", k.names[n], n)
	}
	f, err := os.OpenFile(k.hosts, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.WriteString(b.String())
	return errors.Join(err, f.Close())
}

// serve makes ip:port an address served on the host, forwarding to its current backend.
func (k *Knative) serve(addr string) error {
	if _, ok := k.services[addr]; ok {
		return nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("serving %s: %w", addr, err)
	}
	k.services[addr] = forward(l, func() (net.Conn, error) {
		k.mu.Lock()
		dial := k.backends[addr]
		k.mu.Unlock()
		if dial == nil {
			return nil, fmt.Errorf("no backend for %s", addr)
		}
		return dial()
	})
	if k.kubelet != nil {
		k.kubelet.reach(addr)
	}
	return nil
}

// Expose gives a server of this machine (hostAddr, e.g. a function on 127.0.0.1:port) an
// address of its own on port 80 that every Knative component reaches, also resolved as name,
// and returns its URL by address (http://127.x.y.n): a name added now would resolve in a
// running component only once Go's hosts cache (5 s) expires.
func (k *Knative) Expose(name, hostAddr string) (string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	ip := k.address(name)
	addr := ip + ":80"
	k.backends[addr] = dialHost(hostAddr)
	if err := k.serve(addr); err != nil {
		return "", err
	}
	return "http://" + ip, k.writeHosts()
}

// HostURL turns a URL a Knative component computed (http://broker-ingress.knative-eventing.
// svc.cluster.local/ns/name) into one this machine reaches (the name's loopback address).
func (k *Knative) HostURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	k.mu.Lock()
	ip, ok := k.names[u.Hostname()]
	k.mu.Unlock()
	if !ok {
		return "", fmt.Errorf("%s: no such name in the Knative stack", u.Hostname())
	}
	port := u.Port()
	if port == "" {
		port = "80"
	}
	u.Host = net.JoinHostPort(ip, port)
	return u.String(), nil
}

// BrokerURL is the address of a broker's ingress as this machine reaches it.
func (k *Knative) BrokerURL(namespace, broker string) string {
	u, _ := k.HostURL("http://broker-ingress." + KnativeNamespace + ".svc.cluster.local/" + namespace + "/" + broker)
	return u
}

// syncServices gives every Service with a selector (and every ExternalName to a known name)
// its address, its forwarders and its Endpoints once a pod of ours serves it.
func (k *Knative) syncServices(ctx context.Context, pods map[string]*podProc) {
	svcs, err := k.kube.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return
	}
	k.mu.Lock()
	changed := false
	type endpoints struct {
		svc  corev1.Service
		ip   string
		pods []*podProc
	}
	var eps []endpoints
	for _, s := range svcs.Items {
		name := s.Name + "." + s.Namespace + ".svc.cluster.local"
		if s.Spec.Type == corev1.ServiceTypeExternalName {
			if ip, ok := k.names[strings.TrimSuffix(s.Spec.ExternalName, ".")]; ok && k.names[name] != ip {
				k.names[name] = ip
				changed = true
			}
			continue
		}
		if len(s.Spec.Selector) == 0 {
			continue
		}
		if _, ok := k.names[name]; !ok {
			changed = true
		}
		ip := k.address(name)
		sel := labels.SelectorFromSet(s.Spec.Selector)
		var backs []*podProc
		for _, p := range pods {
			if p.ns == s.Namespace && p.running() && sel.Matches(labels.Set(p.labels)) {
				backs = append(backs, p)
			}
		}
		for _, port := range s.Spec.Ports {
			addr := net.JoinHostPort(ip, itoa(int(port.Port)))
			if err := k.serve(addr); err != nil {
				continue
			}
			if len(backs) == 0 {
				delete(k.backends, addr)
				continue
			}
			p := backs[0]
			target := port.TargetPort.String()
			if port.TargetPort.IntValue() == 0 {
				target = itoa(p.namedPort(port.TargetPort.String(), int(port.Port)))
			}
			k.backends[addr] = func() (net.Conn, error) { return p.net.Dial("127.0.0.1:" + target) }
		}
		if len(backs) > 0 {
			eps = append(eps, endpoints{svc: s, ip: ip, pods: backs})
		}
	}
	if changed {
		_ = k.writeHosts()
	}
	k.mu.Unlock()
	for _, e := range eps {
		k.writeEndpoints(ctx, e.svc, e.pods)
	}
}

// writeEndpoints records a Service's ready pods, as the endpoints controller would.
func (k *Knative) writeEndpoints(ctx context.Context, s corev1.Service, pods []*podProc) {
	var subset corev1.EndpointSubset
	var sig []string
	for _, p := range pods {
		subset.Addresses = append(subset.Addresses, corev1.EndpointAddress{IP: p.ip,
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: p.ns, Name: p.name}})
		sig = append(sig, p.ip)
	}
	key := s.Namespace + "/" + s.Name
	k.mu.Lock()
	same := k.written[key] == strings.Join(sig, ",")
	k.mu.Unlock()
	if same {
		return
	}
	for _, port := range s.Spec.Ports {
		n := port.TargetPort.IntValue()
		if n == 0 {
			n = pods[0].namedPort(port.TargetPort.String(), int(port.Port))
		}
		subset.Ports = append(subset.Ports, corev1.EndpointPort{Name: port.Name, Port: int32(n), Protocol: port.Protocol})
	}
	want := corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: s.Name, Namespace: s.Namespace, Labels: s.Labels},
		Subsets: []corev1.EndpointSubset{subset}}
	cur, err := k.kube.CoreV1().Endpoints(s.Namespace).Get(ctx, s.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = k.kube.CoreV1().Endpoints(s.Namespace).Create(ctx, &want, metav1.CreateOptions{})
	case err == nil:
		cur.Subsets = want.Subsets
		_, err = k.kube.CoreV1().Endpoints(s.Namespace).Update(ctx, cur, metav1.UpdateOptions{})
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "knative kubelet: Endpoints %s: %v\n", key, err)
		return
	}
	k.mu.Lock()
	k.written[key] = strings.Join(sig, ",")
	k.mu.Unlock()
}

// addresses are the forwarded addresses every pod must reach.
func (k *Knative) addresses() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([]string, 0, len(k.services))
	for a := range k.services {
		out = append(out, a)
	}
	return out
}

// Components lists what runs: one line per pod (namespace/name and its command).
func (k *Knative) Components() []string {
	if k == nil || k.kubelet == nil {
		return nil
	}
	return k.kubelet.components()
}

// Stop stops every pod process and forwarder, and removes nothing from the hub (it stops too).
func (k *Knative) Stop() {
	if k == nil {
		return
	}
	if k.kubelet != nil {
		k.kubelet.stop()
	}
	k.mu.Lock()
	for _, f := range k.services {
		f.Close()
	}
	k.services = map[string]*forwarder{}
	k.mu.Unlock()
}

// PodLogs returns the end (up to n bytes) of every pod's log, for failure messages.
func (k *Knative) PodLogs(n int) string {
	logs, _ := filepath.Glob(filepath.Join(k.Dir, "pods", "*.log"))
	var b strings.Builder
	for _, l := range logs {
		data, err := os.ReadFile(l)
		if err != nil {
			continue
		}
		if len(data) > n {
			data = data[len(data)-n:]
		}
		fmt.Fprintf(&b, "==> %s <==\n%s\n", filepath.Base(l), data)
	}
	return b.String()
}

// ReadyCondition is a Knative object's Ready condition: its status and, when not True, why.
func ReadyCondition(u *unstructured.Unstructured) (status, why string) {
	cs, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range cs {
		m, _ := c.(map[string]any)
		if m["type"] == "Ready" {
			return fmt.Sprint(m["status"]), fmt.Sprintf("%v %v", m["reason"], m["message"])
		}
	}
	return "", "no Ready condition"
}
