package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
)

// The Policy Manager registration of a job group: what the ICOS Dynamic Policy Manager must
// be told about the group's lifecycle — created, started once its jobs run, stopped, started
// again, deleted — kept in the group's bucket and written by the very script that makes the
// group change it follows (the transactional outbox again, per group and in order):
//
//	P:{b:xy}:reg:<group>       hash  phase (the last event recorded), await (1: `started` is
//	                                 due once the jobs run), seq, descriptor (until `created` is
//	                                 delivered), attempts, last_error, last_error_at,
//	                                 last_attempt, next_attempt, delivered (the last event
//	                                 delivered), delivered_at, ambiguous, holder, hold_until,
//	                                 registered_at
//	P:{b:xy}:reg:<group>:q     list  the events to deliver, oldest first, as "<seq>:<event>"
//	P:{b:xy}:reg:<group>:log   list  what became of delivered events, newest first, capped
//	P:{b:xy}:idx:reg           zset  groups whose registration needs a look, by when (ms)
//
// A sender (shared/polman) delivers a group's queue head first, one holder at a time (a hold
// taken by TakeRegistration), and an event leaves the queue only once the Policy Manager took
// it (AckRegistration); a failed attempt keeps it at the head with a backoff
// (FailRegistration). A deleted group's record stays until its `deleted` is delivered.
// Only a group created with the Policy Manager on (CreateRegisteredGroup) has a record; the
// stop, start and delete of a group without one record nothing.

// Registration events, as the Policy Manager names them.
const (
	RegCreated = "created"
	RegStarted = "started"
	RegStopped = "stopped"
	RegDeleted = "deleted"
)

// GroupOp is a change of a group's lifecycle made through its jobs (Reopen), which its
// registration records in the same step.
type GroupOp string

// The group changes Reopen can carry.
const (
	// GroupStop: the job is re-opened because its group is stopped.
	GroupStop GroupOp = "stop"
	// GroupStart: the job is re-opened because its stopped group is started.
	GroupStart GroupOp = "start"
)

// Registration states, as Registration.State says them.
const (
	RegStatePending       = "pending"        // events wait, none has failed yet
	RegStateRetrying      = "retrying"       // the head event failed; it is retried with a backoff
	RegStateAwaitingStart = "awaiting-start" // delivered; `started` follows once the jobs run
	RegStateRegistered    = "registered"     // everything recorded is delivered
	RegStateDeregistered  = "deregistered"   // `deleted` is delivered
)

// regLogCap is how many outcomes a registration's log keeps.
const regLogCap = 20

// lifecycleLua is the part of a group script that keeps its registration: lifecycle(g, op,
// descriptor, now) records what a change of group g means for the Policy Manager. It follows
// prelude (P, idx, load, job_key).
const lifecycleLua = `
local function reg_key(g) return P .. ':reg:' .. g end

-- reg_reindex puts a registration in the index at the time it next needs a look: now while
-- it awaits its start, else when its head event may be attempted; out when nothing is left.
local function reg_reindex(g, now)
  local k = reg_key(g)
  local f = redis.call('HMGET', k, 'await', 'next_attempt')
  local n = redis.call('LLEN', k .. ':q')
  if n == 0 and f[1] ~= '1' then
    redis.call('ZREM', idx('reg'), g)
    return
  end
  local at = now
  if f[1] ~= '1' then
    local na = tonumber(f[2] or '0')
    if na > at then at = na end
  end
  redis.call('ZADD', idx('reg'), at, g)
end

local function reg_push(g, ev, now)
  local k = reg_key(g)
  local seq = redis.call('HINCRBY', k, 'seq', 1)
  redis.call('RPUSH', k .. ':q', string.format('%d', seq) .. ':' .. ev)
  redis.call('HSET', k, 'phase', ev)
end

-- running: every job of the group settled (Finished or Degraded) and one of them deployed
-- (a Finished job other than a DeleteDeployment).
local function running(g)
  local deployed = false
  for _, id in ipairs(redis.call('SMEMBERS', P .. ':group:' .. g .. ':jobs')) do
    local j = load(job_key(id))
    if j then
      if j.state == '1' or j.state == '2' then return false end
      if j.state == '3' and j.type ~= '6' then deployed = true end
    end
  end
  return deployed
end

-- lifecycle: 'create' registers the group (once); 'stop' sends stopped if started was sent
-- and cancels a start not sent yet; 'start' awaits the jobs running to send started; 'run'
-- sends started when it is awaited and the jobs run; 'delete' sends deleted. A group without
-- a registration, or whose deleted is recorded, records nothing more.
local function lifecycle(g, op, descriptor, now)
  local k = reg_key(g)
  if op == 'create' then
    if redis.call('EXISTS', k) == 1 then return false end
    redis.call('HSET', k, 'descriptor', descriptor, 'await', '1', 'registered_at', string.format('%d', now))
    reg_push(g, 'created', now)
    reg_reindex(g, now)
    return true
  end
  local f = redis.call('HMGET', k, 'phase', 'await')
  if not f[1] or f[1] == 'deleted' then return false end
  local phase, await = f[1], f[2] == '1'
  local changed = false
  if op == 'delete' then
    redis.call('HSET', k, 'await', '0')
    reg_push(g, 'deleted', now)
    changed = true
  elseif op == 'stop' then
    if await then redis.call('HSET', k, 'await', '0'); changed = true end
    if phase == 'started' then reg_push(g, 'stopped', now); changed = true end
  elseif op == 'start' then
    if phase ~= 'started' and not await then redis.call('HSET', k, 'await', '1'); changed = true end
  elseif op == 'run' then
    if await and running(g) then
      redis.call('HSET', k, 'await', '0')
      if phase ~= 'started' then reg_push(g, 'started', now) end
      changed = true
    end
  end
  if changed then reg_reindex(g, now) end
  return changed
end
`

// regRunLua sends started for a group that awaits it, if its jobs run now.
// KEYS: registration. ARGV: prefix, group id.
const regRunLua = prelude + lifecycleLua + `
if lifecycle(ARGV[2], 'run', '', now_ms()) then return {'ok', '1'} end
return {'ok', '0'}
`

// regTakeLua hands the head event of a registration to one sender (holder) for hold ms: the
// event, the descriptor with a 'created', whether an earlier attempt of it may have reached
// the Policy Manager (ambiguous), and how many attempts failed. Answers 'none' (nothing to
// send), 'busy' (another sender holds it) or 'wait' (the head's backoff has not passed).
// KEYS: registration. ARGV: prefix, group id, holder, hold ms.
const regTakeLua = prelude + lifecycleLua + `
local k = KEYS[1]
local now = now_ms()
if redis.call('EXISTS', k) == 0 then
  redis.call('ZREM', idx('reg'), ARGV[2])
  return {'none'}
end
local f = redis.call('HMGET', k, 'holder', 'hold_until', 'next_attempt', 'attempts', 'ambiguous')
if f[1] and f[1] ~= ARGV[3] and tonumber(f[2] or '0') > now then return {'busy', f[1]} end
-- A hold left behind is an attempt that ended without an outcome (its sender died, or could
-- not record it): the event may have reached the Policy Manager.
local amb = f[5] or '0'
if f[1] then amb = '1'; redis.call('HSET', k, 'ambiguous', '1') end
local head = redis.call('LINDEX', k .. ':q', 0)
if not head then
  reg_reindex(ARGV[2], now)
  return {'none'}
end
local na = tonumber(f[3] or '0')
if na > now then
  reg_reindex(ARGV[2], now)
  return {'wait', string.format('%d', na)}
end
redis.call('HSET', k, 'holder', ARGV[3], 'hold_until', string.format('%d', now + tonumber(ARGV[4])),
  'last_attempt', string.format('%d', now))
local desc = ''
if string.sub(head, -8) == ':created' then desc = redis.call('HGET', k, 'descriptor') or '' end
return {'ok', head, desc, amb, f[4] or '0'}
`

// regAckLua takes a delivered (or refused for good) event off the head of the queue and
// releases the sender's hold. A registration whose deleted is delivered expires after the
// retention TTL. KEYS: registration. ARGV: prefix, group id, holder, entry, outcome
// (delivered|rejected), error, retention ms, log cap.
const regAckLua = prelude + lifecycleLua + `
local k = KEYS[1]
local now = now_ms()
local ns = string.format('%d', now)
local f = redis.call('HMGET', k, 'holder', 'phase')
if f[1] == ARGV[3] then redis.call('HDEL', k, 'holder', 'hold_until') end
if redis.call('LINDEX', k .. ':q', 0) ~= ARGV[4] then return {'ok', '0'} end
redis.call('LPOP', k .. ':q')
local ev = string.match(ARGV[4], ':(.*)$')
redis.call('HSET', k, 'attempts', '0', 'next_attempt', '0')
if ARGV[5] == 'rejected' then
  redis.call('HSET', k, 'last_error', ARGV[6], 'last_error_at', ns)
else
  redis.call('HSET', k, 'delivered', ev, 'delivered_at', ns)
end
if ev == 'created' then redis.call('HDEL', k, 'descriptor', 'ambiguous') end
local e = '{"at":' .. ns .. ',"event":"' .. ev .. '","outcome":"' .. ARGV[5] .. '"}'
if redis.call('LPUSH', k .. ':log', e) > tonumber(ARGV[8]) then redis.call('LTRIM', k .. ':log', 0, tonumber(ARGV[8]) - 1) end
if f[2] == 'deleted' and redis.call('LLEN', k .. ':q') == 0 then
  for _, key in ipairs({k, k .. ':q', k .. ':log'}) do redis.call('PEXPIRE', key, tonumber(ARGV[7])) end
  redis.call('ZREM', idx('reg'), ARGV[2])
  return {'ok', '1'}
end
reg_reindex(ARGV[2], now)
return {'ok', '1'}
`

// regFailLua records a failed attempt at the head event: it stays at the head, to be
// attempted again after backoff ms, and the hold is released. ambiguous (1) says the attempt
// may have reached the Policy Manager. KEYS: registration. ARGV: prefix, group id, holder,
// entry, error, backoff ms, ambiguous.
const regFailLua = prelude + lifecycleLua + `
local k = KEYS[1]
local now = now_ms()
if redis.call('HGET', k, 'holder') ~= ARGV[3] then return {'ok', '0'} end
redis.call('HDEL', k, 'holder', 'hold_until')
if redis.call('LINDEX', k .. ':q', 0) ~= ARGV[4] then return {'ok', '0'} end
local ns = string.format('%d', now)
redis.call('HINCRBY', k, 'attempts', 1)
redis.call('HSET', k, 'last_error', ARGV[5], 'last_error_at', ns,
  'next_attempt', string.format('%d', now + tonumber(ARGV[6])))
if ARGV[7] == '1' then redis.call('HSET', k, 'ambiguous', '1') end
reg_reindex(ARGV[2], now)
return {'ok', '1'}
`

var (
	regRunScript  = redis.NewScript(regRunLua)
	regTakeScript = redis.NewScript(regTakeLua)
	regAckScript  = redis.NewScript(regAckLua)
	regFailScript = redis.NewScript(regFailLua)
)

// Registration is a group's Policy Manager registration as GET /jobmanager/groups/{id} shows it.
type Registration struct {
	// State sums it up: pending, retrying, awaiting-start, registered, deregistered.
	State string `json:"state"`
	// Phase is the last lifecycle event recorded (what the Policy Manager knows once the
	// pending events are delivered); Delivered the last one it took.
	Phase     string `json:"phase"`
	Delivered string `json:"delivered,omitempty"`
	// Pending are the events still to deliver, oldest first.
	Pending []string `json:"pending"`
	// AwaitingStart: started is sent once the group's jobs run.
	AwaitingStart bool `json:"awaiting_start,omitempty"`
	// Attempts is how many attempts at the head event failed.
	Attempts      int        `json:"attempts"`
	LastAttemptAt *time.Time `json:"last_attempt_at,omitempty"`
	NextAttemptAt *time.Time `json:"next_attempt_at,omitempty"`
	LastError     string     `json:"last_error,omitempty"`
	LastErrorAt   *time.Time `json:"last_error_at,omitempty"`
	DeliveredAt   *time.Time `json:"delivered_at,omitempty"`
	RegisteredAt  *time.Time `json:"registered_at,omitempty"`
	// Log is what became of the events taken off the queue, newest first.
	Log []RegistrationOutcome `json:"log,omitempty"`
}

// RegistrationOutcome is one event taken off a registration's queue: delivered, or rejected
// for good by the Policy Manager (the error says why).
type RegistrationOutcome struct {
	At      time.Time `json:"at"`
	Event   string    `json:"event"`
	Outcome string    `json:"outcome"`
}

// RegistrationTask is the head event of a group's registration, held by one sender.
type RegistrationTask struct {
	Group string
	// Entry is the queue entry ("<seq>:<event>"), Event its event.
	Entry, Event string
	// Descriptor is the application descriptor, with a created.
	Descriptor string
	// Ambiguous: an earlier attempt may have reached the Policy Manager.
	Ambiguous bool
	// Attempts is how many attempts failed before this one.
	Attempts int
}

// CreateRegisteredGroup is CreateGroup that also registers the group with the Policy Manager
// in the same step: its registration records created, with the descriptor to send.
func (s *Store) CreateRegisteredGroup(ctx context.Context, g *model.JobGroup, by, descriptor string) error {
	if g.ID == "" {
		g.ID = model.NewID()
	}
	doc, err := marshal(groupDoc{ID: g.ID, AppName: g.AppName, AppDescription: g.AppDescription})
	if err != nil {
		return fmt.Errorf("create group %s: %w", g.ID, err)
	}
	return s.writeJobs(ctx, "create", g, doc, by, &descriptor)
}

// StartIfRunning records started for a group that awaits it, when its jobs run now (every
// job Finished or Degraded, one deployed). It reports whether it did.
func (s *Store) StartIfRunning(ctx context.Context, groupID string) (bool, error) {
	out, err := s.runScript(ctx, regRunScript, "start", "registration", groupID, []string{s.regKey(groupID)},
		s.bucket(groupID), groupID)
	if err != nil {
		return false, err
	}
	return out[1] == "1", nil
}

// RegistrationsDue lists up to max groups per bucket whose registration needs a look now (by
// the Redis clock): events to deliver, or a start awaited.
func (s *Store) RegistrationsDue(ctx context.Context, max int64) ([]string, error) {
	now, err := s.rdb.Time(ctx).Result()
	if err != nil {
		return nil, fmt.Errorf("reading the registrations due: %w", err)
	}
	until := strconv.FormatInt(now.UnixMilli(), 10)
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.StringSliceCmd, len(s.buckets))
	for i, b := range s.buckets {
		cmds[i] = pipe.ZRangeByScore(ctx, indexKey(b, "reg"), &redis.ZRangeBy{Min: "-inf", Max: until, Count: max})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("reading the registrations due: %w", err)
	}
	return union(cmds), nil
}

// ErrRegistrationBusy: another sender holds the registration.
var ErrRegistrationBusy = errors.New("registration held by another sender")

// TakeRegistration hands the head event of a group's registration to holder for hold: nil
// when there is nothing to send now (no registration, no event, or its backoff has not
// passed), ErrRegistrationBusy when another sender holds it.
func (s *Store) TakeRegistration(ctx context.Context, groupID, holder string, hold time.Duration) (*RegistrationTask, error) {
	out, err := s.runScript(ctx, regTakeScript, "take", "registration", groupID, []string{s.regKey(groupID)},
		s.bucket(groupID), groupID, holder, hold.Milliseconds())
	if err != nil {
		return nil, err
	}
	switch out[0] {
	case "busy":
		return nil, fmt.Errorf("registration of group %s: %w (%s)", groupID, ErrRegistrationBusy, out[1])
	case "ok":
	default:
		return nil, nil
	}
	_, ev, _ := strings.Cut(out[1], ":")
	attempts, _ := strconv.Atoi(out[4])
	return &RegistrationTask{Group: groupID, Entry: out[1], Event: ev, Descriptor: out[2], Ambiguous: out[3] == "1", Attempts: attempts}, nil
}

// AckRegistration takes a task's event off the queue: delivered, or rejected for good (why
// says how). It releases the hold.
func (s *Store) AckRegistration(ctx context.Context, t *RegistrationTask, holder, rejected string) error {
	outcome := "delivered"
	if rejected != "" {
		outcome = "rejected"
	}
	_, err := s.runScript(ctx, regAckScript, "ack", "registration", t.Group, []string{s.regKey(t.Group)},
		s.bucket(t.Group), t.Group, holder, t.Entry, outcome, clip(rejected), s.opts.RetentionTTL.Milliseconds(), regLogCap)
	return err
}

// FailRegistration records a failed attempt at a task's event: it is attempted again after
// backoff. ambiguous says the attempt may have reached the Policy Manager.
func (s *Store) FailRegistration(ctx context.Context, t *RegistrationTask, holder, why string, backoff time.Duration, ambiguous bool) error {
	amb := "0"
	if ambiguous {
		amb = "1"
	}
	_, err := s.runScript(ctx, regFailScript, "fail", "registration", t.Group, []string{s.regKey(t.Group)},
		s.bucket(t.Group), t.Group, holder, t.Entry, clip(why), max(backoff.Milliseconds(), 1), amb)
	return err
}

// GetRegistration reads a group's registration; ErrNotFound when it has none (the Policy
// Manager was off when it was created, or its deleted was delivered long ago).
func (s *Store) GetRegistration(ctx context.Context, groupID string) (*Registration, error) {
	if fe := checkID(groupID, "id"); fe != nil {
		return nil, invalid("get registration", fe)
	}
	k := s.regKey(groupID)
	pipe := s.rdb.Pipeline()
	hc := pipe.HMGet(ctx, k, "phase", "await", "attempts", "last_error", "last_error_at", "last_attempt",
		"next_attempt", "delivered", "delivered_at", "registered_at")
	qc := pipe.LRange(ctx, k+":q", 0, -1)
	lc := pipe.LRange(ctx, k+":log", 0, -1)
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("get registration of group %s: %w", groupID, err)
	}
	v := make([]string, len(hc.Val()))
	for i, x := range hc.Val() {
		v[i], _ = x.(string)
	}
	if v[0] == "" {
		return nil, &GuardError{Op: "get", Kind: "registration", ID: groupID, Guard: GuardExists, Want: "registration", Got: "none"}
	}
	r := &Registration{Phase: v[0], AwaitingStart: v[1] == "1", LastError: v[3], Delivered: v[7], Pending: []string{}}
	r.Attempts, _ = strconv.Atoi(v[2])
	r.LastErrorAt, r.LastAttemptAt, r.DeliveredAt, r.RegisteredAt = msTimePtr(v[4]), msTimePtr(v[5]), msTimePtr(v[8]), msTimePtr(v[9])
	for _, e := range qc.Val() {
		_, ev, _ := strings.Cut(e, ":")
		r.Pending = append(r.Pending, ev)
	}
	if len(r.Pending) > 0 {
		r.NextAttemptAt = msTimePtr(v[6])
	}
	for _, e := range lc.Val() {
		var o struct {
			At      int64  `json:"at"`
			Event   string `json:"event"`
			Outcome string `json:"outcome"`
		}
		if err := json.Unmarshal([]byte(e), &o); err == nil {
			r.Log = append(r.Log, RegistrationOutcome{At: time.UnixMilli(o.At).UTC(), Event: o.Event, Outcome: o.Outcome})
		}
	}
	switch {
	case len(r.Pending) > 0 && r.Attempts > 0:
		r.State = RegStateRetrying
	case len(r.Pending) > 0:
		r.State = RegStatePending
	case r.AwaitingStart:
		r.State = RegStateAwaitingStart
	case r.Phase == RegDeleted:
		r.State = RegStateDeregistered
	default:
		r.State = RegStateRegistered
	}
	return r, nil
}

func msTimePtr(s string) *time.Time {
	t := msTime(s)
	if t.IsZero() {
		return nil
	}
	return &t
}
