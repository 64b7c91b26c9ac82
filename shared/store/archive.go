package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
)

// GroupRecord is everything the store holds about a job group, deleted or not: what the
// archive writes to the object store when the group leaves Redis.
type GroupRecord struct {
	Group     model.JobGroup                  `json:"group"`
	CreatedAt time.Time                       `json:"created_at"`
	DeletedAt *time.Time                      `json:"deleted_at,omitempty"`
	Histories map[string][]model.HistoryEntry `json:"histories"`
	// Incompliances are those reported about the group and not yet expired.
	Incompliances []model.Incompliance `json:"incompliances"`
}

// The archive index: P:{b:xy}:idx:archive holds the ids of deleted groups whose record is not
// in the object store yet. A group enters it before it is deleted (MarkForArchive), so a
// crash between the delete and the archive write leaves it there for the next tick.

// MarkForArchive puts a group in the archive index.
func (s *Store) MarkForArchive(ctx context.Context, id string) error {
	if fe := checkID(id, "id"); fe != nil {
		return invalid("mark for archive", fe)
	}
	if err := s.rdb.SAdd(ctx, s.archiveIndexKey(id), id).Err(); err != nil {
		return fmt.Errorf("mark group %s for archive: %w", id, err)
	}
	return nil
}

// PendingArchives lists the groups in the archive index.
func (s *Store) PendingArchives(ctx context.Context) ([]string, error) {
	return s.indexMembers(ctx, "archive")
}

// groupKeys are a group's keys, its jobs' and their histories'.
func (s *Store) groupKeys(id string, jobIDs []string) []string {
	keys := []string{s.groupKey(id), s.groupJobsKey(id), s.groupIncKey(id)}
	for _, j := range jobIDs {
		keys = append(keys, s.jobKey(j), s.histKey(j))
	}
	return keys
}

// HoldGroup takes the retention TTL off a group's keys, so a group whose archive write failed
// cannot expire before a later tick archives it.
func (s *Store) HoldGroup(ctx context.Context, id string) error {
	jobIDs, err := s.rdb.SMembers(ctx, s.groupJobsKey(id)).Result()
	if err != nil {
		return fmt.Errorf("hold group %s: %w", id, err)
	}
	pipe := s.rdb.Pipeline()
	for _, k := range s.groupKeys(id, jobIDs) {
		pipe.Persist(ctx, k)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("hold group %s: %w", id, err)
	}
	return nil
}

// Archived records that a group's record is in the object store: it leaves the archive index
// and its keys get the retention TTL again (they stay readable until then, as after a delete).
func (s *Store) Archived(ctx context.Context, id string) error {
	jobIDs, err := s.rdb.SMembers(ctx, s.groupJobsKey(id)).Result()
	if err != nil {
		return fmt.Errorf("archived group %s: %w", id, err)
	}
	pipe := s.rdb.TxPipeline()
	for _, k := range s.groupKeys(id, jobIDs) {
		pipe.PExpire(ctx, k, s.opts.RetentionTTL)
	}
	pipe.SRem(ctx, s.archiveIndexKey(id), id)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("archived group %s: %w", id, err)
	}
	return nil
}

// GroupRecord reads a group, deleted or not, with all its jobs and their histories. A group
// whose keys are gone is ErrNotFound.
func (s *Store) GroupRecord(ctx context.Context, id string) (*GroupRecord, error) {
	if fe := checkID(id, "id"); fe != nil {
		return nil, invalid("get group record", fe)
	}
	pipe := s.rdb.Pipeline()
	gc := pipe.HGetAll(ctx, s.groupKey(id))
	jc := pipe.SMembers(ctx, s.groupJobsKey(id))
	ic := pipe.SMembers(ctx, s.groupIncKey(id))
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("get group record %s: %w", id, err)
	}
	h := gc.Val()
	if h["doc"] == "" {
		return nil, &GuardError{Op: "get record", Kind: "group", ID: id, Guard: GuardExists, Want: "group", Got: "none"}
	}
	g, err := decodeGroup(h["doc"])
	if err != nil {
		return nil, err
	}
	rec := &GroupRecord{CreatedAt: msTime(h["created_at"]), Histories: map[string][]model.HistoryEntry{}}
	if h["deleted_at"] != "" {
		t := msTime(h["deleted_at"])
		rec.DeletedAt = &t
	}
	ids := jc.Val()
	pipe = s.rdb.Pipeline()
	jobs := make([]*redis.MapStringStringCmd, len(ids))
	for i, j := range ids {
		jobs[i] = pipe.HGetAll(ctx, s.jobKey(j))
	}
	if len(ids) > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, fmt.Errorf("get group record %s: %w", id, err)
		}
	}
	hs := make([]map[string]string, len(jobs))
	for i, c := range jobs {
		hs[i] = c.Val()
	}
	// Readers do not see deleted jobs; the record keeps them, manifests included.
	decoded, err := s.decodeJobs(ctx, hs, true)
	if err != nil {
		return nil, err
	}
	g.Jobs = []model.Job{}
	for _, j := range decoded {
		g.Jobs = append(g.Jobs, *j)
		hist, err := s.History(ctx, j.ID)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return nil, err
		}
		rec.Histories[j.ID] = hist
	}
	rec.Incompliances = []model.Incompliance{}
	for _, inc := range ic.Val() {
		in, err := s.GetIncompliance(ctx, inc)
		if errors.Is(err, ErrNotFound) {
			continue // expired
		}
		if err != nil {
			return nil, err
		}
		rec.Incompliances = append(rec.Incompliances, *in)
	}
	rec.Group = *g
	return rec, nil
}

// Unmark takes a group out of the archive index without archiving it (it was not deleted
// after all, or nothing of it is left).
func (s *Store) Unmark(ctx context.Context, id string) error {
	if err := s.rdb.SRem(ctx, s.archiveIndexKey(id), id).Err(); err != nil {
		return fmt.Errorf("unmark group %s for archive: %w", id, err)
	}
	return nil
}

// StoppedGroups lists the live groups whose jobs are all finished DeleteDeployments (stopped,
// nothing deployed) and unchanged since before cutoff: those the archive retires. It reads
// no manifests, in three round trips whatever the number of groups.
func (s *Store) StoppedGroups(ctx context.Context, cutoff time.Time) ([]string, error) {
	groupIDs, err := s.indexMembers(ctx, "groups")
	if err != nil || len(groupIDs) == 0 {
		return nil, err
	}
	pipe := s.rdb.Pipeline()
	members := make([]*redis.StringSliceCmd, len(groupIDs))
	for i, id := range groupIDs {
		members[i] = pipe.SMembers(ctx, s.groupJobsKey(id))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("reading %d groups: %w", len(groupIDs), err)
	}
	var jobIDs []string
	for _, m := range members {
		jobIDs = append(jobIDs, m.Val()...)
	}
	jobs, err := s.fetchJobStatus(ctx, jobIDs)
	if err != nil {
		return nil, err
	}
	stopped := map[string]bool{}
	for i, id := range groupIDs {
		stopped[id] = len(members[i].Val()) > 0
	}
	for _, j := range jobs {
		if j.Type != model.DeleteDeployment || j.State != model.Finished || !j.UpdatedAt.Before(cutoff) {
			stopped[j.JobGroupID] = false
		}
	}
	var out []string
	for _, id := range groupIDs {
		if stopped[id] {
			out = append(out, id)
		}
	}
	return out, nil
}
