package store_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/redisconn"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
)

const raceJobs = 1000

// raceGroups stores raceJobs jobs in groups of 100 and returns their ids.
func raceGroups(t *testing.T, s *store.Store) []string {
	t.Helper()
	var all []string
	for g := 0; g < raceJobs/100; g++ {
		jobs := make([]model.Job, 100)
		for i := range jobs {
			jobs[i] = newJob(fmt.Sprintf("c%d", i), true)
		}
		grp := newGroup(jobs...)
		if err := s.CreateGroup(ctx, grp, "race"); err != nil {
			t.Fatal(err)
		}
		all = append(all, ids(grp.Jobs)...)
	}
	return all
}

// promoteAll tries to promote every job in a random order as owner and returns those it got.
// Losing a race is ErrLeaseHeld (the winner's live lease); anything else is an error.
func promoteAll(s *store.Store, jobIDs []string, owner string) ([]string, error) {
	order := append([]string(nil), jobIDs...)
	rand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	var won []string
	for _, id := range order {
		_, err := s.Promote(ctx, id, owner, owner+"/exec")
		switch {
		case err == nil:
			won = append(won, id)
		case errors.Is(err, store.ErrLeaseHeld):
		default:
			return won, fmt.Errorf("promote %s as %s: %w", id, owner, err)
		}
	}
	return won, nil
}

// checkPromotedOnce asserts each job was promoted by exactly one of the winners, and that the
// store agrees: owner, fence 1, one promote in the history.
func checkPromotedOnce(t *testing.T, s *store.Store, jobIDs []string, won map[string][]string) {
	t.Helper()
	owners := map[string]string{}
	for owner, list := range won {
		for _, id := range list {
			if prev, dup := owners[id]; dup {
				t.Errorf("job %s promoted by %s and %s", id, prev, owner)
			}
			owners[id] = owner
		}
	}
	if len(owners) != len(jobIDs) {
		t.Errorf("%d of %d jobs promoted", len(owners), len(jobIDs))
	}
	jobs, err := s.ListJobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs {
		if j.State != model.Progressing || j.Fence != 1 || j.OwnerID != owners[j.ID] {
			t.Errorf("job %s: state %v fence %d owner %q, want Progressing, 1, %q", j.ID, j.State, j.Fence, j.OwnerID, owners[j.ID])
		}
	}
	for _, id := range jobIDs[:50] {
		h := must(s.History(ctx, id)).in(t)
		n := 0
		for _, e := range h {
			if e.Action == "promote" || e.Action == "takeover" {
				n++
			}
		}
		if n != 1 {
			t.Errorf("job %s has %d promotions in its history", id, n)
		}
	}
	per := make([]string, 0, len(won))
	for owner, list := range won {
		per = append(per, fmt.Sprintf("%s:%d", owner, len(list)))
	}
	t.Logf("%d jobs, each promoted once; wins per promoter: %s", len(owners), strings.Join(per, " "))
}

func TestPromoteRaceGoroutines(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, store.Options{})
		jobIDs := raceGroups(t, s)
		var mu sync.Mutex
		won := map[string][]string{}
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for g := 0; g < 16; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				owner := fmt.Sprintf("hub-%02d", g)
				list, err := promoteAll(s, jobIDs, owner)
				if err != nil {
					errs <- err
				}
				mu.Lock()
				won[owner] = list
				mu.Unlock()
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		checkPromotedOnce(t, s, jobIDs, won)
	})
}

// TestPromoteRaceProcesses runs 4 OS processes (this test binary again) promoting the same
// jobs against the same Redis: each job is promoted by exactly one of them.
func TestPromoteRaceProcesses(t *testing.T) {
	for _, b := range backends {
		if b.url == "" {
			continue // miniredis lives in this process
		}
		t.Run(b.name, func(t *testing.T) {
			s := newStore(t, b, store.Options{})
			jobIDs := raceGroups(t, s)
			list := t.TempDir() + "/jobs"
			if err := os.WriteFile(list, []byte(strings.Join(jobIDs, "\n")), 0o644); err != nil {
				t.Fatal(err)
			}
			type result struct {
				owner string
				out   bytes.Buffer
				err   error
			}
			results := make([]*result, 4)
			var wg sync.WaitGroup
			for p := range results {
				r := &result{owner: fmt.Sprintf("proc-%d", p)}
				results[p] = r
				cmd := exec.Command(os.Args[0], "-test.run=^TestHelperPromoter$", "-test.count=1")
				cmd.Env = append(os.Environ(), helperEnv+"="+b.url, "OCMJOBS_STORE_HELPER_PREFIX="+s.Options().Prefix,
					"OCMJOBS_STORE_HELPER_OWNER="+r.owner, "OCMJOBS_STORE_HELPER_JOBS="+list)
				cmd.Stdout, cmd.Stderr = &r.out, &r.out
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				wg.Add(1)
				go func() { defer wg.Done(); r.err = cmd.Wait() }()
			}
			wg.Wait()
			won := map[string][]string{}
			for _, r := range results {
				if r.err != nil {
					t.Fatalf("%s: %v\n%s", r.owner, r.err, r.out.String())
				}
				sc := bufio.NewScanner(&r.out)
				for sc.Scan() {
					if id, ok := strings.CutPrefix(sc.Text(), "PROMOTED "); ok {
						won[r.owner] = append(won[r.owner], id)
					}
				}
			}
			checkPromotedOnce(t, s, jobIDs, won)
		})
	}
}

// TestHelperPromoter is the child of TestPromoteRaceProcesses; it does nothing when run
// directly.
func TestHelperPromoter(t *testing.T) {
	url := os.Getenv(helperEnv)
	if url == "" {
		return
	}
	raw, err := os.ReadFile(os.Getenv("OCMJOBS_STORE_HELPER_JOBS"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := redisconn.Open(url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if cc, ok := c.(*redis.ClusterClient); ok {
		cc.ReloadState(ctx) // learn the cluster's slots before racing
	}
	s, err := store.New(c, store.Options{Prefix: os.Getenv("OCMJOBS_STORE_HELPER_PREFIX")})
	if err != nil {
		t.Fatal(err)
	}
	won, err := promoteAll(s, strings.Split(string(raw), "\n"), os.Getenv("OCMJOBS_STORE_HELPER_OWNER"))
	for _, id := range won {
		fmt.Printf("PROMOTED %s\n", id)
	}
	if err != nil {
		t.Fatal(err)
	}
}
