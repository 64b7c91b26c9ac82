package store

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// CheckConsistency recomputes every index from the job and group hashes and compares it with
// the stored indexes, and checks that each live job's newest history entry ends in the job's
// state and fence: the invariants every script keeps. It returns one line per disagreement.
// It scans the whole keyspace under the prefix: a diagnostic for tests, the chaos suite and
// operators, never used on a hot path.
func (s *Store) CheckConsistency(ctx context.Context) ([]string, error) {
	keys, err := s.scan(ctx, s.opts.Prefix+":*")
	if err != nil {
		return nil, err
	}
	want := map[string]map[string]string{} // index key → member → score ("" for sets)
	got := map[string]map[string]string{}
	add := func(key, member, score string) {
		if want[key] == nil {
			want[key] = map[string]string{}
		}
		want[key][member] = score
	}
	var problems []string
	for _, k := range keys {
		bp, rest, ok := strings.Cut(k, "}:")
		if !ok {
			continue // install-wide keys (hub registry, locks)
		}
		bp += "}"
		switch {
		case strings.HasPrefix(rest, "idx:archive"), strings.HasPrefix(rest, "idx:inc-pending"):
			// Indexes of groups and incompliances, not of jobs.
		case strings.HasPrefix(rest, "idx:"):
			m := map[string]string{}
			if rest == "idx:created-since" {
				// Scored by when the job entered Created: only membership is checked.
				ms, err := s.rdb.ZRange(ctx, k, 0, -1).Result()
				if err != nil {
					return nil, err
				}
				for _, x := range ms {
					m[x] = ""
				}
			} else if strings.HasPrefix(rest, "idx:lease:") {
				zs, err := s.rdb.ZRangeWithScores(ctx, k, 0, -1).Result()
				if err != nil {
					return nil, err
				}
				for _, z := range zs {
					m[z.Member.(string)] = strconv.FormatFloat(z.Score, 'f', 0, 64)
				}
			} else {
				ms, err := s.rdb.SMembers(ctx, k).Result()
				if err != nil {
					return nil, err
				}
				for _, x := range ms {
					m[x] = ""
				}
			}
			got[k] = m
		case strings.HasPrefix(rest, "group:") && !strings.HasSuffix(rest, ":jobs") && !strings.HasSuffix(rest, ":inc"):
			h, err := s.rdb.HGetAll(ctx, k).Result()
			if err != nil {
				return nil, err
			}
			if h["deleted_at"] == "" {
				add(indexKey(bp, "groups"), strings.TrimPrefix(rest, "group:"), "")
				if r, _ := decodeRollout(h["rollout"]); r.Active() {
					add(indexKey(bp, "rollouts"), strings.TrimPrefix(rest, "group:"), "")
				}
				if pb, _ := decodeBinding(h["placement"]); len(pb.Bound) > 0 {
					add(indexKey(bp, "placements"), strings.TrimPrefix(rest, "group:"), "")
				}
			}
		case strings.HasPrefix(rest, "job:"):
			h, err := s.rdb.HGetAll(ctx, k).Result()
			if err != nil {
				return nil, err
			}
			if h["deleted_at"] != "" {
				continue
			}
			id := strings.TrimPrefix(rest, "job:")
			add(indexKey(bp, "state:"+h["state"]), id, "")
			if h["state"] == "1" {
				add(indexKey(bp, "created-since"), id, "")
			}
			if h["owner"] != "" {
				add(indexKey(bp, "owner:"+h["owner"]), id, "")
			}
			if h["targets"] != "" && h["orch"] != "" {
				switch {
				case h["state"] == "1" && h["hold"] == "":
					// A job held by a rollout is out of the ready index (rollout.go).
					add(indexKey(bp, "ready:"+h["orch"]+":"+h["owner"]), id, "")
				case h["state"] == "2" && h["type"] == "5":
					add(indexKey(bp, "lease:"+h["orch"]), id, h["lease_until"])
				}
			}
			problems = append(problems, s.checkHistory(ctx, id, h)...)
		}
	}
	for k, m := range want {
		for id, score := range m {
			gs, ok := got[k][id]
			switch {
			case !ok:
				problems = append(problems, fmt.Sprintf("index %s lacks %s", k, id))
			case gs != score:
				problems = append(problems, fmt.Sprintf("index %s has %s with score %s, want %s", k, id, gs, score))
			}
		}
	}
	for k, m := range got {
		for id := range m {
			if _, ok := want[k][id]; !ok {
				problems = append(problems, fmt.Sprintf("index %s has %s, which it should not", k, id))
			}
		}
	}
	sort.Strings(problems)
	return problems, nil
}

// checkHistory compares a job's newest history entry with its hash.
func (s *Store) checkHistory(ctx context.Context, id string, h map[string]string) []string {
	raw, err := s.rdb.LIndex(ctx, s.histKey(id), 0).Result()
	if err != nil {
		return []string{fmt.Sprintf("job %s: no history (%v)", id, err)}
	}
	var e struct {
		Action string `json:"action"`
		To     int    `json:"to"`
		Fence  uint64 `json:"fence"`
	}
	if err := json.Unmarshal([]byte(raw), &e); err != nil {
		return []string{fmt.Sprintf("job %s: unreadable history entry %q", id, raw)}
	}
	var out []string
	if strconv.Itoa(e.To) != h["state"] {
		out = append(out, fmt.Sprintf("job %s: state %s, but its newest history entry (%s) ends in %d", id, h["state"], e.Action, e.To))
	}
	if f, _ := strconv.ParseUint(h["fence"], 10, 64); e.Fence != f {
		out = append(out, fmt.Sprintf("job %s: fence %d, but its newest history entry (%s) has fence %d", id, f, e.Action, e.Fence))
	}
	return out
}

// scan lists the keys matching pattern, on every master of a cluster.
func (s *Store) scan(ctx context.Context, pattern string) ([]string, error) {
	var mu sync.Mutex
	var keys []string
	each := func(ctx context.Context, c *redis.Client) error {
		it := c.Scan(ctx, 0, pattern, 1000).Iterator()
		for it.Next(ctx) {
			mu.Lock()
			keys = append(keys, it.Val())
			mu.Unlock()
		}
		return it.Err()
	}
	var err error
	switch c := s.rdb.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(ctx, each)
	case *redis.Client:
		err = each(ctx, c)
	default:
		return nil, fmt.Errorf("consistency check: unsupported client %T", s.rdb)
	}
	sort.Strings(keys)
	return keys, err
}
