package store

import "github.com/redis/go-redis/v9"

// The Lua scripts of the store. Each runs in one bucket (one hash tag, so one Redis Cluster
// slot): KEYS[1] names the object it changes (that is how a cluster client routes it) and
// ARGV[1] is the bucket prefix every other key it touches is built from; those keys carry
// the same hash tag, so they live in the same slot. The last two ARGV of every job script are
// the emitter — the CloudEvents source of the events the change implies — and the caller's W3C
// traceparent ('' outside a trace): run appends them.
//
// A script answers a table: {'ok', …} when it did (or had nothing to do), or
// {'guard', guard, want, got} when a guard failed and it wrote nothing. Guards are checked
// before the first write, so a refused script leaves Redis as it was. A script that changed a
// job's state also appends the event the change implies to the bucket's outbox stream (the
// transactional outbox: the change and its announcement commit together) and returns the
// entries after its answer, behind the marker '#outbox' (see parseOutbox).
//
// Only Lua 5.1 and commands miniredis also has are used (no cjson, no redis.setresp, no
// bit ops); time comes from Redis TIME, so every writer of a job shares one clock.

// prelude is shared by every script that reads or indexes jobs.
const prelude = `
local P = ARGV[1]
local SRC = ARGV[#ARGV - 1]
local TP = ARGV[#ARGV]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function idx(name) return P .. ':idx:' .. name end
local function job_key(id) return P .. ':job:' .. id end
local function hist_key(id) return P .. ':hist:' .. id end

-- load reads the fields guards and indexes need; nil for a missing or deleted job.
local function load(key)
  local f = redis.call('HMGET', key, 'state', 'type', 'owner', 'fence', 'orch', 'targets',
    'lease_holder', 'lease_until', 'deleted_at')
  if not f[1] or f[9] then return nil end
  return {state = f[1], type = f[2], owner = f[3] or '', fence = tonumber(f[4] or '0'),
    orch = f[5] or '', targets = f[6] or '', holder = f[7] or '', lu = tonumber(f[8] or '0')}
end

-- load_ev is load that also reads, in the same command, the fields of the job's event (in
-- EVENT_READ's order, as j.ev: a script that changes a few of them patches them and emits
-- without reading the job again) and the extra fields named (as j.x).
local function load_ev(key, ...)
  local extra = {...}
  local f = redis.call('HMGET', key, 'state', 'type', 'owner', 'fence', 'orch', 'targets',
    'lease_holder', 'lease_until', 'deleted_at', 'doc', 'sub_type', 'resource', 'move', 'created_at',
    'updated_at', 'trace', unpack(extra))
  if not f[1] or f[9] then return nil end
  local j = {state = f[1], type = f[2], owner = f[3] or '', fence = tonumber(f[4] or '0'),
    orch = f[5] or '', targets = f[6] or '', holder = f[7] or '', lu = tonumber(f[8] or '0'), x = {}}
  j.ev = {f[10], f[1], f[2], f[11], f[3], f[4], f[5], f[6], f[12], f[13], f[14], f[15], f[16]}
  for i = 1, #extra do j.x[extra[i]] = f[16 + i] end
  return j
end

-- iorch is the orchestrator a job is indexed under: none until it has a target.
local function iorch(j)
  if j.targets == '' then return '' end
  return j.orch
end

-- memberships lists the indexes a job in this situation belongs to, with its score in the
-- lease index ('' in a set). Only a Progressing CreateDeployment is in the lease index: it
-- is the only job another hub may ever take over. Finished and Degraded are terminal.
local function memberships(st, ty, owner, orch, lu)
  local m = {['state:' .. st] = ''}
  if owner ~= '' then m['owner:' .. owner] = '' end
  if orch ~= '' then
    if st == '1' then
      m['ready:' .. orch .. ':' .. owner] = ''
    elseif st == '2' and ty == '5' then
      m['lease:' .. orch] = string.format('%d', lu)
    end
  end
  return m
end

-- reindex moves a job between indexes, touching only those that change. A job entering
-- Created also enters idx:created-since, scored by when (at, else the Redis clock now: the
-- age of the oldest waiting job is its head), and leaves it with Created.
local function reindex(id, old, new, at)
  if new['state:1'] and not old['state:1'] then
    redis.call('ZADD', idx('created-since'), at or now_ms(), id)
  elseif old['state:1'] and not new['state:1'] then
    redis.call('ZREM', idx('created-since'), id)
  end
  for k in pairs(old) do
    if new[k] == nil then
      if string.sub(k, 1, 6) == 'lease:' then redis.call('ZREM', idx(k), id) else redis.call('SREM', idx(k), id) end
    end
  end
  for k, v in pairs(new) do
    if old[k] ~= v then
      if v ~= '' then redis.call('ZADD', idx(k), v, id) else redis.call('SADD', idx(k), id) end
    end
  end
end

-- was is the index membership of a loaded job.
local function was(j) return memberships(j.state, j.type, j.owner, iorch(j), j.lu) end

-- history prepends one entry to a job's capped history. by and why arrive JSON-encoded.
local function history(id, cap, at, by, action, from, to, why, fence)
  local e = '{"at":' .. string.format('%d', at) .. ',"by":' .. by .. ',"action":"' .. action ..
    '","from":' .. from .. ',"to":' .. to .. ',"why":' .. why .. ',"fence":' .. string.format('%d', fence) .. '}'
  if redis.call('LPUSH', hist_key(id), e) > tonumber(cap) then
    redis.call('LTRIM', hist_key(id), 0, tonumber(cap) - 1)
  end
end

local function guard(name, want, got) return {'guard', name, want, got} end

-- The outbox. emit appends to the bucket's stream the event a job's new state implies — a
-- job that became Created with a target is announced to the executors, every other state to
-- whoever follows jobs — with the job as it is now (without manifests and remediation), and
-- remembers the entry for the answer.
local OUT = {}
local EVENT_OF = {['1'] = 'eu.icos.job.created.v1', ['2'] = 'eu.icos.job.progressing.v1',
  ['3'] = 'eu.icos.job.finished.v1', ['4'] = 'eu.icos.job.degraded.v1'}
local EVENT_FIELDS = {'doc', 'state', 'type', 'sub_type', 'owner', 'fence', 'orch', 'targets', 'resource',
  'move', 'created_at', 'updated_at'}
-- Every entry carries a traceparent, so the trace of the order that opened the job goes on
-- through every event of it: the caller's own when it works in that trace (or the job keeps
-- none), else the one the job kept (status sync's tick finishing a job still announces it in
-- the group's trace).
-- The job's kept trace is read with the event's fields (one command less per change).
local EVENT_READ = {unpack(EVENT_FIELDS)}
table.insert(EVENT_READ, 'trace')
local function trace_of(kept)
  if not kept then return TP end
  if TP ~= '' and string.sub(TP, 4, 35) == string.sub(kept, 4, 35) then return TP end
  return kept
end
-- v, when given, is the job's event fields as the change left them (in EVENT_READ's order,
-- see load_ev), so the job is not read again.
local function emit(key, v)
  v = v or redis.call('HMGET', key, unpack(EVENT_READ))
  if v[2] == '1' and not v[8] then return end
  local f = {'event', EVENT_OF[v[2]], 'source', SRC}
  local n = 4
  local tp = trace_of(v[13])
  if tp ~= '' then f[5] = 'traceparent'; f[6] = tp; n = 6 end
  for i = 1, 12 do
    local x = v[i]
    if x then f[n + 1] = EVENT_FIELDS[i]; f[n + 2] = x; n = n + 2 end
  end
  OUT[#OUT + 1] = {redis.call('XADD', P .. ':outbox', '*', unpack(f, 1, n)), n, f}
end

-- reply is a script's answer with the outbox entries it appended.
local function reply(t)
  if #OUT == 0 then return t end
  local k = #t + 1
  t[k] = '#outbox'
  for _, e in ipairs(OUT) do
    local n, f = e[2], e[3]
    t[k + 1] = e[1]; t[k + 2] = n
    for i = 1, n do t[k + 2 + i] = f[i] end
    k = k + 2 + n
  end
  return t
end
`

// createGroupLua writes a group and all its jobs, or nothing if any of them exists. With an
// empty group doc it adds the jobs to an existing, not deleted group instead. Every job with a
// target is announced (job.created).
// A new group registered with the Policy Manager gets its registration (created) too.
// KEYS: group, group's job set. ARGV: prefix, group id, group doc, history cap, by, why, n,
// then 8 values per job: id, doc, type, sub_type, orch, targets, manifests, resource; then
// register (1 or ”), the descriptor; the rollout (” for none, and when adding jobs under a
// rollout StartRollout wrote), the number of held jobs, their ids, the hold (the rollout's
// id); emitter.
const createGroupLua = prelude + lifecycleLua + holdLua + `
local adding = ARGV[3] == ''
local n = tonumber(ARGV[7])
-- One EXISTS for the group (when new) and every job (per 1,000 keys: Lua unpacks at most
-- 8,000 values); which one exists is looked up only then.
local keys, found = {}, 0
if adding then
  local g = redis.call('HMGET', KEYS[1], 'doc', 'deleted_at')
  if not g[1] or g[2] then return guard('exists', 'group ' .. ARGV[2], 'none') end
else
  keys[1] = KEYS[1]
end
for i = 0, n - 1 do
  keys[#keys + 1] = job_key(ARGV[8 + i * 8])
  if #keys == 1000 then found = found + redis.call('EXISTS', unpack(keys)); keys = {} end
end
if #keys > 0 then found = found + redis.call('EXISTS', unpack(keys)) end
if found > 0 then
  if not adding and redis.call('EXISTS', KEYS[1]) == 1 then
    return guard('absent', 'no group ' .. ARGV[2], 'exists')
  end
  for i = 0, n - 1 do
    local id = ARGV[8 + i * 8]
    if redis.call('EXISTS', job_key(id)) == 1 then return guard('absent', 'no job ' .. id, 'exists') end
  end
end
-- A rollout in waves: its plan, and the jobs of the later waves held (rollout.go).
local rb = 8 + n * 8
local rollout, held = ARGV[rb + 2], {}
for i = rb + 4, rb + 3 + tonumber(ARGV[rb + 3]) do held[ARGV[i]] = ARGV[rb + 4 + tonumber(ARGV[rb + 3])] end
local now_n = now_ms()
local now = string.format('%d', now_n)
if adding then
  redis.call('HSET', KEYS[1], 'updated_at', now)
else
  redis.call('HSET', KEYS[1], 'doc', ARGV[3], 'created_at', now, 'updated_at', now)
  redis.call('SADD', idx('groups'), ARGV[2])
end
for i = 0, n - 1 do
  local b = 8 + i * 8
  local id, ty, orch, targets = ARGV[b], ARGV[b + 2], ARGV[b + 4], ARGV[b + 5]
  local f = {'doc', ARGV[b + 1], 'state', '1', 'type', ty, 'manifests', ARGV[b + 6],
    'created_at', now, 'updated_at', now}
  -- The job's event fields, as written (EVENT_READ's order): emit needs no read.
  local ev = {ARGV[b + 1], '1', ty, nil, nil, nil, nil, nil, nil, nil, now, now, nil}
  if ARGV[b + 3] ~= '' then table.insert(f, 'sub_type'); table.insert(f, ARGV[b + 3]); ev[4] = ARGV[b + 3] end
  if orch ~= '' then table.insert(f, 'orch'); table.insert(f, orch); ev[7] = orch end
  if targets ~= '' then table.insert(f, 'targets'); table.insert(f, targets); ev[8] = targets end
  if ARGV[b + 7] ~= '' then table.insert(f, 'resource'); table.insert(f, ARGV[b + 7]); ev[9] = ARGV[b + 7] end
  if TP ~= '' then table.insert(f, 'trace'); table.insert(f, TP); ev[13] = TP end
  redis.call('HSET', job_key(id), unpack(f))
  redis.call('SADD', KEYS[2], id)
  local io = ''
  if targets ~= '' then io = orch end
  reindex(id, {}, memberships('1', ty, '', io, 0), now_n)
  history(id, ARGV[4], now_n, ARGV[5], 'create', 0, 1, ARGV[6], 0)
  if held[id] then hold(id, io, held[id]) else emit(job_key(id), ev) end
end
if rollout ~= '' then
  redis.call('HSET', KEYS[1], 'rollout', rollout)
  redis.call('SADD', idx('rollouts'), ARGV[2])
end
if not adding and ARGV[rb] == '1' then lifecycle(ARGV[2], 'create', ARGV[rb + 1], tonumber(now)) end
return reply({'ok', now})
`

// deleteGroupLua deletes a group whose every job may be deleted: its keys get the retention
// TTL and its jobs leave every index; its Policy Manager registration, if any, records
// deleted. A group already deleted answers ok again.
// KEYS: group, group's job set. ARGV: prefix, group id, retention ms, history cap, by, why, emitter.
const deleteGroupLua = prelude + lifecycleLua + `
local g = redis.call('HMGET', KEYS[1], 'doc', 'deleted_at')
if not g[1] then return guard('exists', 'group ' .. ARGV[2], 'none') end
if g[2] then return {'ok', '0'} end
local ids = redis.call('SMEMBERS', KEYS[2])
local blocked = {'blocked'}
local jobs = {}
for _, id in ipairs(ids) do
  local j = load(job_key(id))
  if j then
    local deletable = (j.state == '1' and j.fence == 0) or (j.type == '6' and j.state == '3')
    if not deletable then
      table.insert(blocked, id); table.insert(blocked, j.state); table.insert(blocked, j.type)
    end
    table.insert(jobs, {id, j})
  end
end
if #blocked > 1 then return blocked end
local now = now_ms()
local ttl = tonumber(ARGV[3])
for _, e in ipairs(jobs) do
  local id, j = e[1], e[2]
  reindex(id, was(j), {})
  redis.call('HSET', job_key(id), 'deleted_at', now, 'updated_at', now)
  history(id, ARGV[4], now, ARGV[5], 'delete', j.state, j.state, ARGV[6], j.fence)
  redis.call('PEXPIRE', job_key(id), ttl)
  redis.call('PEXPIRE', hist_key(id), ttl)
end
redis.call('HSET', KEYS[1], 'deleted_at', now, 'updated_at', now)
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('SREM', idx('groups'), ARGV[2])
redis.call('SREM', idx('rollouts'), ARGV[2])
redis.call('SREM', idx('placements'), ARGV[2])
lifecycle(ARGV[2], 'delete', '', now)
return {'ok', '1'}
`

// promoteLua makes an execution the owner of a job: a Created job with no owner or this
// owner and no live lease of another execution, or (takeover) a CreateDeployment job in
// Progressing whose lease lapsed more than the takeover TTL ago. A Finished or Degraded job is
// never promoted: only a new order (Reopen) acts on it. The fence grows by one on every
// promote, and the job is announced as Progressing.
// With an expected target (the caller decided from it without reading the job), only a Created
// job stored with exactly that target and orchestrator is promoted.
// KEYS: job. ARGV: prefix, id, owner, holder, lease ms, takeover ms, history cap, by, why,
// return the job (1/0), the expected targets (” for none), their orchestrator, emitter.
const promoteLua = prelude + `
local j = load_ev(KEYS[1], 'hold')
if not j then return guard('exists', 'job', 'none') end
if ARGV[11] ~= '' then
  if j.state ~= '1' then return guard('state', '1', j.state) end
  if j.targets ~= ARGV[11] or j.orch ~= ARGV[12] then return guard('target', ARGV[11], j.targets) end
end
local now = now_ms()
local action = 'promote'
if j.state == '1' then
  if j.owner ~= '' and j.owner ~= ARGV[3] then return guard('owner', ARGV[3], j.owner) end
  if j.lu > now and j.holder ~= ARGV[4] then
    return guard('lease', 'no live lease of another execution', j.holder .. ' for ' .. string.format('%d', j.lu - now) .. 'ms')
  end
elseif j.state == '2' and j.type == '5' then
  local lapse = j.lu + tonumber(ARGV[6])
  if now < lapse then
    return guard('lease', 'lease of ' .. j.owner .. ' lapsed ' .. ARGV[6] .. 'ms ago', 'takeover possible in ' .. string.format('%d', lapse - now) .. 'ms')
  end
  action = 'takeover'
else
  return guard('state', '1', j.state)
end
if j.targets == '' then return guard('target', 'a target', 'none') end
if j.state == '1' and j.x.hold then
  return guard('hold', 'no rollout hold', 'held by rollout ' .. j.x.hold)
end
local fence = j.fence + 1
local lu = now + tonumber(ARGV[5])
local sfence, snow = string.format('%d', fence), string.format('%d', now)
redis.call('HSET', KEYS[1], 'state', '2', 'owner', ARGV[3], 'fence', sfence,
  'lease_holder', ARGV[4], 'lease_until', string.format('%d', lu), 'updated_at', snow)
reindex(ARGV[2], was(j), memberships('2', j.type, ARGV[3], iorch(j), lu))
history(ARGV[2], ARGV[7], now, ARGV[8], action, j.state, 2, ARGV[9], fence)
j.ev[2], j.ev[5], j.ev[6], j.ev[12] = '2', ARGV[3], sfence, snow
emit(KEYS[1], j.ev)
local out = {'ok', string.format('%d', fence), string.format('%d', lu), j.owner, j.state}
if ARGV[10] == '1' then
  -- The promoted job, whole, for the execution that follows (saves it a read).
  local h = redis.call('HGETALL', KEYS[1])
  table.insert(out, '#job')
  table.insert(out, tostring(#h))
  for _, x in ipairs(h) do table.insert(out, x) end
end
return reply(out)
`

// ownerGuards is the start of every script an owner runs: the job exists, the fence is the
// current one, the owner is the caller. ARGV[2] id, ARGV[3] owner, ARGV[4] fence.
const ownerGuards = `
local j = load(KEYS[1])
if not j then return guard('exists', 'job', 'none') end
if j.fence ~= tonumber(ARGV[4]) then return guard('fence', ARGV[4], string.format('%d', j.fence)) end
if j.owner ~= ARGV[3] then return guard('owner', ARGV[3], j.owner) end
`

// changeLua is what an owner changes on its job in one step: its resource (conditions,
// feedback), its state, or both, and whether the execution's lease ends with it. The resource
// may be written only while the stored one is still the one it was derived from (a
// compare-and-set: another writer's change is never lost). Moving to the state the job is in
// changes nothing; a state change is recorded in the history and announced. A job that ends
// (Finished, Degraded) has no reallocation in progress any more.
// KEYS: job. ARGV: prefix, id, owner, fence, to (” keeps the state), allowed from (",2,4,"),
// release lease (1/0), history cap, by, why, action, resource (” keeps it), compare (1/0),
// the resource read (” for none), emitter.
const changeLua = prelude + `
local j = load_ev(KEYS[1])
if not j then return guard('exists', 'job', 'none') end
if j.fence ~= tonumber(ARGV[4]) then return guard('fence', ARGV[4], string.format('%d', j.fence)) end
if j.owner ~= ARGV[3] then return guard('owner', ARGV[3], j.owner) end
local ev = j.ev
local to = ARGV[5]
local res = ARGV[12]
local write_res = false
if res ~= '' then
  local cur = ev[9] or ''
  if cur ~= res then
    if ARGV[13] == '1' and cur ~= ARGV[14] then return guard('resource', 'the resource read', 'another') end
    write_res = true
  end
end
local changes_state = to ~= "" and j.state ~= to
if changes_state and not string.find(ARGV[6], ',' .. j.state .. ',', 1, true) then return guard('state', ARGV[6], j.state) end
if not changes_state and not write_res then return {'ok', '0', '0'} end
local now = now_ms()
local snow = string.format('%d', now)
-- One HSET for everything the change writes.
local h = {'updated_at', snow}
if write_res then table.insert(h, 'resource'); table.insert(h, res); ev[9] = res end
local lu = j.lu
if changes_state then
  if ARGV[7] == '1' and lu > now then lu = now end
  table.insert(h, 'state'); table.insert(h, to)
  table.insert(h, 'lease_until'); table.insert(h, string.format('%d', lu))
end
redis.call('HSET', KEYS[1], unpack(h))
if changes_state then
  if (to == '3' or to == '4') and ev[10] then redis.call('HDEL', KEYS[1], 'move'); ev[10] = nil end
  reindex(ARGV[2], was(j), memberships(to, j.type, j.owner, iorch(j), lu))
  history(ARGV[2], ARGV[8], now, ARGV[9], ARGV[11], j.state, to, ARGV[10], j.fence)
  ev[2], ev[12] = to, snow
  emit(KEYS[1], ev)
end
local m, r = '0', '0'
if changes_state then m = '1' end
if write_res then r = '1' end
return reply({'ok', m, r})
`

// renewLua extends (or, when it lapsed and nobody took the job over, takes again) the lease
// of an owned job in Progressing.
// KEYS: job. ARGV: prefix, id, owner, fence, holder, lease ms, emitter.
const renewLua = prelude + ownerGuards + `
if j.state ~= '2' then return guard('state', ',2,', j.state) end
local now = now_ms()
if j.lu > now and j.holder ~= ARGV[5] then
  return guard('lease', ARGV[5], j.holder .. ' for ' .. string.format('%d', j.lu - now) .. 'ms')
end
local lu = now + tonumber(ARGV[6])
redis.call('HSET', KEYS[1], 'lease_holder', ARGV[5], 'lease_until', string.format('%d', lu))
if j.type == '5' and iorch(j) ~= '' then redis.call('ZADD', idx('lease:' .. iorch(j)), lu, ARGV[2]) end
return {'ok', string.format('%d', lu)}
`

// releaseLua ends an execution's lease now (the takeover TTL counts from here) and, when the
// execution did what the job asked on the hub, records that at its fence ('applied'), so a
// sweep does not take the job for an execution that died half-way.
// KEYS: job. ARGV: prefix, id, owner, fence, holder, applied (1/0), emitter.
const releaseLua = prelude + ownerGuards + `
if j.holder ~= ARGV[5] then return guard('lease', ARGV[5], j.holder) end
local now = now_ms()
-- One HSET for the lease's end and the execution's result.
local h = {}
if j.lu > now then
  h = {'lease_until', string.format('%d', now)}
  if j.state == '2' and j.type == '5' and iorch(j) ~= '' then
    redis.call('ZADD', idx('lease:' .. iorch(j)), now, ARGV[2])
  end
end
if ARGV[6] == '1' then table.insert(h, 'applied'); table.insert(h, ARGV[4]) end
if #h == 0 then return {'ok', '0'} end
redis.call('HSET', KEYS[1], unpack(h))
return {'ok', '1'}
`

// reopenLua turns a Finished or Degraded job (or a re-opened one nobody promoted yet: the
// newer order replaces it) into a Created job of another type, keeping its owner, who alone
// executes it. A job that was never promoted has nothing deployed: Delete finishes it at once,
// Replace only swaps its manifests. What the last execution recorded (applied, remediated,
// move) is cleared: it belongs to that execution.
// A re-open that is part of a group's stop or start records it in the group's Policy
// Manager registration, if any, in the same step.
// An order with a name (a restart) acts only on a job that ran and ended (it never replaces
// an order still waiting), and one that already re-opened this job is not carried out again:
// its redelivery answers the job as it is.
// KEYS: job. ARGV: prefix, id, type, sub_type, remediation, manifests (” keeps them),
// fence (” for any), history cap, by, why, group id, group op (stop, start or ”), order
// (” for none), hold (a rollout's id, ” for none: a held job is released), keep the
// previous manifests (1/0), emitter.
const reopenLua = prelude + lifecycleLua + holdLua + `
local j = load(KEYS[1])
if not j then return guard('exists', 'job', 'none') end
if ARGV[13] ~= '' and redis.call('HGET', KEYS[1], 'order') == ARGV[13] then return {'ok', j.state, j.type, 'seen'} end
if ARGV[13] ~= '' and j.state ~= '3' and j.state ~= '4' then return guard('state', ',3,4,', j.state) end
if ARGV[7] ~= '' and j.fence ~= tonumber(ARGV[7]) then return guard('fence', ARGV[7], string.format('%d', j.fence)) end
local to, ty = '1', ARGV[3]
if j.state == '1' and j.fence == 0 then
  if ty == '6' then to = '3'
  elseif ty == '8' then ty = '5'
  else return guard('state', ',3,4,', '1') end
elseif j.state ~= '1' and j.state ~= '3' and j.state ~= '4' then
  return guard('state', ',3,4,', j.state)
end
local now = now_ms()
-- A rollout keeps the manifests the job ran with, for a rollback (rollout.go).
if ARGV[15] == '1' and j.state ~= '1' then
  redis.call('HSET', KEYS[1], 'prev_manifests', redis.call('HGET', KEYS[1], 'manifests') or '')
end
redis.call('HSET', KEYS[1], 'state', to, 'type', ty, 'updated_at', string.format('%d', now))
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'sub_type', ARGV[4]) else redis.call('HDEL', KEYS[1], 'sub_type') end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'remediation', ARGV[5]) else redis.call('HDEL', KEYS[1], 'remediation') end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'manifests', ARGV[6]) end
redis.call('HDEL', KEYS[1], 'applied', 'remediated', 'move')
-- The job now follows the trace of this order.
if TP ~= '' then redis.call('HSET', KEYS[1], 'trace', TP) else redis.call('HDEL', KEYS[1], 'trace') end
if ARGV[13] ~= '' then redis.call('HSET', KEYS[1], 'order', ARGV[13]) end
reindex(ARGV[2], was(j), memberships(to, ty, j.owner, iorch(j), j.lu))
history(ARGV[2], ARGV[8], now, ARGV[9], 'reopen-' .. ty, j.state, to, ARGV[10], j.fence)
if to == '1' and ARGV[14] ~= '' then
  hold(ARGV[2], iorch(j), ARGV[14], j.owner)
else
  if redis.call('HDEL', KEYS[1], 'hold') == 1 and to == '1' then unhold(ARGV[2], iorch(j), j.owner) end
  emit(KEYS[1])
end
if ARGV[12] ~= '' then lifecycle(ARGV[11], ARGV[12], '', now) end
return reply({'ok', to, ty})
`

// setTargetsLua sets where a Created job runs, moving it between the executable indexes; a
// job that has a target now is announced.
// KEYS: job. ARGV: prefix, id, targets, orch, history cap, by, why, emitter.
const setTargetsLua = prelude + `
local j = load(KEYS[1])
if not j then return guard('exists', 'job', 'none') end
if j.state ~= '1' then return guard('state', '1', j.state) end
if j.targets == ARGV[3] and j.orch == ARGV[4] then return {'ok', '0'} end
local now = now_ms()
redis.call('HSET', KEYS[1], 'targets', ARGV[3], 'orch', ARGV[4], 'updated_at', string.format('%d', now))
reindex(ARGV[2], was(j), memberships(j.state, j.type, j.owner, ARGV[4], j.lu))
history(ARGV[2], ARGV[5], now, ARGV[6], 'target', 1, 1, ARGV[7], j.fence)
emit(KEYS[1])
return reply({'ok', '1'})
`

// createdResourceLua writes the resource of a Created job, for whoever places jobs (why a job
// waits: no target yet, no hub manages its cluster), while the stored one is still the one it
// was derived from. A job no longer Created is left alone.
// KEYS: job. ARGV: prefix, id, resource, the resource read (” for none), emitter.
const createdResourceLua = prelude + `
local j = load(KEYS[1])
if not j then return guard('exists', 'job', 'none') end
if j.state ~= '1' then return guard('state', '1', j.state) end
local cur = redis.call('HGET', KEYS[1], 'resource') or ''
if cur == ARGV[3] then return {'ok', '0'} end
if cur ~= ARGV[4] then return guard('resource', 'the resource read', 'another') end
redis.call('HSET', KEYS[1], 'resource', ARGV[3], 'updated_at', string.format('%d', now_ms()))
return {'ok', '1'}
`

// recordIncomplianceLua records an incompliance once; a second delivery changes nothing. A
// pending one enters its bucket's pending index (scored by when it was received), so one whose
// intake died half-way is found and finished later.
// KEYS: incompliance, the bucket's pending index. ARGV: doc, job id, outcome, reason, ttl ms,
// payload, incompliance id.
const recordIncomplianceLua = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local at = redis.call('HGET', KEYS[1], 'received_at')
if at then return {'ok', '0', at} end
redis.call('HSET', KEYS[1], 'doc', ARGV[1], 'job_id', ARGV[2], 'outcome', ARGV[3], 'reason', ARGV[4],
  'received_at', string.format('%d', now))
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'payload', ARGV[6]) end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[5]))
if ARGV[3] == 'pending' then redis.call('ZADD', KEYS[2], now, ARGV[7]) end
return {'ok', '1', string.format('%d', now)}
`

// incomplianceOutcomeLua settles a pending incompliance as applied or rejected (and takes it
// out of the pending index); settling it again the same way changes nothing.
// KEYS: incompliance, the bucket's pending index. ARGV: outcome, reason, job id (” keeps it),
// incompliance id, optionally the ids of every job it covers (comma-separated).
const incomplianceOutcomeLua = `
local f = redis.call('HMGET', KEYS[1], 'outcome', 'reason')
if not f[1] then
  redis.call('ZREM', KEYS[2], ARGV[4])
  return {'guard', 'exists', 'incompliance', 'none'}
end
if f[1] == ARGV[1] and (f[2] or '') == ARGV[2] then return {'ok', '0'} end
if f[1] ~= 'pending' then return {'guard', 'state', 'pending', f[1]} end
redis.call('HSET', KEYS[1], 'outcome', ARGV[1], 'reason', ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'job_id', ARGV[3]) end
if ARGV[5] and ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'job_ids', ARGV[5]) end
redis.call('ZREM', KEYS[2], ARGV[4])
return {'ok', '1'}
`

// scripts are compiled once; go-redis runs them with EVALSHA and falls back to EVAL when a
// server has not seen them yet.
var (
	createGroupScript         = redis.NewScript(createGroupLua)
	deleteGroupScript         = redis.NewScript(deleteGroupLua)
	promoteScript             = redis.NewScript(promoteLua)
	changeScript              = redis.NewScript(changeLua)
	renewScript               = redis.NewScript(renewLua)
	releaseScript             = redis.NewScript(releaseLua)
	reopenScript              = redis.NewScript(reopenLua)
	setTargetsScript          = redis.NewScript(setTargetsLua)
	createdResourceScript     = redis.NewScript(createdResourceLua)
	recordIncomplianceScript  = redis.NewScript(recordIncomplianceLua)
	incomplianceOutcomeScript = redis.NewScript(incomplianceOutcomeLua)
	allScripts                = []*redis.Script{createGroupScript, deleteGroupScript, promoteScript, changeScript, renewScript, releaseScript, reopenScript, setTargetsScript, createdResourceScript, recordIncomplianceScript, incomplianceOutcomeScript, recordScript}
)
