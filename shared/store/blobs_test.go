package store_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
)

// memBlobs is an in-memory Blobs that counts its calls (the S3 side is tested against a real
// server in shared/objectstore and tests/integration).
type memBlobs struct {
	mu         sync.Mutex
	m          map[string][]byte
	puts, gets int
}

func (b *memBlobs) Put(_ context.Context, key string, data []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.puts++
	b.m[key] = append([]byte(nil), data...)
	return nil
}

func (b *memBlobs) Get(_ context.Context, key string) ([]byte, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.gets++
	return b.m[key], nil
}

// TestOffloadedManifests: manifests above OffloadBytes are referenced from Redis and read
// back transparently by every reader; smaller ones stay inline; a replace offloads too.
func TestOffloadedManifests(t *testing.T) {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: single.Addr})
	blobs := &memBlobs{m: map[string][]byte{}}
	prefix := "o" + uuid.NewString()[:8]
	s, err := store.New(rdb, store.Options{Prefix: prefix, Blobs: blobs, OffloadBytes: 1024, BlobPrefix: "manifests/"})
	if err != nil {
		t.Fatal(err)
	}
	big := []model.PlainManifest{{YamlString: "kind: ConfigMap\ndata: {x: " + strings.Repeat("x", 4096) + "}\n"}}
	small := []model.PlainManifest{{YamlString: "kind: ConfigMap\n"}}
	g := &model.JobGroup{ID: model.NewID(), AppName: "off"}
	for i, ms := range [][]model.PlainManifest{big, big, small} {
		g.Jobs = append(g.Jobs, model.Job{ID: model.NewJobID(g.ID), Type: model.CreateDeployment, State: model.Created,
			Orchestrator: model.OCM, Namespace: "off", Component: string(rune('a' + i)), Manifests: ms})
	}
	if err := s.CreateGroup(ctx, g, "test"); err != nil {
		t.Fatal(err)
	}
	if blobs.puts != 2 || len(blobs.m) != 1 {
		t.Errorf("%d puts, %d objects: want the same big manifests stored under one key", blobs.puts, len(blobs.m))
	}
	field := func(j model.Job) string {
		return rdb.HGet(ctx, prefix+":{b:"+bucketHex(j.ID)+"}:job:"+j.ID, "manifests").Val()
	}
	for i, j := range g.Jobs {
		if ref := strings.HasPrefix(field(j), "blob:manifests/"); ref != (i < 2) {
			t.Errorf("job %d: manifests field %.60q", i, field(j))
		}
	}
	got, err := s.GetGroup(ctx, g.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, j := range g.Jobs {
		want[j.ID] = j.Manifests[0].YamlString
	}
	for _, j := range got.Jobs {
		if len(j.Manifests) != 1 || j.Manifests[0].YamlString != want[j.ID] {
			t.Errorf("GetGroup job %s: manifests not read back", j.ID)
		}
	}
	one, err := s.GetJob(ctx, g.Jobs[0].ID)
	if err != nil || one.Manifests[0].YamlString != big[0].YamlString {
		t.Errorf("GetJob: %v", err)
	}
	// A replace of the small job with big manifests offloads them as well.
	bigger := []model.PlainManifest{{YamlString: big[0].YamlString + "# v2\n"}}
	if _, err := s.Reopen(ctx, g.Jobs[2].ID, store.Reopen{Type: model.ReplaceDeployment, Manifests: bigger, By: "test", Why: "update"}); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(field(g.Jobs[2]), "blob:manifests/") {
		t.Errorf("replaced manifests not offloaded: %.60q", field(g.Jobs[2]))
	}
	if j, err := s.GetJob(ctx, g.Jobs[2].ID); err != nil || j.Manifests[0].YamlString != bigger[0].YamlString {
		t.Errorf("GetJob after replace: %v", err)
	}
}

func bucketHex(id string) string {
	const hexdigits = "0123456789abcdef"
	b := model.Bucket(id)
	return string([]byte{hexdigits[b>>4], hexdigits[b&15]})
}
