package ocm

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	workclient "open-cluster-management.io/api/client/work/clientset/versioned"
	workv1 "open-cluster-management.io/api/work/v1"
)

// FieldManager owns the ManifestWorks' fields in server-side apply.
const FieldManager = "ocm-jobs"

// Works is all ocm-jobs does with ManifestWorks on one hub: apply, delete, read one, list this
// hub's, wait for one to be gone or available, and the one verdict on a job's work that the
// executor and status sync both use. Nothing else in ocm-jobs talks to ManifestWorks.
type Works struct {
	hubID string
	typed workclient.Interface
	// raw reads works decoding only metadata and status (not the manifests, not
	// managedFields): most of what makes a 10,000-work LIST cheap on the client.
	raw  rest.Interface
	opts WorksOptions
}

// WorksOptions tune how works are listed.
type WorksOptions struct {
	// PageSize is the number of works per page of a List; 0 lists them in one call served
	// from the API server's watch cache (resourceVersion=0), which is the fastest.
	PageSize int64
	// Compress lets the API server gzip its answers to reads (off: gzipping a
	// 10,000-work LIST costs the API server more CPU than the bytes cost the network).
	Compress bool
}

// NewWorks returns the works of hubID on hub.
func NewWorks(hub *Hub, hubID string, opts WorksOptions) (*Works, error) {
	rc := rest.CopyConfig(hub.Config)
	rc.DisableCompression = !opts.Compress
	wc, err := workclient.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	return &Works{hubID: hubID, typed: hub.Work, raw: wc.WorkV1().RESTClient(), opts: opts}, nil
}

// Work is what ocm-jobs reads of a ManifestWork: its metadata and status.
type Work struct {
	Metadata WorkMeta                  `json:"metadata"`
	Status   workv1.ManifestWorkStatus `json:"status"`
}

// WorkMeta is the metadata of a Work.
type WorkMeta struct {
	Name              string            `json:"name"`
	Namespace         string            `json:"namespace"`
	UID               string            `json:"uid"`
	Generation        int64             `json:"generation"`
	Labels            map[string]string `json:"labels"`
	Annotations       map[string]string `json:"annotations"`
	DeletionTimestamp *metav1.Time      `json:"deletionTimestamp"`
}

// Key is where a work lives: its cluster namespace and name.
type Key struct{ Namespace, Name string }

// Fence is the fencing token of the execution that wrote the work, 0 when it carries none.
func (w *Work) Fence() uint64 {
	v, err := strconv.ParseUint(w.Metadata.Annotations[AnnotationFence], 10, 64)
	if err != nil {
		return 0
	}
	return v
}

// Deleting says the work is being deleted.
func (w *Work) Deleting() bool { return w.Metadata.DeletionTimestamp != nil }

// Condition is the work's condition of type t if the agent reported it for the work's current
// generation (a condition about an older spec says nothing about this one); nil else.
func (w *Work) Condition(t string) *metav1.Condition {
	c := meta.FindStatusCondition(w.Status.Conditions, t)
	if c == nil || (c.ObservedGeneration != 0 && c.ObservedGeneration != w.Metadata.Generation) {
		return nil
	}
	return c
}

// Outcome is what a work says of the execution that wrote it.
type Outcome int

// Outcomes of a Verdict.
const (
	// Pending: no verdict yet (the agent has not reported on this generation).
	Pending Outcome = iota
	// Done: applied and available.
	Done
	// Failed: the agent reports it cannot apply it, or it is not available, for longer than
	// the grace period.
	Failed
)

// Verdict is the agent's verdict on a work.
type Verdict struct {
	Outcome Outcome
	Reason  string
	Message string
}

// ReasonAvailable is the reason of a Done verdict.
const ReasonAvailable = "AppliedAndAvailable"

// VerdictOf reads the verdict of a work from the conditions the agent reported for its
// current generation at time now: Degraded, or Applied/Available False for longer than grace,
// is Failed; Applied and Available True is Done; anything else is Pending. It is the same
// rule for the executor (is a reallocation's new work up?) and for status sync (is the job
// done?).
func VerdictOf(w *Work, now time.Time, grace time.Duration) Verdict {
	applied, available, degraded := w.Condition(workv1.WorkApplied), w.Condition(workv1.WorkAvailable), w.Condition(workv1.WorkDegraded)
	where := w.Metadata.Namespace + "/" + w.Metadata.Name
	failed := func(c *metav1.Condition) Verdict {
		reason := c.Reason
		if reason == "" {
			reason = c.Type + string(c.Status)
		}
		msg := c.Message
		if msg == "" {
			msg = c.Type + "=" + string(c.Status)
		}
		if m := failedManifest(w, c.Type); m != "" {
			msg += ": " + m
		}
		return Verdict{Outcome: Failed, Reason: reason, Message: fmt.Sprintf("ManifestWork %s: %s", where, msg)}
	}
	pastGrace := func(c *metav1.Condition) bool { return now.Sub(c.LastTransitionTime.Time) >= grace }
	switch {
	case degraded != nil && degraded.Status == metav1.ConditionTrue:
		return failed(degraded)
	case applied != nil && applied.Status == metav1.ConditionFalse && pastGrace(applied):
		return failed(applied)
	case available != nil && available.Status == metav1.ConditionFalse && pastGrace(available):
		return failed(available)
	case applied != nil && applied.Status == metav1.ConditionTrue && available != nil && available.Status == metav1.ConditionTrue:
		return Verdict{Outcome: Done, Reason: ReasonAvailable, Message: fmt.Sprintf("ManifestWork %s is applied and available", where)}
	}
	return Verdict{}
}

// failedManifest is what the agent says of the first manifest whose condition t is False
// (which object, and why: e.g. the executor may not create it), "" when none is.
func failedManifest(w *Work, t string) string {
	for _, m := range w.Status.ResourceStatus.Manifests {
		c := meta.FindStatusCondition(m.Conditions, t)
		if c == nil || c.Status != metav1.ConditionFalse {
			continue
		}
		r := m.ResourceMeta
		what := r.Kind
		if what == "" {
			what = r.Resource
		}
		return fmt.Sprintf("%s %s/%s: %s", what, r.Namespace, r.Name, c.Message)
	}
	return ""
}

// Apply server-side applies a work: a retried apply converges on the same single work
// (deterministic name, the whole spec owned by ocm-jobs). The applied work the API server
// answers is not decoded: no caller reads it, and decoding it (managedFields and all) was an
// eighth of the executor's CPU per job.
func (ws *Works) Apply(ctx context.Context, mw *workv1.ManifestWork) error {
	body, err := json.Marshal(mw)
	if err != nil {
		return invalidManifest("%v", err)
	}
	err = ws.raw.Patch(types.ApplyPatchType).Namespace(mw.Namespace).Resource("manifestworks").Name(mw.Name).
		Param("fieldManager", FieldManager).Param("force", "true").Body(body).Do(ctx).Error()
	if err != nil {
		return fmt.Errorf("applying ManifestWork %s/%s: %w", mw.Namespace, mw.Name, err)
	}
	return nil
}

// Delete deletes a work; one that is gone already is no error. The work's own DeleteOption
// (Foreground) makes the agent remove its objects before it lets the work go.
func (ws *Works) Delete(ctx context.Context, cluster, name string) error {
	err := ws.typed.WorkV1().ManifestWorks(cluster).Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting ManifestWork %s/%s: %w", cluster, name, err)
	}
	return nil
}

// Get reads one work with a quorum read; nil when it does not exist or is not this hub's (a
// work at that name without our labels is not ours to read).
func (ws *Works) Get(ctx context.Context, cluster, name string) (*Work, error) {
	w, err := ws.GetAny(ctx, cluster, name)
	if w == nil || err != nil {
		return nil, err
	}
	if w.Metadata.Labels[LabelManagedBy] != ManagedBy || w.Metadata.Labels[LabelOwner] != LabelValue(ws.hubID) {
		return nil, nil
	}
	return w, nil
}

// GetAny reads one work whoever wrote it (a deployment manager other than ocm-jobs' executor,
// e.g. the ICOS OCM deployment manager); nil when it does not exist.
func (ws *Works) GetAny(ctx context.Context, cluster, name string) (*Work, error) {
	raw, err := ws.raw.Get().Namespace(cluster).Resource("manifestworks").Name(name).Do(ctx).Raw()
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading ManifestWork %s/%s: %w", cluster, name, err)
	}
	var w Work
	if err := json.Unmarshal(raw, &w); err != nil {
		return nil, fmt.Errorf("decoding ManifestWork %s/%s: %w", cluster, name, err)
	}
	return &w, nil
}

// Namespace lists every work of one cluster namespace, whoever wrote it (served from the
// watch cache).
func (ws *Works) Namespace(ctx context.Context, cluster string) ([]*Work, error) {
	body, err := ws.raw.Get().Namespace(cluster).Resource("manifestworks").Param("resourceVersion", "0").Stream(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing ManifestWorks of %s: %w", cluster, err)
	}
	defer body.Close()
	var out []*Work
	var l workList
	if err := decodeList(body, &l, func(w *Work) { out = append(out, w) }); err != nil {
		return nil, fmt.Errorf("reading the ManifestWorks of %s: %w", cluster, err)
	}
	return out, nil
}

// Generated is the work among works that a deployment manager created with generateName
// base + "-" (the ICOS OCM deployment manager names its work after the job's resource_name):
// the one whose name is that prefix and a generated five-character suffix; nil when there is
// none or more than one (it cannot be told which is the job's).
func Generated(works []*Work, base string) *Work {
	var found *Work
	prefix := base + "-"
	for _, w := range works {
		if n := w.Metadata.Name; strings.HasPrefix(n, prefix) && len(n) == len(prefix)+5 {
			if found != nil {
				return nil
			}
			found = w
		}
	}
	return found
}

// WaitGone waits until a work is gone, polling every interval, at most timeout. It reports
// false when it is still there.
func (ws *Works) WaitGone(ctx context.Context, cluster, name string, interval, timeout time.Duration) (bool, error) {
	return ws.wait(ctx, cluster, name, interval, timeout, func(w *Work) bool { return w == nil })
}

// WaitVerdict waits until the agent has a verdict on a work written at fence (Done or
// Failed, by VerdictOf with grace), polling every interval, at most timeout; the work as last
// read is returned with its verdict (Pending when none came).
func (ws *Works) WaitVerdict(ctx context.Context, cluster, name string, fence uint64, grace, interval, timeout time.Duration) (*Work, Verdict, error) {
	var last *Work
	var v Verdict
	_, err := ws.wait(ctx, cluster, name, interval, timeout, func(w *Work) bool {
		last, v = w, Verdict{}
		if w == nil || w.Deleting() || w.Fence() != fence {
			return false
		}
		v = VerdictOf(w, time.Now(), grace)
		return v.Outcome != Pending
	})
	return last, v, err
}

// Opened says whether an access work is in place for rules: applied by the agent for its
// current spec, which grants rules, and not being deleted.
func (w *Work) Opened(rules string) bool {
	if w == nil || w.Deleting() || w.Metadata.Annotations[AnnotationAccessRules] != rules {
		return false
	}
	c := w.Condition(workv1.WorkApplied)
	return c != nil && c.Status == metav1.ConditionTrue
}

// WaitOpened waits until an access work is Opened for rules, polling every interval, at most
// timeout; the work as last read is returned with whether it is.
func (ws *Works) WaitOpened(ctx context.Context, cluster, name, rules string, interval, timeout time.Duration) (*Work, bool, error) {
	var last *Work
	ok, err := ws.wait(ctx, cluster, name, interval, timeout, func(w *Work) bool {
		last = w
		return w.Opened(rules)
	})
	return last, ok, err
}

// wait polls a work until done says so (done sees nil for a work that is gone) or timeout
// passes; it reports whether done said so. A timeout is not an error; the context's end is.
// A timeout of 0 reads the work once.
func (ws *Works) wait(ctx context.Context, cluster, name string, interval, timeout time.Duration, done func(*Work) bool) (bool, error) {
	if timeout <= 0 {
		w, err := ws.Get(ctx, cluster, name)
		return err == nil && done(w), err
	}
	ok := false
	err := wait.PollUntilContextTimeout(ctx, interval, timeout, true, func(pctx context.Context) (bool, error) {
		w, err := ws.Get(pctx, cluster, name)
		if err != nil {
			if pctx.Err() != nil && ctx.Err() == nil {
				return false, nil // the wait's time is up, not the caller's
			}
			return false, err
		}
		ok = done(w)
		return ok, nil
	})
	switch {
	case err == nil:
		return ok, nil
	case ctx.Err() != nil:
		return false, ctx.Err()
	case wait.Interrupted(err):
		return ok, nil
	}
	return false, err
}

// List lists this hub's works across every cluster namespace: one call served from the
// watch cache when PageSize is 0, else consistent pages of PageSize. It returns them by
// namespace and name, and the number of API calls it made.
func (ws *Works) List(ctx context.Context) (map[Key]*Work, int, error) {
	out := map[Key]*Work{}
	calls, cont := 0, ""
	for {
		req := ws.raw.Get().Resource("manifestworks").Param("labelSelector", OwnerSelector(ws.hubID))
		if ws.opts.PageSize > 0 {
			req = req.Param("limit", strconv.FormatInt(ws.opts.PageSize, 10))
			if cont != "" {
				req = req.Param("continue", cont)
			}
		} else {
			// The watch cache answers without a quorum read from etcd; being a few
			// milliseconds behind is harmless here, and a work that seems gone is
			// confirmed with a Get before anything is decided on it.
			req = req.Param("resourceVersion", "0")
		}
		body, err := req.Stream(ctx)
		calls++
		if err != nil {
			return nil, calls, fmt.Errorf("listing ManifestWorks (%s): %w", OwnerSelector(ws.hubID), err)
		}
		var l workList
		err = decodeList(body, &l, func(w *Work) { out[Key{w.Metadata.Namespace, w.Metadata.Name}] = w })
		body.Close()
		if err != nil {
			return nil, calls, fmt.Errorf("reading the ManifestWork list: %w", err)
		}
		cont = l.Metadata.Continue
		if ws.opts.PageSize == 0 || cont == "" {
			return out, calls, nil
		}
	}
}

// workList is a list's metadata; its items go to decodeList's callback one by one.
type workList struct {
	Metadata struct {
		Continue string `json:"continue"`
	} `json:"metadata"`
}

// decodeList reads a ManifestWork list from r item by item, as the API server streams it, so
// the items are decoded while the server still encodes the rest rather than after.
func decodeList(r io.Reader, l *workList, item func(*Work)) error {
	dec := json.NewDecoder(bufio.NewReaderSize(r, 256<<10))
	if err := delim(dec, '{'); err != nil {
		return err
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		switch t {
		case "metadata":
			if err := dec.Decode(&l.Metadata); err != nil {
				return err
			}
		case "items":
			if err := delim(dec, '['); err != nil {
				return err
			}
			for dec.More() {
				w := new(Work)
				if err := dec.Decode(w); err != nil {
					return err
				}
				item(w)
			}
			if err := delim(dec, ']'); err != nil {
				return err
			}
		default:
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return err
			}
		}
	}
	return delim(dec, '}')
}

// delim reads the JSON delimiter d.
func delim(dec *json.Decoder, d json.Delim) error {
	t, err := dec.Token()
	if err != nil {
		return err
	}
	if t != d {
		return fmt.Errorf("unexpected %v in a list, want %v", t, d)
	}
	return nil
}
