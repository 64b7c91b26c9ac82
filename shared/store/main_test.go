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

// verifyIndexes runs the store's consistency check on everything under prefix.
func verifyIndexes(t *testing.T, c redis.UniversalClient, prefix string) {
	t.Helper()
	s, err := store.New(c, store.Options{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	problems, err := s.CheckConsistency(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Error(p)
	}
}
