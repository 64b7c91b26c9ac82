package store

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/redis/go-redis/v9"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
)

// GroupActivity is what happened to a live job group: its jobs' histories merged into one
// timeline and the incompliances reported about it, with what became of them.
type GroupActivity struct {
	GroupID string `json:"group_id"`
	// History is every entry of every job's history, newest first.
	History []JobHistoryEntry `json:"history"`
	// Incompliances are those reported about the group and not expired yet, newest first.
	Incompliances []model.Incompliance `json:"incompliances"`
}

// JobHistoryEntry is a history entry with the job it belongs to.
type JobHistoryEntry struct {
	JobID string `json:"job_id"`
	model.HistoryEntry
}

// GroupActivity reads a live group's activity in three round trips whatever its size: the
// group, its job ids and incompliance ids; the jobs' histories; the incompliances. A group
// that does not exist or was deleted is ErrNotFound, as for GetGroup.
func (s *Store) GroupActivity(ctx context.Context, id string) (*GroupActivity, error) {
	if fe := checkID(id, "id"); fe != nil {
		return nil, invalid("get group activity", fe)
	}
	pipe := s.rdb.Pipeline()
	gc := pipe.HMGet(ctx, s.groupKey(id), "doc", "deleted_at")
	jc := pipe.SMembers(ctx, s.groupJobsKey(id))
	ic := pipe.SMembers(ctx, s.groupIncKey(id))
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("get group activity %s: %w", id, err)
	}
	if v := gc.Val(); v[0] == nil || v[0] == "" || v[1] != nil {
		return nil, &GuardError{Op: "get activity", Kind: "group", ID: id, Guard: GuardExists, Want: "group", Got: "none"}
	}
	jobIDs, incIDs := jc.Val(), ic.Val()
	pipe = s.rdb.Pipeline()
	hists := make([]*redis.StringSliceCmd, len(jobIDs))
	for i, j := range jobIDs {
		hists[i] = pipe.LRange(ctx, s.histKey(j), 0, -1)
	}
	incs := make([]*redis.MapStringStringCmd, len(incIDs))
	for i, inc := range incIDs {
		incs[i] = pipe.HGetAll(ctx, s.incKey(inc))
	}
	if len(jobIDs)+len(incIDs) > 0 {
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("get group activity %s: %w", id, err)
		}
	}
	out := &GroupActivity{GroupID: id, History: []JobHistoryEntry{}, Incompliances: []model.Incompliance{}}
	for i, j := range jobIDs {
		entries, err := decodeHistory(j, hists[i].Val())
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			out.History = append(out.History, JobHistoryEntry{JobID: j, HistoryEntry: e})
		}
	}
	for i, inc := range incIDs {
		h := incs[i].Val()
		if h["doc"] == "" {
			continue // expired since the set was read
		}
		in, err := decodeIncompliance(inc, h)
		if err != nil {
			return nil, err
		}
		out.Incompliances = append(out.Incompliances, *in)
	}
	// Newest first; entries of one instant keep a fixed order (by job, then as recorded).
	sort.SliceStable(out.History, func(a, b int) bool {
		ea, eb := out.History[a], out.History[b]
		if !ea.At.Equal(eb.At) {
			return ea.At.After(eb.At)
		}
		return ea.JobID < eb.JobID
	})
	sort.SliceStable(out.Incompliances, func(a, b int) bool {
		ra, rb := out.Incompliances[a].ReceivedAt, out.Incompliances[b].ReceivedAt
		if !ra.Equal(*rb) {
			return ra.After(*rb)
		}
		return out.Incompliances[a].ID < out.Incompliances[b].ID
	})
	return out, nil
}
