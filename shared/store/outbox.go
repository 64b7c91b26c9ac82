package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
)

// The transactional outbox. The script that commits a job's change of state appends the event
// the change implies to its bucket's stream P:{b:xy}:outbox in the same step, so a committed
// change is always announced at least once: the caller publishes the entries its change
// returned (see Pending) and deletes them once the broker accepted them; whatever a caller did
// not publish — it died, the broker refused — is found by OutboxDue on a later tick.

// OutboxEntry is one event an outbox holds: its type, its source (the emitter of the change)
// and the job as the change left it (without manifests and remediation).
type OutboxEntry struct {
	// ID is the entry's stream id; Stream the stream it is in.
	ID, Stream string
	Type       string
	Source     string
	Job        model.Job
	// Traceparent is the W3C trace context the event carries ("" for none): the trace of the
	// change, or of the order that opened the job (see emit in scripts.go).
	Traceparent string
}

// parseOutbox splits a script's answer at the '#outbox' marker: the answer, and (with
// decode) the entries after it (id, number of fields, then field/value pairs, per entry).
func parseOutbox(out []string, stream string, decode bool) ([]string, []OutboxEntry) {
	at := -1
	for i := 0; i < len(out); i++ {
		switch out[i] {
		case "#outbox":
			at = i
		case "#job":
			// A job's fields (count-prefixed): values that are never markers.
			if i+1 < len(out) {
				n, _ := strconv.Atoi(out[i+1])
				i += 1 + n
			}
			continue
		default:
			continue
		}
		break
	}
	switch {
	case at < 0:
		return out, nil
	case !decode:
		return out[:at], nil
	}
	var entries []OutboxEntry
	rest := out[at+1:]
	for len(rest) >= 2 {
		n, err := strconv.Atoi(rest[1])
		if err != nil || len(rest) < 2+n {
			break
		}
		fields := make(map[string]string, n/2)
		for i := 2; i+1 < 2+n; i += 2 {
			fields[rest[i]] = rest[i+1]
		}
		if e, err := entryOf(rest[0], stream, fields); err == nil {
			entries = append(entries, e)
		}
		rest = rest[2+n:]
	}
	return out[:at], entries
}

// entryOf decodes an outbox entry's fields.
func entryOf(id, stream string, fields map[string]string) (OutboxEntry, error) {
	j, err := decodeJob(fields)
	if err != nil {
		return OutboxEntry{}, err
	}
	if j == nil || fields["event"] == "" {
		return OutboxEntry{}, fmt.Errorf("outbox entry %s: no event or job", id)
	}
	return OutboxEntry{ID: id, Stream: stream, Type: fields["event"], Source: fields["source"], Job: *j, Traceparent: fields["traceparent"]}, nil
}

// Pending collects the outbox entries the store's changes made within one context (one
// handled event or request), for the caller to publish when it is done.
type Pending struct {
	mu      sync.Mutex
	entries []OutboxEntry
}

type pendingKey struct{}

// WithPending returns a context whose store changes hand their outbox entries to p.
func WithPending(ctx context.Context) (context.Context, *Pending) {
	p := &Pending{}
	return context.WithValue(ctx, pendingKey{}, p), p
}

func pendingFrom(ctx context.Context) *Pending {
	p, _ := ctx.Value(pendingKey{}).(*Pending)
	return p
}

func (p *Pending) add(es []OutboxEntry) {
	if len(es) == 0 {
		return
	}
	p.mu.Lock()
	p.entries = append(p.entries, es...)
	p.mu.Unlock()
}

// Take returns the entries collected so far and forgets them.
func (p *Pending) Take() []OutboxEntry {
	p.mu.Lock()
	defer p.mu.Unlock()
	es := p.entries
	p.entries = nil
	return es
}

// OutboxDue reads up to max entries per bucket that have waited at least age (by the Redis
// clock): the events nobody published right after their change. One round trip per server.
func (s *Store) OutboxDue(ctx context.Context, age time.Duration, max int64) ([]OutboxEntry, error) {
	now, err := s.rdb.Time(ctx).Result()
	if err != nil {
		return nil, fmt.Errorf("reading the outbox: %w", err)
	}
	until := strconv.FormatInt(now.Add(-age).UnixMilli(), 10)
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.XMessageSliceCmd, len(s.buckets))
	for i, b := range s.buckets {
		cmds[i] = pipe.XRangeN(ctx, outboxKey(b), "-", until, max)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("reading the outbox: %w", err)
	}
	var out []OutboxEntry
	for i, c := range cmds {
		for _, m := range c.Val() {
			fields := make(map[string]string, len(m.Values))
			for k, v := range m.Values {
				fields[k], _ = v.(string)
			}
			e, err := entryOf(m.ID, outboxKey(s.buckets[i]), fields)
			if err != nil {
				// An entry that cannot be published would block nobody but would stay forever.
				out = append(out, OutboxEntry{ID: m.ID, Stream: outboxKey(s.buckets[i])})
				continue
			}
			out = append(out, e)
		}
	}
	return out, nil
}

// AckOutbox deletes published entries from their outboxes, in one round trip per server.
func (s *Store) AckOutbox(ctx context.Context, entries []OutboxEntry) error {
	if len(entries) == 0 {
		return nil
	}
	pipe := s.rdb.Pipeline()
	for _, e := range entries {
		pipe.XDel(ctx, e.Stream, e.ID)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("acknowledging %d outbox entries: %w", len(entries), err)
	}
	return nil
}

// OutboxDepth is how many events wait in the outboxes.
func (s *Store) OutboxDepth(ctx context.Context) (int64, error) {
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.IntCmd, len(s.buckets))
	for i, b := range s.buckets {
		cmds[i] = pipe.XLen(ctx, outboxKey(b))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, fmt.Errorf("reading the outbox depth: %w", err)
	}
	var n int64
	for _, c := range cmds {
		n += c.Val()
	}
	return n, nil
}

// TryLock takes the install-wide lock name for ttl unless someone holds it; the returned
// function releases it (only if still held by this caller).
func (s *Store) TryLock(ctx context.Context, name string, ttl time.Duration) (bool, func(), error) {
	token := model.NewID()
	ok, err := s.rdb.SetNX(ctx, s.lockKey(name), token, ttl).Result()
	if err != nil || !ok {
		return false, func() {}, err
	}
	return true, func() {
		_ = unlockScript.Run(context.WithoutCancel(ctx), s.rdb, []string{s.lockKey(name)}, token).Err()
	}, nil
}

var unlockScript = redis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`)

// Backlog is what waits in the store: jobs by state, how long the oldest job now in Created
// has waited (by the Redis clock; zero when none waits), and the outboxes' depth. It reads a
// count per state, the head of idx:created-since and the stream length of every bucket in one
// pipelined round trip (per server): what a metrics scrape asks, never a scan.
type Backlog struct {
	Jobs             map[model.JobState]int64
	OldestCreatedAge time.Duration
	OutboxDepth      int64
}

// Backlog reads the store's backlog.
func (s *Store) Backlog(ctx context.Context) (Backlog, error) {
	states := []model.JobState{model.Created, model.Progressing, model.Finished, model.Degraded}
	pipe := s.rdb.Pipeline()
	now := pipe.Time(ctx)
	counts := make([]*redis.IntCmd, 0, len(s.buckets)*len(states))
	heads := make([]*redis.ZSliceCmd, len(s.buckets))
	depths := make([]*redis.IntCmd, len(s.buckets))
	for i, b := range s.buckets {
		for _, st := range states {
			counts = append(counts, pipe.SCard(ctx, indexKey(b, "state:"+strconv.Itoa(int(st)))))
		}
		heads[i] = pipe.ZRangeWithScores(ctx, indexKey(b, "created-since"), 0, 0)
		depths[i] = pipe.XLen(ctx, outboxKey(b))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return Backlog{}, fmt.Errorf("reading the backlog: %w", err)
	}
	out := Backlog{Jobs: make(map[model.JobState]int64, len(states))}
	for i, c := range counts {
		out.Jobs[states[i%len(states)]] += c.Val()
	}
	oldest := int64(0)
	for i := range s.buckets {
		if zs := heads[i].Val(); len(zs) > 0 && (oldest == 0 || int64(zs[0].Score) < oldest) {
			oldest = int64(zs[0].Score)
		}
		out.OutboxDepth += depths[i].Val()
	}
	if oldest > 0 {
		out.OldestCreatedAge = max(0, now.Val().Sub(time.UnixMilli(oldest)))
	}
	return out, nil
}
