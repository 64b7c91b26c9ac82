package config

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ocm-jobs/ocm-jobs/shared/objectstore"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
)

// Store is the configuration of the Redis store every function opens.
type Store struct {
	Prefix           string        `envconfig:"STORE_PREFIX" default:"ocmjobs" desc:"prefix of every Redis key, so several installs can share a Redis"`
	LeaseTTL         time.Duration `envconfig:"LEASE_TTL" default:"30s" desc:"how long an execution's lease on a job lasts unless renewed"`
	TakeoverTTL      time.Duration `envconfig:"TAKEOVER_TTL" default:"5m" desc:"how long a lease must have lapsed before another hub may take a stuck job over"`
	HistoryCap       int           `envconfig:"HISTORY_CAP" default:"100" desc:"transitions kept in each job's history"`
	RetentionTTL     time.Duration `envconfig:"RETENTION_TTL" default:"24h" desc:"how long a deleted job group stays readable before its keys expire"`
	IncomplianceTTL  time.Duration `envconfig:"INCOMPLIANCE_TTL" default:"168h" desc:"how long an incompliance record is kept"`
	MaxManifestBytes int           `envconfig:"MAX_MANIFEST_BYTES" default:"1048576" desc:"largest total size of one job's manifests"`
	OffloadBytes     int           `envconfig:"MANIFEST_OFFLOAD_BYTES" default:"65536" desc:"with an object store (S3_BUCKET), a job's manifests larger than this (as JSON) are kept in the bucket under their SHA-256 and only referenced from Redis; 0 keeps them all in Redis"`
	ManifestPrefix   string        `envconfig:"MANIFEST_PREFIX" default:"manifests" desc:"key prefix of offloaded manifests in S3_BUCKET: <prefix>/<sha256>"`
	RoundTrips       int           `envconfig:"REDIS_ROUND_TRIPS" default:"4" desc:"round trips of store scripts one process keeps in flight at once; scripts called while they all are in flight go together in the next (one round trip for many saves Redis most of each call's cost); -1: every script call is its own round trip"`
	// ObjectStore is here because every function reads jobs, and a job's manifests may be
	// in the object store.
	ObjectStore
}

// Objects returns the object store client the configuration names, or nil when it names none.
func (s Store) Objects(ctx context.Context) (*objectstore.Client, error) {
	if !s.ObjectStore.Options().Enabled() {
		return nil, nil
	}
	if err := s.ObjectStore.Validate(); err != nil {
		return nil, err
	}
	return objectstore.New(ctx, s.ObjectStore.Options())
}

// Open opens the store on rdb, with the object store c (nil: none) for offloaded manifests
// when S3_BUCKET is set.
func (s Store) Open(rdb redis.UniversalClient, c *objectstore.Client) (*store.Store, error) {
	opts := s.Options()
	if s.S3Bucket != "" && c != nil {
		opts.Blobs = bucketBlobs{c: c, bucket: s.S3Bucket, limit: 4 * int64(s.MaxManifestBytes)}
		opts.OffloadBytes = s.OffloadBytes
		opts.BlobPrefix = s.ManifestPrefix + "/"
	}
	return store.New(rdb, opts)
}

// bucketBlobs are the store's Blobs in an S3 bucket.
type bucketBlobs struct {
	c      *objectstore.Client
	bucket string
	// limit bounds a read: manifests as JSON, escaping included, of at most MaxManifestBytes.
	limit int64
}

func (b bucketBlobs) Put(ctx context.Context, key string, data []byte) error {
	return b.c.Put(ctx, objectstore.Ref{Bucket: b.bucket, Key: key}, "application/json", data)
}

func (b bucketBlobs) Get(ctx context.Context, key string) ([]byte, error) {
	if _, ok := objectstore.ContentAddress(key); !ok {
		return nil, fmt.Errorf("blob key %q is not content-addressed", key)
	}
	return b.c.Get(ctx, objectstore.Ref{Bucket: b.bucket, Key: key}, b.limit)
}

// Options converts the configuration to store options.
func (s Store) Options() store.Options {
	return store.Options{
		Prefix: s.Prefix, LeaseTTL: s.LeaseTTL, TakeoverTTL: s.TakeoverTTL, HistoryCap: s.HistoryCap,
		RetentionTTL: s.RetentionTTL, IncomplianceTTL: s.IncomplianceTTL, MaxManifestBytes: s.MaxManifestBytes,
		RoundTrips: s.RoundTrips,
	}
}
