// Package broker is a local stand-in for the Knative Broker: it accepts CloudEvents on an
// ingress, delivers each to the subscribers of the Triggers whose filters match — Triggers
// read from k8s/ itself, so the local run and the cluster can never disagree — with their
// retry, backoff and dead-letter settings, and feeds subscribers' reply events back in, as
// Knative does. It also ticks the PingSource declared there.
package broker

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// Delivery is a Trigger's delivery spec.
type Delivery struct {
	Retry int
	// Exponential doubles the delay after each attempt; otherwise it grows linearly.
	Exponential bool
	Delay       time.Duration
	// DeadLetter names the dead-letter sink (a Service name or a URI); empty: none.
	DeadLetter string
}

// Trigger subscribes a Service to the events whose attributes match Filter exactly.
type Trigger struct {
	Name       string
	Filter     map[string]string
	Subscriber string
	// Audience is the OIDC audience of the subscriber (spec.subscriber.audience): the sender
	// identity token of a delivery is requested for it.
	Audience string
	Delivery Delivery
}

// Matches reports whether an event with these attributes passes the filter.
func (t Trigger) Matches(attr func(name string) string) bool {
	for k, v := range t.Filter {
		if attr(k) != v {
			return false
		}
	}
	return true
}

// PingSource is a cron source that sends events to the broker.
type PingSource struct {
	Name        string
	Namespace   string
	Schedule    string
	ContentType string
	Data        string
}

// Source is the CloudEvents source of the PingSource's events, as Knative sets it.
func (p PingSource) Source() string {
	return fmt.Sprintf("/apis/v1/namespaces/%s/pingsources/%s", p.Namespace, p.Name)
}

type object struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
	Spec struct {
		Filter *struct {
			Attributes map[string]string `json:"attributes"`
		} `json:"filter"`
		Subscriber struct {
			Ref *struct {
				Name string `json:"name"`
			} `json:"ref"`
			URI      string `json:"uri"`
			Audience string `json:"audience"`
		} `json:"subscriber"`
		Delivery *struct {
			Retry          *int   `json:"retry"`
			BackoffPolicy  string `json:"backoffPolicy"`
			BackoffDelay   string `json:"backoffDelay"`
			DeadLetterSink *struct {
				Ref *struct {
					Name string `json:"name"`
				} `json:"ref"`
				URI string `json:"uri"`
			} `json:"deadLetterSink"`
		} `json:"delivery"`
		// PingSource
		Schedule    string `json:"schedule"`
		ContentType string `json:"contentType"`
		Data        string `json:"data"`
	} `json:"spec"`
}

// Load reads every Trigger and PingSource in the YAML files of dir.
func Load(dir string) ([]Trigger, []PingSource, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, nil, err
	}
	sort.Strings(files)
	var triggers []Trigger
	var pings []PingSource
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			return nil, nil, err
		}
		for i, doc := range splitYAML(raw) {
			var o object
			if err := yaml.Unmarshal(doc, &o); err != nil {
				return nil, nil, fmt.Errorf("%s document %d: %w", f, i+1, err)
			}
			switch o.Kind {
			case "Trigger":
				t, err := toTrigger(o)
				if err != nil {
					return nil, nil, fmt.Errorf("%s: Trigger %s: %w", f, o.Metadata.Name, err)
				}
				triggers = append(triggers, t)
			case "PingSource":
				ns := o.Metadata.Namespace
				if ns == "" {
					ns = "ocm-jobs"
				}
				pings = append(pings, PingSource{Name: o.Metadata.Name, Namespace: ns, Schedule: o.Spec.Schedule,
					ContentType: o.Spec.ContentType, Data: o.Spec.Data})
			}
		}
	}
	if len(triggers) == 0 {
		return nil, nil, fmt.Errorf("no Trigger in %s", dir)
	}
	return triggers, pings, nil
}

func toTrigger(o object) (Trigger, error) {
	t := Trigger{Name: o.Metadata.Name, Filter: map[string]string{}}
	if o.Spec.Filter != nil {
		for k, v := range o.Spec.Filter.Attributes {
			t.Filter[k] = v
		}
	}
	t.Audience = o.Spec.Subscriber.Audience
	switch {
	case o.Spec.Subscriber.Ref != nil:
		t.Subscriber = o.Spec.Subscriber.Ref.Name
	case o.Spec.Subscriber.URI != "":
		t.Subscriber = o.Spec.Subscriber.URI
	default:
		return t, errors.New("no subscriber")
	}
	if d := o.Spec.Delivery; d != nil {
		if d.Retry != nil {
			t.Delivery.Retry = *d.Retry
		}
		t.Delivery.Exponential = d.BackoffPolicy == "" || d.BackoffPolicy == "exponential"
		if d.BackoffDelay != "" {
			delay, err := ParseISODuration(d.BackoffDelay)
			if err != nil {
				return t, fmt.Errorf("backoffDelay: %w", err)
			}
			t.Delivery.Delay = delay
		}
		if s := d.DeadLetterSink; s != nil {
			if s.Ref != nil {
				t.Delivery.DeadLetter = s.Ref.Name
			} else {
				t.Delivery.DeadLetter = s.URI
			}
		}
	}
	return t, nil
}

func splitYAML(raw []byte) [][]byte {
	var docs [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(raw), -1) {
		if strings.TrimSpace(d) != "" {
			docs = append(docs, []byte(d))
		}
	}
	return docs
}

var isoDuration = regexp.MustCompile(`^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$`)

// ParseISODuration parses the ISO-8601 durations Knative's delivery spec uses (PT0.2S, PT1M, P1DT2H).
func ParseISODuration(s string) (time.Duration, error) {
	m := isoDuration.FindStringSubmatch(s)
	if m == nil || s == "P" || s == "PT" {
		return 0, fmt.Errorf("%q is not an ISO-8601 duration", s)
	}
	var d time.Duration
	units := []time.Duration{24 * time.Hour, time.Hour, time.Minute}
	for i, u := range units {
		if m[i+1] != "" {
			n, _ := strconv.Atoi(m[i+1])
			d += time.Duration(n) * u
		}
	}
	if m[4] != "" {
		f, _ := strconv.ParseFloat(m[4], 64)
		d += time.Duration(f * float64(time.Second))
	}
	return d, nil
}
