package servers

import (
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// knativeImage is the image prefix of Knative Eventing's own Deployments (as its config/
// names them, and as the eventing controller names the ApiServerSource adapter): the rest of
// the image is the command, built by `make tools` into KnativeDir()/bin.
const knativeImage = "ko://knative.dev/eventing/cmd/"

// kubelet runs the pods of Knative's images that the hub's controllers create (Deployments →
// ReplicaSets → Pods, by the hub's kube-controller-manager), as a kubelet would: one process
// per pod, in its own network and mount namespaces, its env resolved from the pod's spec,
// the pod marked Running and Ready, stopped when the pod goes. It polls the hub (100 ms).
type kubelet struct {
	k      *Knative
	cancel context.CancelFunc
	done   chan struct{}

	mu   sync.Mutex
	pods map[string]*podProc // by pod UID
	// reachable are the addresses every pod's namespace forwards to this machine.
	reachable []string
	exited    map[string]time.Time // pod UID → when its process last exited
}

// podProc is one pod's process.
type podProc struct {
	ns, name, uid string
	labels        map[string]string
	ports         map[string]int
	ip            string
	bin           string
	proc          *Process
	net           *netNS
	fwd           []*forwarder
	reached       map[string]bool
	statusDone    bool
}

func (p *podProc) running() bool { return p.proc != nil && !p.proc.Exited() && p.net != nil }

// namedPort is the container port of that name (or def).
func (p *podProc) namedPort(name string, def int) int {
	if n, ok := p.ports[name]; ok {
		return n
	}
	return def
}

func startKubelet(k *Knative) *kubelet {
	ctx, cancel := context.WithCancel(context.Background())
	kl := &kubelet{k: k, cancel: cancel, done: make(chan struct{}), pods: map[string]*podProc{}, exited: map[string]time.Time{}}
	// The API server, where every pod's kubeconfig points.
	kl.reachable = append(kl.reachable, k.apiAddr)
	k.mu.Lock()
	k.kubelet = kl
	for a := range k.services {
		kl.reachable = append(kl.reachable, a)
	}
	k.mu.Unlock()
	go kl.run(ctx)
	return kl
}

func (kl *kubelet) run(ctx context.Context) {
	defer close(kl.done)
	for {
		kl.sync(ctx)
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// sync starts the pods that are new, stops those that are gone, and syncs the Services.
func (kl *kubelet) sync(ctx context.Context) {
	list, err := kl.k.kube.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return
	}
	seen := map[string]bool{}
	for i := range list.Items {
		pod := &list.Items[i]
		if pod.DeletionTimestamp != nil || len(pod.Spec.Containers) == 0 ||
			!strings.HasPrefix(pod.Spec.Containers[0].Image, knativeImage) {
			continue
		}
		uid := string(pod.UID)
		seen[uid] = true
		kl.mu.Lock()
		p, ok := kl.pods[uid]
		if ok && !p.running() {
			kl.stopPod(p)
			delete(kl.pods, uid)
			kl.exited[uid] = time.Now()
			ok = false
		}
		wait := time.Since(kl.exited[uid]) < time.Second
		kl.mu.Unlock()
		if !ok && !wait {
			if err := kl.startPod(ctx, pod); err != nil {
				fmt.Fprintf(os.Stderr, "knative kubelet: pod %s/%s: %v\n", pod.Namespace, pod.Name, err)
				kl.mu.Lock()
				kl.exited[uid] = time.Now()
				kl.mu.Unlock()
				continue
			}
		}
		kl.mu.Lock()
		p = kl.pods[uid]
		kl.mu.Unlock()
		if p != nil && !p.statusDone {
			p.statusDone = kl.markReady(ctx, pod, p) == nil
		}
	}
	kl.mu.Lock()
	for uid, p := range kl.pods {
		if !seen[uid] {
			kl.stopPod(p)
			delete(kl.pods, uid)
		}
	}
	snapshot := make(map[string]*podProc, len(kl.pods))
	for uid, p := range kl.pods {
		snapshot[uid] = p
	}
	kl.mu.Unlock()
	kl.k.syncServices(ctx, snapshot)
}

// startPod starts the process of a pod's first container.
func (kl *kubelet) startPod(ctx context.Context, pod *corev1.Pod) error {
	c := pod.Spec.Containers[0]
	bin := filepath.Join(KnativeDir(), "bin", path.Base(strings.TrimPrefix(c.Image, knativeImage)))
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("image %s: %w (run `make tools`)", c.Image, err)
	}
	// The pod's address in its status and its Services' Endpoints: from the documentation
	// range (RFC 5737), which the API server accepts there (it refuses loopback) and which
	// nothing ever dials — the pod is reached through its Services' loopback addresses.
	kl.k.mu.Lock()
	kl.k.nextPodIP++
	ip := fmt.Sprintf("192.0.2.%d", kl.k.nextPodIP%250+1)
	kl.k.mu.Unlock()
	env, err := kl.env(ctx, pod, c, ip)
	if err != nil {
		return err
	}
	base := filepath.Join(kl.k.Dir, "pods", pod.Namespace+"_"+pod.Name)
	ready := base + ".ready"
	_ = os.Remove(ready)
	name, args, err := containedCommand(true, ready, kl.k.hosts, bin, c.Args...)
	if err != nil {
		return err
	}
	proc, err := startProcess(pod.Namespace+"/"+pod.Name, base+".log", env, name, args...)
	if err != nil {
		return err
	}
	p := &podProc{ns: pod.Namespace, name: pod.Name, uid: string(pod.UID), labels: pod.Labels, ip: ip,
		bin: path.Base(bin), proc: proc, reached: map[string]bool{}, ports: map[string]int{}}
	for _, cp := range c.Ports {
		if cp.Name != "" {
			p.ports[cp.Name] = int(cp.ContainerPort)
		}
	}
	if p.net, err = openNetNS(proc.PID(), 10*time.Second); err != nil {
		proc.Kill()
		return err
	}
	kl.mu.Lock()
	defer kl.mu.Unlock()
	for _, a := range kl.reachable {
		if err := kl.reach1(p, a); err != nil {
			kl.stopPod(p)
			return err
		}
	}
	if err := os.WriteFile(ready, nil, 0o644); err != nil {
		kl.stopPod(p)
		return err
	}
	kl.pods[p.uid] = p
	return nil
}

// reach makes addr reachable from every pod's namespace (and from pods started later).
func (kl *kubelet) reach(addr string) {
	kl.mu.Lock()
	defer kl.mu.Unlock()
	kl.reachable = append(kl.reachable, addr)
	for _, p := range kl.pods {
		_ = kl.reach1(p, addr)
	}
}

// reach1 listens on addr inside p's namespace and forwards to addr on this machine.
func (kl *kubelet) reach1(p *podProc, addr string) error {
	if p.reached[addr] {
		return nil
	}
	l, err := p.net.Listen(addr)
	if err != nil {
		return fmt.Errorf("listening on %s in the namespace of %s/%s: %w", addr, p.ns, p.name, err)
	}
	p.reached[addr] = true
	p.fwd = append(p.fwd, forward(l, dialHost(addr)))
	return nil
}

// env is the container's environment as a kubelet resolves it, plus the hub's kubeconfig
// (the pod's API access: admin, where a cluster would mount its service account's token).
func (kl *kubelet) env(ctx context.Context, pod *corev1.Pod, c corev1.Container, ip string) ([]string, error) {
	env := append([]string{"KUBECONFIG=" + kl.k.hub.Kubeconfig}, kl.k.podEnv...)
	for _, e := range c.Env {
		v := e.Value
		if f := e.ValueFrom; f != nil {
			switch {
			case f.FieldRef != nil:
				switch f.FieldRef.FieldPath {
				case "metadata.name":
					v = pod.Name
				case "metadata.namespace":
					v = pod.Namespace
				case "metadata.uid":
					v = string(pod.UID)
				case "spec.serviceAccountName":
					v = pod.Spec.ServiceAccountName
				case "status.podIP", "status.hostIP":
					v = ip
				case "spec.nodeName":
					v = "local"
				}
			case f.ConfigMapKeyRef != nil:
				cm, err := kl.k.kube.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, f.ConfigMapKeyRef.Name, metav1.GetOptions{})
				if err == nil {
					v = cm.Data[f.ConfigMapKeyRef.Key]
				}
			case f.SecretKeyRef != nil:
				s, err := kl.k.kube.CoreV1().Secrets(pod.Namespace).Get(ctx, f.SecretKeyRef.Name, metav1.GetOptions{})
				if err == nil {
					v = string(s.Data[f.SecretKeyRef.Key])
				}
			}
		}
		env = append(env, e.Name+"="+v)
	}
	return env, nil
}

// markReady records the pod as running and ready, as a kubelet reports it.
func (kl *kubelet) markReady(ctx context.Context, pod *corev1.Pod, p *podProc) error {
	now := metav1.Now()
	cur, err := kl.k.kube.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	cur.Status.Phase = corev1.PodRunning
	cur.Status.PodIP, cur.Status.HostIP = p.ip, "127.0.0.1"
	cur.Status.PodIPs = []corev1.PodIP{{IP: p.ip}}
	cur.Status.StartTime = &now
	cur.Status.Conditions = nil
	for _, t := range []corev1.PodConditionType{corev1.PodScheduled, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady} {
		cur.Status.Conditions = append(cur.Status.Conditions, corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: now})
	}
	cur.Status.ContainerStatuses = nil
	for _, c := range cur.Spec.Containers {
		started := true
		cur.Status.ContainerStatuses = append(cur.Status.ContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: c.Image, Ready: true, Started: &started,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}})
	}
	_, err = kl.k.kube.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, cur, metav1.UpdateOptions{})
	return err
}

// stopPod stops a pod's process and its namespace's forwarders.
func (kl *kubelet) stopPod(p *podProc) {
	p.proc.Stop(5 * time.Second)
	for _, f := range p.fwd {
		f.Close()
	}
	p.net.Close()
}

func (kl *kubelet) components() []string {
	kl.mu.Lock()
	defer kl.mu.Unlock()
	var out []string
	for _, p := range kl.pods {
		out = append(out, fmt.Sprintf("%s/%s (%s, pid %d)", p.ns, p.name, p.bin, p.proc.PID()))
	}
	sort.Strings(out)
	return out
}

// stop ends the polling and stops every pod, in parallel.
func (kl *kubelet) stop() {
	kl.cancel()
	<-kl.done
	kl.mu.Lock()
	defer kl.mu.Unlock()
	var wg sync.WaitGroup
	for uid, p := range kl.pods {
		wg.Add(1)
		go func() { defer wg.Done(); kl.stopPod(p) }()
		delete(kl.pods, uid)
	}
	wg.Wait()
}
