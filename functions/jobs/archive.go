package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path"
	"strings"
	"time"

	"knative.dev/pkg/logging"

	"github.com/ocm-jobs/ocm-jobs/shared/objectstore"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
)

// Archive is an archived job group as the object store holds it: everything Redis held about
// the group when it was deleted.
type Archive struct {
	store.GroupRecord
	ArchivedAt time.Time `json:"archived_at"`
}

// archiver writes deleted groups to the object store before their Redis keys expire.
//
// A group enters the store's archive index before it is deleted, and leaves it only once its
// record is written; until then its keys are held (no TTL). So a crash, or an object store
// that is down, delays the archive to a later tick but never loses a group.
type archiver struct {
	store   *store.Store
	objects *objectstore.Client
	bucket  string
	prefix  string
}

// key is where a group's record goes: <prefix>/<yyyy>/<mm>/<group id>.json, by deletion month.
func (a *archiver) key(id string, deleted time.Time) string {
	return path.Join(a.prefix, deleted.UTC().Format("2006/01"), id+".json")
}

// pointerKey names the object holding a group's archive key, so a read by id needs no listing
// across months.
func (a *archiver) pointerKey(id string) string { return path.Join(a.prefix, "by-id", id) }

// archive writes one group's record and releases its keys to the retention TTL. A group that
// is not deleted (its delete was refused) or whose keys are gone leaves the index unwritten.
func (a *archiver) archive(ctx context.Context, id string) error {
	rec, err := a.store.GroupRecord(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return a.store.Unmark(ctx, id)
	}
	if err != nil {
		return err
	}
	if rec.DeletedAt == nil {
		return a.store.Unmark(ctx, id)
	}
	doc, err := json.Marshal(Archive{GroupRecord: *rec, ArchivedAt: time.Now().UTC()})
	if err != nil {
		return fmt.Errorf("encoding the archive of group %s: %w", id, err)
	}
	key := a.key(id, *rec.DeletedAt)
	// The record first, the pointer second: a pointer never names a missing record.
	if err := a.objects.Put(ctx, objectstore.Ref{Bucket: a.bucket, Key: key}, "application/json", doc); err != nil {
		return err
	}
	if err := a.objects.Put(ctx, objectstore.Ref{Bucket: a.bucket, Key: a.pointerKey(id)}, "text/plain", []byte(key)); err != nil {
		return err
	}
	return a.store.Archived(ctx, id)
}

// archiveOrHold archives a group; when that fails its keys are held for the next tick.
func (a *archiver) archiveOrHold(ctx context.Context, id string) error {
	err := a.archive(ctx, id)
	if err == nil {
		return nil
	}
	if herr := a.store.HoldGroup(ctx, id); herr != nil {
		return errors.Join(err, herr)
	}
	return err
}

// sweep archives every group in the archive index (the cron tick): how many were archived,
// and the failures, which stay for the next tick.
func (a *archiver) sweep(ctx context.Context, s *service) (int, error) {
	if err := a.retire(ctx, s); err != nil {
		return 0, err
	}
	ids, err := a.store.PendingArchives(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, id := range ids {
		if err := a.archiveOrHold(ctx, id); err != nil {
			errs = append(errs, fmt.Errorf("group %s: %w", id, err))
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// retire deletes (and so archives) the groups stopped for longer than the retention TTL:
// nothing of them is deployed, and keeping them in Redis would grow it without bound.
func (a *archiver) retire(ctx context.Context, s *service) error {
	cutoff := time.Now().Add(-a.store.Options().RetentionTTL)
	ids, err := a.store.StoppedGroups(ctx, cutoff)
	if err != nil {
		return err
	}
	for _, id := range ids {
		if f := s.deleteGroupArchived(ctx, id, Name+"/archive"); f != nil && f.Status != http.StatusConflict && f.Status != http.StatusNotFound {
			return f
		}
	}
	return nil
}

// read finds an archived group by id: ErrNotFound when it was never archived.
func (a *archiver) read(ctx context.Context, id string) (*Archive, error) {
	key, err := a.objects.Get(ctx, objectstore.Ref{Bucket: a.bucket, Key: a.pointerKey(id)}, 4096)
	if err != nil {
		return nil, err
	}
	doc, err := a.objects.Get(ctx, objectstore.Ref{Bucket: a.bucket, Key: strings.TrimSpace(string(key))}, 1<<30)
	if err != nil {
		return nil, err
	}
	var out Archive
	if err := json.Unmarshal(doc, &out); err != nil {
		return nil, fmt.Errorf("decoding the archive of group %s: %w", id, err)
	}
	return &out, nil
}

// deleteGroupArchived deletes a group as deleteGroup does, entering it in the archive index
// first and archiving it at once; an archive that fails now is retried by the tick.
func (s *service) deleteGroupArchived(ctx context.Context, id, by string) *Failure {
	if err := s.archiver.store.MarkForArchive(ctx, id); err != nil {
		return failureOf(err)
	}
	if err := s.store.DeleteGroup(ctx, id, by); err != nil {
		// Not deleted: the group must not wait for an archive. (Should this fail too, the
		// tick finds the group live and drops it from the index.)
		_ = s.archiver.store.Unmark(ctx, id)
		return failureOf(err)
	}
	if err := s.archiver.archiveOrHold(ctx, id); err != nil {
		logging.FromContext(ctx).Warnw("archiving a deleted group failed; its keys are kept and the next tick retries", "group", id, "error", err)
	}
	return nil
}
