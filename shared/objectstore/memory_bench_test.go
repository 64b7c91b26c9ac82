package objectstore_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ocm-jobs/ocm-jobs/shared/config"
	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/tests/servers"
)

// usedMemory is Redis' INFO memory used_memory.
func usedMemory(b *testing.B, rdb *redis.Client) int64 {
	b.Helper()
	info, err := rdb.Info(context.Background(), "memory").Result()
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	b.Fatal("no used_memory in INFO memory")
	return 0
}

// BenchmarkRedisMemory stores 1,000 jobs with a 64 KiB manifest each (10 groups of 100, every
// manifest distinct) once with every manifest in Redis and once with the object store, and
// prints the growth of Redis' used_memory for both.
func BenchmarkRedisMemory(b *testing.B) {
	const groups, perGroup, manifestBytes = 10, 100, 64 << 10
	rdb := redis.NewClient(&redis.Options{Addr: env.Redis.Addr})
	defer rdb.Close()
	ctx := context.Background()
	results := map[string]int64{}
	for i := 0; i < b.N; i++ {
		for _, mode := range []string{"redis only", "object store"} {
			if err := rdb.FlushDB(ctx).Err(); err != nil {
				b.Fatal(err)
			}
			cfg := config.Store{Prefix: "bench", LeaseTTL: time.Minute, TakeoverTTL: time.Minute, HistoryCap: 100,
				RetentionTTL: time.Hour, IncomplianceTTL: time.Hour, MaxManifestBytes: 1 << 20, ManifestPrefix: "manifests"}
			if mode == "object store" {
				cfg.OffloadBytes = 65536 // the default: the manifests' JSON is just above it
				cfg.ObjectStore = config.ObjectStore{S3Endpoint: env.S3.Endpoint, S3Region: env.S3.Region, S3Bucket: servers.S3Bucket,
					S3PathStyle: true, S3AccessKeyID: env.S3.AccessKey, S3SecretAccessKey: env.S3.SecretKey, S3Timeout: time.Minute,
					S3MaxAttempts: 3}
			}
			objects, err := cfg.Objects(ctx)
			if err != nil {
				b.Fatal(err)
			}
			st, err := cfg.Open(rdb, objects)
			if err != nil {
				b.Fatal(err)
			}
			before := usedMemory(b, rdb)
			for g := 0; g < groups; g++ {
				grp := &model.JobGroup{ID: model.NewID(), AppName: "bench"}
				for j := 0; j < perGroup; j++ {
					head := fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c%d-%d}\ndata: {blob: ", g, j)
					y := head + strings.Repeat("x", manifestBytes-len(head)-2) + "}\n" // exactly 64 KiB
					grp.Jobs = append(grp.Jobs, model.Job{ID: model.NewJobID(grp.ID), Type: model.CreateDeployment, State: model.Created,
						Orchestrator: model.OCM, Namespace: "bench", Component: fmt.Sprintf("c%d", j),
						Manifests: []model.PlainManifest{{YamlString: y}}})
				}
				if err := st.CreateGroup(ctx, grp, "bench"); err != nil {
					b.Fatal(err)
				}
			}
			results[mode] = usedMemory(b, rdb) - before
		}
	}
	jobs := int64(groups * perGroup)
	b.ReportMetric(float64(results["redis only"])/float64(jobs), "B/job(redis-only)")
	b.ReportMetric(float64(results["object store"])/float64(jobs), "B/job(object-store)")
	b.Logf("1,000 jobs with 64 KiB manifests: Redis used_memory grew %.1f MiB with every manifest in Redis, %.2f MiB with the object store",
		float64(results["redis only"])/(1<<20), float64(results["object store"])/(1<<20))
}
