package statussync

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	workv1 "open-cluster-management.io/api/work/v1"

	"github.com/ocm-jobs/ocm-jobs/shared/ocm"
)

// AnnotationFence, when a ManifestWork carries it, is the fencing token of the execution
// that last wrote the work. Status sync draws a job's verdict only from a work written for
// the job's current execution, so a tick that lands between a promote and the executor's
// write of the new spec cannot finish the job on the previous execution's status. Without
// it, the executor's Dispatched condition at the job's fence says the same, one write later.
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

// workList is a list's metadata; its items go to decodeList's callback one by one.
type workList struct {
	Metadata struct {
		Continue string `json:"continue"`
	} `json:"metadata"`
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
	rc := f.works
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
		body, err := req.Stream(ctx)
		calls++
		if err != nil {
			return nil, calls, fmt.Errorf("listing ManifestWorks (%s): %w", ocm.OwnerSelector(hubID), err)
		}
		var l workList
		err = decodeList(body, &l, func(w *work) { out[key{w.Metadata.Namespace, w.Metadata.Name}] = w })
		body.Close()
		if err != nil {
			return nil, calls, fmt.Errorf("reading the ManifestWork list: %w", err)
		}
		cont = l.Metadata.Continue
		if f.cfg.ListPageSize == 0 || cont == "" {
			return out, calls, nil
		}
	}
}

// getWork reads one ManifestWork with a quorum read; nil when it does not exist or is not
// one of hubID's (a work at that name without our labels is not ours to read).
func (f *Function) getWork(ctx context.Context, hubID, namespace, name string) (*work, error) {
	raw, err := f.works.Get().Namespace(namespace).Resource("manifestworks").Name(name).Do(ctx).Raw()
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
	if w.Metadata.Labels[ocm.LabelManagedBy] != ocm.ManagedBy || w.Metadata.Labels[ocm.LabelOwner] != ocm.LabelValue(hubID) {
		return nil, nil
	}
	return &w, nil
}

// decodeList reads a ManifestWork list from r item by item, as the API server streams it, so
// the items are decoded while the server still encodes the rest rather than after.
func decodeList(r io.Reader, l *workList, item func(*work)) error {
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
				w := new(work)
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
