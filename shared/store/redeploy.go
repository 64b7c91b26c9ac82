package store

import (
	"context"

	"github.com/redis/go-redis/v9"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
)

// redeployLua records what the owner of a Progressing job deployed: new manifests (a
// remediation) and/or a new target (a reallocation). Nothing changes when both are as stored.
// KEYS: job. ARGV: prefix, id, owner, fence, manifests (” keep), targets (” keep), orch,
// history cap, by, why.
const redeployLua = prelude + ownerGuards + `
if j.state ~= '2' then return guard('state', '2', j.state) end
local changed = false
if ARGV[5] ~= '' and redis.call('HGET', KEYS[1], 'manifests') ~= ARGV[5] then
  redis.call('HSET', KEYS[1], 'manifests', ARGV[5])
  changed = true
end
if ARGV[6] ~= '' and (j.targets ~= ARGV[6] or j.orch ~= ARGV[7]) then
  redis.call('HSET', KEYS[1], 'targets', ARGV[6], 'orch', ARGV[7])
  reindex(ARGV[2], was(j), memberships(j.state, j.type, j.owner, ARGV[7], j.lu))
  changed = true
end
if not changed then return {'ok', '0'} end
local now = now_ms()
redis.call('HSET', KEYS[1], 'updated_at', string.format('%d', now))
history(ARGV[2], ARGV[8], now, ARGV[9], 'redeploy', 2, 2, ARGV[10], j.fence)
return {'ok', '1'}
`

var redeployScript = redis.NewScript(redeployLua)

// Redeploy records, for the owner of a Progressing job, what its execution deployed: the
// manifests after a remediation and/or the target after a reallocation (nil or empty keeps
// what is stored). One round trip, guarded by owner and fence; it reports whether anything
// changed, so a re-executed remediation computed from the stored manifests is idempotent.
func (s *Store) Redeploy(ctx context.Context, c Claim, manifests []model.PlainManifest, target *model.Target, why string) (bool, error) {
	const op = "redeploy"
	if err := c.check(op); err != nil {
		return false, err
	}
	errs := s.manifestBytes(manifests)
	if target != nil {
		errs = errs.Also(target.Validate().ViaField("targets"))
	}
	if err := invalid(op, errs); err != nil {
		return false, err
	}
	ms, targets, orch := "", "", ""
	var err error
	if len(manifests) > 0 {
		if ms, err = s.manifestsField(ctx, manifests); err != nil {
			return false, err
		}
	}
	if target != nil {
		if targets, err = marshal(target); err != nil {
			return false, err
		}
		orch = string(target.Orchestrator)
	}
	out, err := s.run(ctx, redeployScript, op, "job", c.JobID, []string{s.jobKey(c.JobID)},
		s.bucket(c.JobID), c.JobID, c.Owner, c.Fence, ms, targets, orch, s.opts.HistoryCap, jsonString(c.Owner), jsonString(clip(why)))
	if err != nil {
		return false, err
	}
	return out[1] == "1", nil
}
