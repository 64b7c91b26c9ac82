package store

import (
	"context"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
)

// recordLua records, for the owner of a Progressing job, what its execution decided or did
// on the hub: new manifests (a remediation's result, with the fence it was computed at), a new
// target (a reallocation), the reallocation in progress. Nothing changes when all is as stored.
// The history calls a change of manifests 'remediate' and a reallocation's step 'move'.
// KEYS: job. ARGV: prefix, id, owner, fence, manifests (” keep), targets (” keep), orch,
// history cap, by, why, remediated (1/0), move (” keep, '-' clear, else the move), action,
// emitter.
const recordLua = prelude + ownerGuards + `
if j.state ~= '2' then return guard('state', '2', j.state) end
local changed, noted = false, false
if ARGV[5] ~= '' and redis.call('HGET', KEYS[1], 'manifests') ~= ARGV[5] then
  redis.call('HSET', KEYS[1], 'manifests', ARGV[5])
  changed = true
end
if ARGV[6] ~= '' and (j.targets ~= ARGV[6] or j.orch ~= ARGV[7]) then
  redis.call('HSET', KEYS[1], 'targets', ARGV[6], 'orch', ARGV[7])
  reindex(ARGV[2], was(j), memberships(j.state, j.type, j.owner, ARGV[7], j.lu))
  changed = true
end
if ARGV[11] == '1' and redis.call('HGET', KEYS[1], 'remediated') ~= ARGV[4] then
  redis.call('HSET', KEYS[1], 'remediated', ARGV[4])
  noted = true
end
if ARGV[12] == '-' then
  if redis.call('HDEL', KEYS[1], 'move') == 1 then noted = true end
elseif ARGV[12] ~= '' and redis.call('HGET', KEYS[1], 'move') ~= ARGV[12] then
  redis.call('HSET', KEYS[1], 'move', ARGV[12])
  changed = true
end
if not changed and not noted then return {'ok', '0'} end
local now = now_ms()
redis.call('HSET', KEYS[1], 'updated_at', string.format('%d', now))
if changed then history(ARGV[2], ARGV[8], now, ARGV[9], ARGV[13], 2, 2, ARGV[10], j.fence) end
return {'ok', '1'}
`

var recordScript = redis.NewScript(recordLua)

// Record is what an execution records about its job while it runs it.
type Record struct {
	// Manifests, when set, replace the job's manifests.
	Manifests []model.PlainManifest
	// Remediated says Manifests are the remediation result of this execution (its fence):
	// a resumed execution applies them as they are instead of remediating again.
	Remediated bool
	// Target, when set, is where the job runs from now on.
	Target *model.Target
	// Move, when set, is the reallocation in progress; EndMove clears it.
	Move    *model.Move
	EndMove bool
	// Why is recorded in the history.
	Why string
}

// Record writes what an execution of a Progressing job decided or did, for its owner: one
// round trip, guarded by owner and fence. It reports whether anything changed, so recording
// the same thing twice (a resumed execution) is harmless.
func (s *Store) Record(ctx context.Context, c Claim, r Record) (bool, error) {
	const op = "record"
	if err := c.check(op); err != nil {
		return false, err
	}
	errs := s.manifestBytes(r.Manifests)
	if r.Target != nil {
		errs = errs.Also(r.Target.Validate().ViaField("targets"))
	}
	if err := invalid(op, errs); err != nil {
		return false, err
	}
	ms, targets, orch, move := "", "", "", ""
	var err error
	if len(r.Manifests) > 0 {
		if ms, err = s.manifestsField(ctx, r.Manifests); err != nil {
			return false, err
		}
	}
	if r.Target != nil {
		if targets, err = marshal(r.Target); err != nil {
			return false, err
		}
		orch = string(r.Target.Orchestrator)
	}
	switch {
	case r.EndMove:
		move = "-"
	case r.Move != nil:
		if move, err = marshal(r.Move); err != nil {
			return false, err
		}
	}
	action := "move"
	if len(r.Manifests) > 0 {
		action = "remediate"
	}
	out, err := s.run(ctx, recordScript, op, "job", c.JobID, []string{s.jobKey(c.JobID)},
		s.bucket(c.JobID), c.JobID, c.Owner, strconv.FormatUint(c.Fence, 10), ms, targets, orch, s.opts.HistoryCap,
		jsonString(c.Owner), jsonString(clip(r.Why)), flag(r.Remediated), move, action)
	if err != nil {
		return false, err
	}
	return out[1] == "1", nil
}
