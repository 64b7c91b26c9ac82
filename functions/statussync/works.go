package statussync

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	workv1 "open-cluster-management.io/api/work/v1"

	"github.com/ocm-jobs/ocm-jobs/shared/ocm"
)

// AnnotationFence, when a ManifestWork carries it, is the fencing token of the execution
// that last wrote the work. Status sync draws a job's verdict only from a work written for
// the job's current execution, so a tick that lands between a promote and the executor's
// write of the new spec cannot finish the job on the previous execution's status. A work
// without it is taken as current.
const AnnotationFence = "jobmanager.icos.eu/fence"

// work is the part of a ManifestWork status sync reads. Decoding only this (not the spec's
// manifests, not managedFields) is most of what makes a 10,000-work LIST cheap on the client.
type work struct {
	Metadata workMeta                  `json:"metadata"`
	Status   workv1.ManifestWorkStatus `json:"status"`
}

type workMeta struct {
	Name              string            `json:"name"`
	Namespace         string            `json:"namespace"`
	UID               string            `json:"uid"`
	Generation        int64             `json:"generation"`
	Labels            map[string]string `json:"labels"`
	Annotations       map[string]string `json:"annotations"`
	DeletionTimestamp *metav1.Time      `json:"deletionTimestamp"`
}

type workList struct {
	Metadata struct {
		Continue string `json:"continue"`
	} `json:"metadata"`
	Items []work `json:"items"`
}

// key is where a work lives: its cluster namespace and name.
type key struct{ namespace, name string }

// fence is the fencing token the work was written with, 0 when it carries none.
func (w *work) fence() uint64 {
	v, err := strconv.ParseUint(w.Metadata.Annotations[AnnotationFence], 10, 64)
	if err != nil {
		return 0
	}
	return v
}

// listWorks lists the ManifestWorks of the jobs hubID owns, across every cluster namespace:
// one call served from the watch cache when pageSize is 0, else consistent pages of pageSize.
// It returns them by namespace and name, and the number of API calls it made.
func (f *Function) listWorks(ctx context.Context, hubID string) (map[key]*work, int, error) {
	rc := f.hub.Work.WorkV1().RESTClient()
	out := map[key]*work{}
	calls, cont := 0, ""
	for {
		req := rc.Get().Resource("manifestworks").Param("labelSelector", ocm.OwnerSelector(hubID))
		if f.cfg.ListPageSize > 0 {
			req = req.Param("limit", strconv.FormatInt(f.cfg.ListPageSize, 10))
			if cont != "" {
				req = req.Param("continue", cont)
			}
		} else {
			// The watch cache answers without a quorum read from etcd; being a few
			// milliseconds behind is harmless here, and a work that seems gone is
			// confirmed with a GET before its job is degraded.
			req = req.Param("resourceVersion", "0")
		}
		raw, err := req.Do(ctx).Raw()
		calls++
		if err != nil {
			return nil, calls, fmt.Errorf("listing ManifestWorks (%s): %w", ocm.OwnerSelector(hubID), err)
		}
		var l workList
		if err := json.Unmarshal(raw, &l); err != nil {
			return nil, calls, fmt.Errorf("decoding the ManifestWork list: %w", err)
		}
		for i := range l.Items {
			w := &l.Items[i]
			out[key{w.Metadata.Namespace, w.Metadata.Name}] = w
		}
		cont = l.Metadata.Continue
		if f.cfg.ListPageSize == 0 || cont == "" {
			return out, calls, nil
		}
	}
}

// getWork reads one ManifestWork with a quorum read; nil when it does not exist.
func (f *Function) getWork(ctx context.Context, namespace, name string) (*work, error) {
	raw, err := f.hub.Work.WorkV1().RESTClient().Get().Namespace(namespace).Resource("manifestworks").Name(name).Do(ctx).Raw()
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading ManifestWork %s/%s: %w", namespace, name, err)
	}
	var w work
	if err := json.Unmarshal(raw, &w); err != nil {
		return nil, fmt.Errorf("decoding ManifestWork %s/%s: %w", namespace, name, err)
	}
	return &w, nil
}
