package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
)

// A rollout in waves (model.Rollout) lives in its group's hash, field `rollout` (JSON), and
// the group is in its bucket's idx:rollouts while the rollout is rolling. The jobs of the
// waves not started yet carry the field `hold` (the rollout's id): the promote script refuses
// a held Created job (guard "hold"), and a held job is neither in the ready index nor
// announced, so no executor tries it. Creating the group (CreateGroup with g.Rollout set) or
// re-opening a job (Reopen.Hold) holds it in the same step; AdvanceRollout releases a wave in
// the same step as it writes the rollout, compare-and-set on the rollout read, so of two
// ticks racing only one advances it.
//
//	P:{b:xy}:idx:rollouts   set   groups whose rollout is rolling

// ErrHeld: the job is held by a rollout until its wave starts.
var ErrHeld = errors.New("held by a rollout")

// GuardHold: the job is not held by a rollout.
const GuardHold = "hold"

func init() { guardSentinels[GuardHold] = ErrHeld }

// holdLua holds and releases jobs. A held job leaves the ready index (no sweep tries it) and
// is not announced; a released Created job goes back to the ready index and is announced.
const holdLua = `
local function hold(id, orch, rollout, owner)
  redis.call('HSET', job_key(id), 'hold', rollout)
  if orch ~= '' then redis.call('SREM', idx('ready:' .. orch .. ':' .. (owner or '')), id) end
end
local function unhold(id, orch, owner)
  if orch ~= '' then redis.call('SADD', idx('ready:' .. orch .. ':' .. (owner or '')), id) end
end
`

// advanceRolloutLua writes a group's rollout if it is still the one read, and releases the
// jobs of the wave that starts (those still held by this rollout). The group stays in
// idx:rollouts while the rollout is rolling.
// KEYS: group. ARGV: prefix, group id, the rollout read, the new rollout, rolling (1/0), the
// rollout's id, then the ids of the jobs to release; emitter.
const advanceRolloutLua = prelude + holdLua + `
local g = redis.call('HMGET', KEYS[1], 'doc', 'deleted_at', 'rollout')
if not g[1] or g[2] then return guard('exists', 'group ' .. ARGV[2], 'none') end
if (g[3] or '') ~= ARGV[3] then return guard('rollout', 'the rollout read', 'another') end
redis.call('HSET', KEYS[1], 'rollout', ARGV[4])
if ARGV[5] == '1' then redis.call('SADD', idx('rollouts'), ARGV[2]) else redis.call('SREM', idx('rollouts'), ARGV[2]) end
local released = 0
for i = 7, #ARGV - 2 do
  local id = ARGV[i]
  if redis.call('HGET', job_key(id), 'hold') == ARGV[6] then
    redis.call('HDEL', job_key(id), 'hold')
    local j = load(job_key(id))
    if j and j.state == '1' then
      unhold(id, iorch(j), j.owner)
      emit(job_key(id))
    end
    released = released + 1
  end
end
return reply({'ok', tostring(released)})
`

var advanceRolloutScript = redis.NewScript(advanceRolloutLua)

// GuardRollout: the group's rollout is still the one the caller read.
const GuardRollout = "rollout"

// ErrRolloutChanged: the group's rollout changed since it was read (another tick advanced
// it, or a new change started one): read again.
var ErrRolloutChanged = errors.New("rollout changed")

func init() { guardSentinels[GuardRollout] = ErrRolloutChanged }

// RolloutRead is a group's rollout as read, and the stored text a compare-and-set needs.
type RolloutRead struct {
	GroupID string
	Rollout *model.Rollout
	raw     string
}

// GetRollout reads a group's rollout (nil Rollout: the group never had one).
func (s *Store) GetRollout(ctx context.Context, groupID string) (RolloutRead, error) {
	if err := invalid("get rollout", checkID(groupID, "id")); err != nil {
		return RolloutRead{}, err
	}
	raw, err := s.rdb.HGet(ctx, s.groupKey(groupID), "rollout").Result()
	if errors.Is(err, redis.Nil) {
		return RolloutRead{GroupID: groupID}, nil
	}
	if err != nil {
		return RolloutRead{}, fmt.Errorf("get rollout of group %s: %w", groupID, err)
	}
	r, err := decodeRollout(raw)
	return RolloutRead{GroupID: groupID, Rollout: r, raw: raw}, err
}

func decodeRollout(raw string) (*model.Rollout, error) {
	if raw == "" {
		return nil, nil
	}
	var r model.Rollout
	if err := json.Unmarshal([]byte(raw), &r); err != nil {
		return nil, fmt.Errorf("decoding rollout: %w", err)
	}
	return &r, nil
}

// AdvanceRollout writes next as the group's rollout if it is still the one read
// (ErrRolloutChanged otherwise) and, in the same step, releases the jobs listed that this
// rollout still holds (announcing those in Created). It returns how many it released.
func (s *Store) AdvanceRollout(ctx context.Context, read RolloutRead, next *model.Rollout, release []string) (int, error) {
	const op = "advance rollout"
	if err := invalid(op, checkID(read.GroupID, "id")); err != nil {
		return 0, err
	}
	for _, id := range release {
		if model.Bucket(id) != model.Bucket(read.GroupID) {
			return 0, invalid(op, checkID("", "job of group "+read.GroupID))
		}
	}
	b, err := json.Marshal(next)
	if err != nil {
		return 0, err
	}
	args := []any{s.bucket(read.GroupID), read.GroupID, read.raw, string(b), flag(next.Active()), next.ID}
	for _, id := range release {
		args = append(args, id)
	}
	out, err := s.run(ctx, advanceRolloutScript, op, "group", read.GroupID, []string{s.groupKey(read.GroupID)}, args...)
	if err != nil {
		return 0, err
	}
	var n int
	_, _ = fmt.Sscan(out[1], &n)
	return n, nil
}

// RollingGroups lists the groups whose rollout is rolling (one round trip per server).
func (s *Store) RollingGroups(ctx context.Context) ([]string, error) {
	return s.indexMembers(ctx, "rollouts")
}

// PreviousManifests are the manifests a job ran with before a rollout re-opened it (false:
// none were kept: the rollout created the job).
func (s *Store) PreviousManifests(ctx context.Context, jobID string) ([]model.PlainManifest, bool, error) {
	if err := invalid("previous manifests", checkID(jobID, "job_id")); err != nil {
		return nil, false, err
	}
	raw, err := s.rdb.HGet(ctx, s.jobKey(jobID), "prev_manifests").Result()
	if errors.Is(err, redis.Nil) || (err == nil && raw == "") {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("previous manifests of job %s: %w", jobID, err)
	}
	ms, err := s.readManifestsField(ctx, raw)
	return ms, err == nil, err
}

// readManifestsField reads a manifests field: JSON, or a reference to the object store.
func (s *Store) readManifestsField(ctx context.Context, raw string) ([]model.PlainManifest, error) {
	if key, ok := offloaded(map[string]string{"manifests": raw}); ok {
		j := &model.Job{}
		err := s.loadManifests(ctx, map[string][]*model.Job{key: {j}})
		return j.Manifests, err
	}
	var ms []model.PlainManifest
	if err := json.Unmarshal([]byte(raw), &ms); err != nil {
		return nil, fmt.Errorf("decoding manifests: %w", err)
	}
	return ms, nil
}

// rolloutArgs appends the create script's rollout arguments: the rollout (written when write
// is set: a new group's; jobs added to a group were planned by StartRollout, which wrote it),
// the number of jobs it holds, their ids, the hold (its id). A group created without one holds
// nothing.
func rolloutArgs(args []any, r *model.Rollout, write bool) ([]any, error) {
	if r == nil {
		return append(args, "", 0, ""), nil
	}
	b, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	if !write {
		b = nil
	}
	held := r.Held()
	args = append(args, string(b), len(held))
	for _, id := range held {
		args = append(args, id)
	}
	return append(args, r.ID), nil
}

// StartRollout writes plan as the group's rollout unless another one is rolling. It returns
// the rollout in force: plan, or the stored one when it has plan's id (a redelivered order
// goes on with what its first delivery planned, fences included). ok is false when another
// rollout is rolling: the returned one, which keeps plan from starting.
func (s *Store) StartRollout(ctx context.Context, groupID string, plan *model.Rollout) (*model.Rollout, bool, error) {
	for {
		read, err := s.GetRollout(ctx, groupID)
		if err != nil {
			return nil, false, err
		}
		switch {
		case read.Rollout != nil && read.Rollout.ID == plan.ID:
			return read.Rollout, true, nil
		case read.Rollout.Active():
			return read.Rollout, false, nil
		}
		_, err = s.AdvanceRollout(ctx, read, plan, nil)
		if errors.Is(err, ErrRolloutChanged) {
			continue // another order started one meanwhile: look again
		}
		return plan, err == nil, err
	}
}

// AddHeldJobs is AddJobs for jobs a rollout (started by StartRollout) plans: those of its
// later waves are stored held, in the same step; the others are announced.
func (s *Store) AddHeldJobs(ctx context.Context, groupID string, jobs []model.Job, by string, r *model.Rollout) error {
	return s.addJobs(ctx, groupID, jobs, by, r)
}

// DropFromRollout takes the jobs given out of the group's rollout rolloutID while it rolls
// (model.Rollout.Without): the jobs of a change that did not take it, so that the rollout the
// change started never waits for them. Another rollout, or one that ended, is left alone.
func (s *Store) DropFromRollout(ctx context.Context, groupID, rolloutID string, jobIDs []string) error {
	for {
		read, err := s.GetRollout(ctx, groupID)
		if err != nil || read.Rollout == nil || read.Rollout.ID != rolloutID || !read.Rollout.Active() {
			return err
		}
		_, err = s.AdvanceRollout(ctx, read, read.Rollout.Without(jobIDs), nil)
		if !errors.Is(err, ErrRolloutChanged) {
			return err
		}
	}
}
