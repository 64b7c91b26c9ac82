package store_test

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/ocm-jobs/ocm-jobs/shared/redisconn"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
	"github.com/ocm-jobs/ocm-jobs/tests/servers"
)

// helperEnv marks a re-executed test binary that only runs TestHelperPromoter.
const helperEnv = "OCMJOBS_STORE_HELPER_URL"

// backend is one Redis the store suite runs against.
type backend struct {
	name   string
	client redis.UniversalClient
	// dirty counts writes (rdb_changes_since_last_save) on a single real server; nil elsewhere.
	dirty func(t *testing.T) int64
	// url names a real server other processes can reach; empty for miniredis.
	url string
}

var (
	backends []*backend
	single   *servers.Redis
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(m.Run())
	}
	code, err := runWithServers(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "store tests:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func runWithServers(m *testing.M) (int, error) {
	ctx := context.Background()
	r, err := servers.StartRedis(servers.RedisOptions{})
	if err != nil {
		return 0, fmt.Errorf("starting redis-server: %w", err)
	}
	defer r.Stop()
	single = r
	rc, err := redisconn.Connect(ctx, r.URL(), 10*time.Second)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	backends = append(backends, &backend{name: "redis", client: rc, url: r.URL(), dirty: func(t *testing.T) int64 {
		t.Helper()
		return infoInt(t, rc, "persistence", "rdb_changes_since_last_save")
	}})

	cl, err := servers.StartRedisCluster(3)
	if err != nil {
		return 0, fmt.Errorf("starting a 3-master redis cluster: %w", err)
	}
	defer cl.Stop()
	cc, err := redisconn.Connect(ctx, cl.URL(), 20*time.Second)
	if err != nil {
		return 0, err
	}
	defer cc.Close()
	backends = append(backends, &backend{name: "cluster", client: cc, url: cl.URL()})

	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		return 0, fmt.Errorf("starting miniredis: %w", err)
	}
	defer mr.Close()
	mc := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer mc.Close()
	backends = append(backends, &backend{name: "miniredis", client: mc})
	return m.Run(), nil
}

// forEachBackend runs f as a subtest against every backend.
func forEachBackend(t *testing.T, f func(t *testing.T, b *backend)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { f(t, b) })
	}
}

var prefixSeq atomic.Int64

// newStore returns a store on b with a prefix no other test uses, and checks the indexes of
// everything it wrote when the test ends.
func newStore(t *testing.T, b *backend, opts store.Options) *store.Store {
	t.Helper()
	opts.Prefix = fmt.Sprintf("t%d-%d", os.Getpid(), prefixSeq.Add(1))
	s, err := store.New(b.client, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			verifyIndexes(t, b.client, opts.Prefix)
		}
	})
	return s
}

// sameStore is a second store on the prefix of s with other options (other TTLs), as another
// replica configured differently would be.
func sameStore(t *testing.T, b *backend, s *store.Store, opts store.Options) *store.Store {
	t.Helper()
	opts.Prefix = s.Options().Prefix
	s2, err := store.New(b.client, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s2
}

func infoInt(t testing.TB, c redis.UniversalClient, section, field string) int64 {
	t.Helper()
	info, err := c.Info(context.Background(), section).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatalf("INFO %s %s=%q: %v", section, field, v, err)
			}
			return n
		}
	}
	t.Fatalf("INFO %s has no %s", section, field)
	return 0
}

// keysWith lists every key starting with prefix, on every master of a cluster. Tests only:
// the store itself never scans.
func keysWith(t *testing.T, c redis.UniversalClient, prefix string) []string {
	t.Helper()
	ctx := context.Background()
	var mu sync.Mutex
	var keys []string
	scan := func(ctx context.Context, c *redis.Client) error {
		it := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for it.Next(ctx) {
			mu.Lock()
			keys = append(keys, it.Val())
			mu.Unlock()
		}
		return it.Err()
	}
	var err error
	switch c := c.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(ctx, scan)
	case *redis.Client:
		err = scan(ctx, c)
	default:
		t.Fatalf("unexpected client %T", c)
	}
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(keys)
	return keys
}

// snapshot renders every key under prefix with its value and whether it has a TTL, so two
// snapshots are equal exactly when nothing under prefix changed.
func snapshot(t *testing.T, c redis.UniversalClient, prefix string) map[string]string {
	t.Helper()
	ctx := context.Background()
	out := map[string]string{}
	for _, k := range keysWith(t, c, prefix) {
		typ, err := c.Type(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		var v string
		switch typ {
		case "hash":
			h := c.HGetAll(ctx, k).Val()
			fields := make([]string, 0, len(h))
			for f, x := range h {
				fields = append(fields, f+"="+x)
			}
			sort.Strings(fields)
			v = strings.Join(fields, "\n")
		case "set":
			m := c.SMembers(ctx, k).Val()
			sort.Strings(m)
			v = strings.Join(m, ",")
		case "list":
			v = strings.Join(c.LRange(ctx, k, 0, -1).Val(), "\n")
		case "zset":
			for _, z := range c.ZRangeWithScores(ctx, k, 0, -1).Val() {
				v += fmt.Sprintf("%v=%v,", z.Member, z.Score)
			}
		case "string":
			v = c.Get(ctx, k).Val()
		default:
			v = "?" + typ
		}
		ttl := c.PTTL(ctx, k).Val()
		out[k] = fmt.Sprintf("%s ttl=%v %s", typ, ttl > 0, v)
	}
	return out
}

// unchanged fails the test if anything under the store's prefix differs from before.
func unchanged(t *testing.T, b *backend, s *store.Store, before map[string]string) {
	t.Helper()
	after := snapshot(t, b.client, s.Options().Prefix)
	if len(after) != len(before) {
		t.Errorf("keys changed: %d before, %d after", len(before), len(after))
	}
	for k, v := range before {
		if after[k] != v {
			t.Errorf("key %s changed:\nbefore %s\nafter  %s", k, v, after[k])
		}
	}
}

// verifyIndexes recomputes every index from the job and group hashes under prefix and
// compares it with the stored indexes: the invariant every script keeps.
func verifyIndexes(t *testing.T, c redis.UniversalClient, prefix string) {
	t.Helper()
	ctx := context.Background()
	want := map[string]map[string]string{} // index key → member → score ("" for sets)
	add := func(key, member, score string) {
		if want[key] == nil {
			want[key] = map[string]string{}
		}
		want[key][member] = score
	}
	got := map[string]map[string]string{}
	for _, k := range keysWith(t, c, prefix) {
		bp, rest, ok := strings.Cut(k, "}:")
		if !ok {
			t.Errorf("key %s has no bucket tag", k)
			continue
		}
		bp += "}"
		switch {
		case strings.HasPrefix(rest, "idx:"):
			m := map[string]string{}
			if strings.HasPrefix(rest, "idx:lease:") {
				for _, z := range c.ZRangeWithScores(ctx, k, 0, -1).Val() {
					m[z.Member.(string)] = strconv.FormatFloat(z.Score, 'f', 0, 64)
				}
			} else {
				for _, x := range c.SMembers(ctx, k).Val() {
					m[x] = ""
				}
			}
			got[k] = m
		case strings.HasPrefix(rest, "group:") && !strings.HasSuffix(rest, ":jobs") && !strings.HasSuffix(rest, ":inc"):
			h := c.HGetAll(ctx, k).Val()
			if h["deleted_at"] == "" {
				add(bp+":idx:groups", strings.TrimPrefix(rest, "group:"), "")
			}
		case strings.HasPrefix(rest, "job:"):
			h := c.HGetAll(ctx, k).Val()
			if h["deleted_at"] != "" {
				continue
			}
			id := strings.TrimPrefix(rest, "job:")
			add(bp+":idx:state:"+h["state"], id, "")
			if h["owner"] != "" {
				add(bp+":idx:owner:"+h["owner"], id, "")
			}
			if h["targets"] != "" && h["orch"] != "" {
				switch {
				case h["state"] == "1":
					add(bp+":idx:ready:"+h["orch"]+":"+h["owner"], id, "")
				case (h["state"] == "2" || h["state"] == "4") && h["type"] == "5":
					add(bp+":idx:lease:"+h["orch"], id, h["lease_until"])
				}
			}
		}
	}
	for k, m := range want {
		for id, score := range m {
			gs, ok := got[k][id]
			if !ok {
				t.Errorf("index %s lacks %s", k, id)
			} else if gs != score {
				t.Errorf("index %s has %s with score %s, want %s", k, id, gs, score)
			}
		}
	}
	for k, m := range got {
		for id := range m {
			if _, ok := want[k][id]; !ok {
				t.Errorf("index %s has %s, which it should not", k, id)
			}
		}
	}
}
