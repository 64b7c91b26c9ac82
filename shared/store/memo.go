package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/redis/go-redis/v9"
)

// Memos of delivered events: what makes every handler idempotent on an event's source+id.
// The keys live under the store's prefix, per scope (a function and the hub it acts for).

// MemoPending is the value of a memo whose delivery is still being handled.
const MemoPending = "pending"

// BeginMemo marks a delivery of an event as being handled, for pending at most (a delivery
// that dies holds its duplicates back no longer). It reports false when a memo exists already
// (handled, or being handled): read it with Memo.
func (s *Store) BeginMemo(ctx context.Context, scope, source, id string, pending time.Duration) (bool, error) {
	ok, err := s.rdb.SetNX(ctx, s.memoKey(scope, source, id), MemoPending, pending).Result()
	if err != nil {
		return false, fmt.Errorf("idempotency memo: %w", err)
	}
	return ok, nil
}

// Memo reads the memo of an event: MemoPending while it is being handled, the remembered
// answer once it was, "" when there is none (it was forgotten, or has expired).
func (s *Store) Memo(ctx context.Context, scope, source, id string) (string, error) {
	v, err := s.rdb.Get(ctx, s.memoKey(scope, source, id)).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("idempotency memo: %w", err)
	}
	return v, nil
}

// PutMemo remembers the answer to an event for ttl.
func (s *Store) PutMemo(ctx context.Context, scope, source, id, answer string, ttl time.Duration) error {
	if err := s.rdb.Set(ctx, s.memoKey(scope, source, id), answer, ttl).Err(); err != nil {
		return fmt.Errorf("idempotency memo: %w", err)
	}
	return nil
}

// ForgetMemo drops the memo of an event, so its redelivery is handled again.
func (s *Store) ForgetMemo(ctx context.Context, scope, source, id string) error {
	if err := s.rdb.Del(ctx, s.memoKey(scope, source, id)).Err(); err != nil {
		return fmt.Errorf("idempotency memo: %w", err)
	}
	return nil
}

// StartCooldown starts the cooldown of a policy on a job (an alert storm yields one
// remediation): it reports false when the policy fired on the job less than ttl ago. by names
// who started it (the incompliance); a cooldown by started before (an earlier delivery of the
// same incompliance) is by's still: it reports true.
func (s *Store) StartCooldown(ctx context.Context, jobID, policy, by string, ttl time.Duration) (bool, error) {
	key := s.cooldownKey(jobID, policy)
	ok, err := s.rdb.SetNX(ctx, key, by, ttl).Result()
	if err == nil && !ok {
		var holder string
		holder, err = s.rdb.Get(ctx, key).Result()
		ok = holder == by
		if errors.Is(err, redis.Nil) {
			return s.StartCooldown(ctx, jobID, policy, by, ttl) // it just expired
		}
	}
	if err != nil {
		return false, fmt.Errorf("incompliance cooldown: %w", err)
	}
	return ok, nil
}

// EndCooldown ends a cooldown early (the remediation it was for did not happen).
func (s *Store) EndCooldown(ctx context.Context, jobID, policy string) error {
	if err := s.rdb.Del(ctx, s.cooldownKey(jobID, policy)).Err(); err != nil {
		return fmt.Errorf("incompliance cooldown: %w", err)
	}
	return nil
}

// HubRecord is what a hub says of itself in the registry: the clusters it manages, until when.
type HubRecord struct {
	Clusters []string  `json:"clusters"`
	Until    time.Time `json:"until"`
}

// RegisterHub records (again) that hubID manages clusters, for ttl: the hubs sharing this
// store learn from the registry whether any of them manages a job's cluster.
func (s *Store) RegisterHub(ctx context.Context, hubID string, clusters []string, ttl time.Duration) error {
	sort.Strings(clusters)
	b, err := json.Marshal(HubRecord{Clusters: clusters, Until: time.Now().Add(ttl).UTC()})
	if err != nil {
		return err
	}
	if err := s.rdb.HSet(ctx, s.hubsKey(), hubID, b).Err(); err != nil {
		return fmt.Errorf("registering hub %s: %w", hubID, err)
	}
	return nil
}

// Hubs lists the hubs whose registration has not lapsed, by hub id.
func (s *Store) Hubs(ctx context.Context) (map[string]HubRecord, error) {
	raw, err := s.rdb.HGetAll(ctx, s.hubsKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("reading the hub registry: %w", err)
	}
	out := map[string]HubRecord{}
	now := time.Now()
	for id, v := range raw {
		var r HubRecord
		if json.Unmarshal([]byte(v), &r) == nil && r.Until.After(now) {
			out[id] = r
		}
	}
	return out, nil
}
