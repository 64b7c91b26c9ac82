package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/redisconn"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
)

// gate is a go-redis hook that holds the first lone command it sees once armed, answered but
// not yet handed back, until released, and records the size of every pipeline.
type gate struct {
	mu        sync.Mutex
	armed     bool
	held      chan struct{} // closed when the first command is held
	release   chan struct{}
	pipelines []int
}

func (g *gate) DialHook(next redis.DialHook) redis.DialHook { return next }

func (g *gate) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		g.mu.Lock()
		hold := g.armed
		g.armed = false
		g.mu.Unlock()
		err := next(ctx, cmd)
		if hold {
			close(g.held)
			<-g.release
		}
		return err
	}
}

func (g *gate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		g.mu.Lock()
		g.pipelines = append(g.pipelines, len(cmds))
		g.mu.Unlock()
		return next(ctx, cmds)
	}
}

// TestScriptsShareRoundTrips: with one round trip in flight, the script calls made meanwhile
// wait and go together in the next one, each answered with its own result; the server having
// forgotten the scripts in between (a restart, SCRIPT FLUSH) costs them nothing; a caller who
// gave up while queued is not sent at all.
func TestScriptsShareRoundTrips(t *testing.T) {
	b := backends[0]
	if b.name != "redis" {
		t.Fatalf("the first backend is %s, want the single redis-server", b.name)
	}
	rc, err := redisconn.Connect(ctx, b.url, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rc.Close() })
	g := &gate{held: make(chan struct{}), release: make(chan struct{})}
	rc.AddHook(g)
	bb := &backend{name: "gated", client: rc, url: b.url}
	s := newStore(t, bb, store.Options{RoundTrips: 1})

	const queued = 40
	var jobs []model.Job
	for i := 0; i <= queued; i++ {
		jobs = append(jobs, newJob(fmt.Sprintf("c%d", i), true))
	}
	grp := newGroup(jobs...)
	if err := s.CreateGroup(ctx, grp, "test"); err != nil {
		t.Fatal(err)
	}
	ids := make([]string, len(grp.Jobs))
	for i, j := range grp.Jobs {
		ids[i] = j.ID
	}
	// The server knows the scripts: the held call is answered, the others find them forgotten.
	if err := s.LoadScripts(ctx); err != nil {
		t.Fatal(err)
	}
	trips0, calls0 := s.RoundTrips()

	g.mu.Lock()
	g.armed = true
	g.mu.Unlock()
	type answer struct {
		c   store.Claim
		err error
	}
	answers := make([]answer, len(ids))
	var wg sync.WaitGroup
	cancelled := 7
	gaveUpAnswered := make(chan struct{})
	promoteAt := func(i int, ctx context.Context) {
		defer wg.Done()
		c, err := s.Promote(ctx, ids[i], "hub-a", fmt.Sprintf("holder-%d", i))
		answers[i] = answer{c, err}
		if i == cancelled {
			close(gaveUpAnswered)
		}
	}
	wg.Add(1)
	go promoteAt(0, ctx)
	<-g.held
	// The first call holds the only round trip: the others queue behind it. One of them
	// gives up while queued.
	gaveUp, giveUp := context.WithCancel(ctx)
	for i := 1; i <= queued; i++ {
		wg.Add(1)
		if i == cancelled {
			go promoteAt(i, gaveUp)
		} else {
			go promoteAt(i, ctx)
		}
	}
	waitFor(t, func() bool { return s.QueuedScripts() == queued })
	giveUp()
	select {
	case <-gaveUpAnswered:
	case <-time.After(10 * time.Second):
		t.Fatal("the call that gave up while queued was not answered")
	}
	// The server forgets every script: the queued calls' EVALSHA fail with NOSCRIPT.
	if err := b.client.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	close(g.release)
	wg.Wait()

	for i, a := range answers {
		if i == cancelled {
			if !errors.Is(a.err, context.Canceled) {
				t.Errorf("the call that gave up while queued: %v, want context.Canceled", a.err)
			}
			if j := getJob(t, s, ids[i]); j.State != model.Created || j.Fence != 0 {
				t.Errorf("the call that gave up was sent: job %s is %s at fence %d", ids[i], j.State, j.Fence)
			}
			continue
		}
		if a.err != nil {
			t.Errorf("promote %d: %v", i, a.err)
			continue
		}
		if a.c.JobID != ids[i] || a.c.Fence != 1 || a.c.Holder != fmt.Sprintf("holder-%d", i) {
			t.Errorf("promote %d answered %+v, want job %s fence 1 holder-%d", i, a.c, ids[i], i)
		}
		if j := getJob(t, s, ids[i]); j.State != model.Progressing || j.LeaseHolder != a.c.Holder {
			t.Errorf("job %d is %s held by %q after its promote", i, j.State, j.LeaseHolder)
		}
	}
	trips, calls := s.RoundTrips()
	if trips-trips0 != 2 || calls-calls0 != queued+1 {
		t.Errorf("%d script calls went in %d round trips, want %d in 2 (the held one, then the rest together)",
			calls-calls0, trips-trips0, queued+1)
	}
	g.mu.Lock()
	pipelines := g.pipelines
	g.mu.Unlock()
	together := false
	for _, n := range pipelines {
		together = together || n == queued-1
	}
	if !together {
		t.Errorf("pipelines sent: %v, want one of the %d calls still queued", pipelines, queued-1)
	}
	// Each promote ran once: the fallback did not run a script twice.
	for i, id := range ids {
		h, err := s.History(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		promotes := 0
		for _, e := range h {
			if e.Action == "promote" {
				promotes++
			}
		}
		if want := map[bool]int{true: 0, false: 1}[i == cancelled]; promotes != want {
			t.Errorf("job %d has %d promotes in its history, want %d", i, promotes, want)
		}
	}
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not met within 10s")
}
