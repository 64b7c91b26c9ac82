package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"sync"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
)

// Blobs keeps values too large for Redis outside it, by key: an S3 bucket in production
// (shared/config.Store.Open wires one in when an object store is configured).
type Blobs interface {
	// Put writes data at key; writing the same content twice is harmless.
	Put(ctx context.Context, key string, data []byte) error
	// Get reads key, refusing content that does not hash to the key's SHA-256.
	Get(ctx context.Context, key string) ([]byte, error)
}

// blobRef marks a job's manifests field that holds a reference instead of the manifests:
// "blob:<key>". The manifests themselves are a JSON array, so the two cannot be confused.
const blobRef = "blob:"

// manifestsField is what a job's manifests field holds: the manifests as JSON, or, when they
// are larger than OffloadBytes and Blobs is set, a reference to them in Blobs under their
// SHA-256. The offload happens before the script that writes the job, so the scripts stay
// as they are: they store an opaque string either way. Content addressing makes the key of
// the same manifests the same, so a redelivered write changes nothing and a group's jobs
// (or groups) deploying the same manifests share one object.
func (s *Store) manifestsField(ctx context.Context, ms []model.PlainManifest) (string, error) {
	raw, err := marshal(ms)
	if err != nil || s.opts.Blobs == nil || s.opts.OffloadBytes <= 0 || len(raw) <= s.opts.OffloadBytes {
		return raw, err
	}
	sum := sha256.Sum256([]byte(raw))
	key := s.opts.BlobPrefix + hex.EncodeToString(sum[:])
	if err := s.opts.Blobs.Put(ctx, key, []byte(raw)); err != nil {
		return "", fmt.Errorf("storing %d bytes of manifests in the object store: %w", len(raw), err)
	}
	return blobRef + key, nil
}

// offloaded returns the key of a job hash's offloaded manifests, if they are.
func offloaded(h map[string]string) (string, bool) {
	return strings.CutPrefix(h["manifests"], blobRef)
}

// withoutManifests is a job hash whose offloaded manifests decodeJob must not parse.
func withoutManifests(h map[string]string) map[string]string {
	if _, ok := offloaded(h); !ok {
		return h
	}
	c := make(map[string]string, len(h))
	for k, v := range h {
		if k != "manifests" {
			c[k] = v
		}
	}
	return c
}

// loadManifests reads offloaded manifests, each distinct key once.
func (s *Store) loadManifests(ctx context.Context, keys map[string][]*model.Job) error {
	for key, jobs := range keys {
		if s.opts.Blobs == nil {
			return fmt.Errorf("job %s: its manifests are in the object store, which this process does not configure", jobs[0].ID)
		}
		raw, ok := s.cache.get(key)
		if !ok {
			var err error
			if raw, err = s.opts.Blobs.Get(ctx, key); err != nil {
				return fmt.Errorf("reading the manifests of job %s from the object store: %w", jobs[0].ID, err)
			}
			s.cache.put(key, raw)
		}
		var ms []model.PlainManifest
		if err := json.Unmarshal(raw, &ms); err != nil {
			return fmt.Errorf("decoding the manifests of job %s (%s): %w", jobs[0].ID, key, err)
		}
		for _, j := range jobs {
			j.Manifests = ms
		}
	}
	return nil
}

// decodeJobs decodes job hashes as fetchJobs and GetJob read them, reading offloaded
// manifests from Blobs.
func (s *Store) decodeJobs(ctx context.Context, hs []map[string]string, keepDeleted bool) ([]*model.Job, error) {
	out := make([]*model.Job, 0, len(hs))
	keys := map[string][]*model.Job{}
	for _, h := range hs {
		if keepDeleted && h["deleted_at"] != "" {
			h = withoutField(h, "deleted_at")
		}
		j, err := decodeJob(withoutManifests(h))
		if err != nil {
			return nil, err
		}
		if j == nil {
			continue
		}
		if key, ok := offloaded(h); ok {
			keys[key] = append(keys[key], j)
		}
		out = append(out, j)
	}
	return out, s.loadManifests(ctx, keys)
}

func withoutField(h map[string]string, field string) map[string]string {
	c := make(map[string]string, len(h))
	for k, v := range h {
		if k != field {
			c[k] = v
		}
	}
	return c
}

// blobCacheBytes bounds the cache of offloaded manifests: listing groups or sweeping jobs
// reads the same manifests every tick, and each read would otherwise be an S3 GET.
const blobCacheBytes = 64 << 20

// blobCache keeps recently read offloaded manifests (raw JSON, decoded afresh on each read
// so no two jobs share a slice), evicting the oldest first. Content-addressed entries are
// never stale.
type blobCache struct {
	mu    sync.Mutex
	m     map[string][]byte
	order []string
	bytes int
}

func (c *blobCache) get(key string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b, ok := c.m[key]
	return b, ok
}

func (c *blobCache) put(key string, b []byte) {
	if len(b) > blobCacheBytes/4 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string][]byte{}
	}
	if _, ok := c.m[key]; ok {
		return
	}
	for c.bytes+len(b) > blobCacheBytes && len(c.order) > 0 {
		old := c.order[0]
		c.order = c.order[1:]
		c.bytes -= len(c.m[old])
		delete(c.m, old)
	}
	c.m[key] = b
	c.order = append(c.order, key)
	c.bytes += len(b)
}
