package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
)

// What a group's per-instance report reads besides the group: a few reads, pipelined,
// whatever the number of jobs, and nothing from the hub.

// RecentHistory returns the newest n history entries of each job (newest first), in one
// pipeline; a job without history has none in the map.
func (s *Store) RecentHistory(ctx context.Context, jobIDs []string, n int) (map[string][]model.HistoryEntry, error) {
	out := map[string][]model.HistoryEntry{}
	if len(jobIDs) == 0 || n <= 0 {
		return out, nil
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.StringSliceCmd, len(jobIDs))
	for i, id := range jobIDs {
		if fe := checkID(id, "id"); fe != nil {
			return nil, invalid("get history", fe)
		}
		cmds[i] = pipe.LRange(ctx, s.histKey(id), 0, int64(n-1))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("get recent history: %w", err)
	}
	for i, c := range cmds {
		for _, r := range c.Val() {
			e, err := decodeHistoryEntry(r)
			if err != nil {
				return nil, fmt.Errorf("decoding history of job %s: %w", jobIDs[i], err)
			}
			out[jobIDs[i]] = append(out[jobIDs[i]], e)
		}
	}
	return out, nil
}

func decodeHistoryEntry(r string) (model.HistoryEntry, error) {
	var e struct {
		At     int64          `json:"at"`
		By     string         `json:"by"`
		Action string         `json:"action"`
		From   model.JobState `json:"from"`
		To     model.JobState `json:"to"`
		Why    string         `json:"why"`
		Fence  uint64         `json:"fence"`
	}
	if err := json.Unmarshal([]byte(r), &e); err != nil {
		return model.HistoryEntry{}, err
	}
	return model.HistoryEntry{At: time.UnixMilli(e.At).UTC(), By: e.By, Action: e.Action,
		From: e.From, To: e.To, Why: e.Why, Fence: e.Fence}, nil
}

// GroupIncompliances reads the incompliances recorded about a group (those not expired).
func (s *Store) GroupIncompliances(ctx context.Context, groupID string) ([]model.Incompliance, error) {
	if fe := checkID(groupID, "id"); fe != nil {
		return nil, invalid("get group incompliances", fe)
	}
	ids, err := s.rdb.SMembers(ctx, s.groupIncKey(groupID)).Result()
	if err != nil {
		return nil, fmt.Errorf("get incompliances of group %s: %w", groupID, err)
	}
	out := []model.Incompliance{}
	for _, id := range ids {
		in, err := s.GetIncompliance(ctx, id)
		if errors.Is(err, ErrNotFound) || errors.Is(err, ErrInvalid) {
			continue // expired (or a member no incompliance id could be)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, *in)
	}
	return out, nil
}
