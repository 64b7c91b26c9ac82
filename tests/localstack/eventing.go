package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"github.com/ocm-jobs/ocm-jobs/shared/config"
	"github.com/ocm-jobs/ocm-jobs/shared/events"
	"github.com/ocm-jobs/ocm-jobs/tests/servers"
)

// localOverlay is the kustomization `make run` applies to the hub: k8s/base with each
// Trigger's subscriber and the dead-letter sink by local URL.
const localOverlay = "k8s/overlays/local"

// localHost is the name of a local server as the overlay's URLs name it; the Knative stack
// resolves it, for its components, to the server on this machine.
func localHost(name string) string { return name + "." + brokerNamespace + ".svc.cluster.local" }

// eventingKinds are what must be Ready before the stack is up.
var eventingKinds = []schema.GroupVersionResource{
	{Group: "eventing.knative.dev", Version: "v1", Resource: "brokers"},
	{Group: "eventing.knative.dev", Version: "v1", Resource: "triggers"},
	{Group: "sources.knative.dev", Version: "v1", Resource: "pingsources"},
	{Group: "sources.knative.dev", Version: "v1", Resource: "apiserversources"},
}

// tokenTTL is the life of the functions' token for the broker; it is renewed at half.
const tokenTTL = time.Hour

// startEventing prepares what the functions need of the running Knative Eventing before they
// start: their names and the dead-letter sink's, and their token for the broker written (and
// renewed) where SINK_TOKEN_FILE points. applyEventing then applies the overlay.
func (s *Stack) startEventing(ctx context.Context, run string) error {
	kn := s.env.Knative
	for _, fn := range config.Functions {
		if _, err := kn.Expose(localHost("ocm-jobs-"+fn), fmt.Sprintf("127.0.0.1:%d", s.ports[fn])); err != nil {
			return err
		}
	}
	sink, err := s.startDeadLetterSink(filepath.Join(run, "dead-letters.jsonl"))
	if err != nil {
		return err
	}
	if _, err := kn.Expose(localHost("ocm-jobs-deadletter"), sink); err != nil {
		return err
	}
	// The broker's audience is its kind, namespace and name: known before it exists, so that
	// the functions run (and hold their token) before the first event, a PingSource tick
	// included, is delivered. applyEventing checks it against the Broker's status.
	s.brokerAudience = "eventing.knative.dev/broker/" + brokerNamespace + "/" + brokerName
	s.brokerURL = kn.BrokerURL(brokerNamespace, brokerName)
	if _, err := s.env.Hub.SenderIdentity(ctx, brokerNamespace, functionsAccount); err != nil {
		return err
	}
	s.sinkToken = filepath.Join(run, "oidc", "token")
	if err := s.writeSinkToken(ctx); err != nil {
		return err
	}
	go s.renewSinkToken(ctx)
	if s.ticker, err = events.NewSinkPublisher(s.brokerURL, 3, 200*time.Millisecond); err != nil {
		return err
	}
	s.ticker.TokenFile = s.sinkToken
	return nil
}

// applyEventing applies the overlay once the functions answer, waits until it is Ready, and
// works around knative/eventing#8705.
func (s *Stack) applyEventing(ctx context.Context) error {
	kn := s.env.Knative
	kubectl, err := servers.Bin("kubectl")
	if err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, kubectl, "--kubeconfig", s.env.Hub.Kubeconfig, "apply", "-k",
		filepath.Join(s.root, localOverlay)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("applying %s: %w\n%s", localOverlay, err, out)
	}
	ready, err := s.waitEventingReady(ctx, 3*time.Minute)
	if err != nil {
		return err
	}
	s.Log.Infow("eventing Ready", "objects", ready)
	for _, b := range []string{brokerName, workEventsBroker} {
		if err := kn.AliasBrokerChannel(ctx, brokerNamespace, b); err != nil {
			return err
		}
	}
	aud, err := kn.BrokerAudience(ctx, brokerNamespace, brokerName)
	if err != nil {
		return err
	}
	if aud != s.brokerAudience {
		return fmt.Errorf("the broker's audience is %q, the functions' token is for %q", aud, s.brokerAudience)
	}
	s.Log.Infow("broker ingress", "url", s.brokerURL, "audience", s.brokerAudience, "overlay", localOverlay)
	return nil
}

// waitEventingReady waits until every Broker, Trigger, PingSource and ApiServerSource of
// the namespace is Ready (what `kubectl get brokers,triggers,pingsources,apiserversources -A`
// shows) and returns them as kind/name.
func (s *Stack) waitEventingReady(ctx context.Context, timeout time.Duration) ([]string, error) {
	dc, err := dynamic.NewForConfig(s.env.Hub.Config)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var nudged time.Time
	for {
		var ready, waiting, stuck []string
		brokerReady := false
		for _, gvr := range eventingKinds {
			list, err := dc.Resource(gvr).Namespace(brokerNamespace).List(ctx, metav1.ListOptions{})
			if err != nil {
				waiting = append(waiting, gvr.Resource+": "+err.Error())
				continue
			}
			if len(list.Items) == 0 {
				waiting = append(waiting, gvr.Resource+": none yet")
			}
			for _, u := range list.Items {
				name := gvr.Resource + "/" + u.GetName()
				if status, why := servers.ReadyCondition(&u); status == "True" {
					ready = append(ready, name)
					brokerReady = brokerReady || gvr.Resource == "brokers"
				} else {
					waiting = append(waiting, name+": "+why)
					if gvr.Resource == "triggers" {
						stuck = append(stuck, u.GetName())
					}
				}
			}
		}
		if len(waiting) == 0 {
			sort.Strings(ready)
			return ready, nil
		}
		// A Trigger reconciled before its Broker had an address is not queued again when the
		// Broker gets one (Knative resyncs hours later): touch it once the Broker is Ready.
		if brokerReady && len(stuck) > 0 && time.Since(nudged) > 3*time.Second {
			nudged = time.Now()
			patch := []byte(fmt.Sprintf(`{"metadata":{"annotations":{"ocm-jobs.icos.eu/reconcile":%q}}}`, nudged.Format(time.RFC3339Nano)))
			for _, name := range stuck {
				_, _ = dc.Resource(eventingKinds[1]).Namespace(brokerNamespace).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("eventing not Ready after %s: %s\nKnative's pods:\n%s", timeout,
				strings.Join(waiting, "; "), s.env.Knative.PodLogs(1500))
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// writeSinkToken writes a fresh token of the functions' account for the broker's audience,
// replacing the file whole (as the kubelet renews a projected token).
func (s *Stack) writeSinkToken(ctx context.Context) error {
	tok, err := s.env.Hub.Token(ctx, brokerNamespace, functionsAccount, s.brokerAudience, tokenTTL)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(s.sinkToken), 0o700); err != nil {
		return err
	}
	tmp := s.sinkToken + ".tmp"
	if err := os.WriteFile(tmp, []byte(tok), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, s.sinkToken)
}

// renewSinkToken renews the token at half its life until ctx is done.
func (s *Stack) renewSinkToken(ctx context.Context) {
	t := time.NewTicker(tokenTTL / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := s.writeSinkToken(ctx); err != nil && ctx.Err() == nil {
			s.Log.Errorw("renewing the functions' token for the broker", "error", err)
		}
	}
}

// deadLetter is one line of dead-letters.jsonl: the failed event as the broker sent it (its
// knativeerror* extensions say why), with the time it arrived.
type deadLetter struct {
	Time    time.Time         `json:"time"`
	Headers map[string]string `json:"headers"`
	Body    string            `json:"body"`
}

// startDeadLetterSink serves the dead-letter sink on loopback: each delivery is appended to
// path as a JSON line. It returns the sink's address.
func (s *Stack) startDeadLetterSink(path string) (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	var mu sync.Mutex
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		dl := deadLetter{Time: time.Now().UTC(), Headers: map[string]string{}, Body: string(body)}
		for k := range r.Header {
			if lk := strings.ToLower(k); strings.HasPrefix(lk, "ce-") || lk == "content-type" {
				dl.Headers[lk] = r.Header.Get(k)
			}
		}
		line, _ := json.Marshal(dl)
		mu.Lock()
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err == nil {
			_, err = f.Write(append(line, '\n'))
			err = errors.Join(err, f.Close())
		}
		mu.Unlock()
		if err != nil {
			s.Log.Errorw("dead letter not recorded", "error", err)
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		s.Log.Warnw("dead letter", "type", dl.Headers["ce-type"], "id", dl.Headers["ce-id"],
			"error", dl.Headers["ce-knativeerrorcode"], "dest", dl.Headers["ce-knativeerrordest"])
		w.WriteHeader(http.StatusAccepted)
	})
	s.sinkSrv = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.sinkSrv.Serve(l) }()
	return l.Addr().String(), nil
}
