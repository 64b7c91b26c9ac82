package store

import (
	"fmt"
	"strings"
	"time"
)

// Options are the store's knobs. The zero value of a field means its default.
type Options struct {
	// Prefix starts every key, so two deployments can share a Redis. Default "ocmjobs".
	Prefix string
	// LeaseTTL is how long an execution's lease lasts unless renewed. Default 30s.
	LeaseTTL time.Duration
	// TakeoverTTL is how long a lease must have lapsed before another hub may take the job
	// over. Default 5m, as in ICOS.
	TakeoverTTL time.Duration
	// HistoryCap is how many history entries a job keeps. Default 100.
	HistoryCap int
	// RetentionTTL is how long a deleted group's keys stay readable (history, idempotent
	// delete) before Redis drops them. Default 24h.
	RetentionTTL time.Duration
	// IncomplianceTTL is how long an incompliance record is kept. Default 7 days.
	IncomplianceTTL time.Duration
	// MaxManifestBytes caps the total size of one job's manifests. Default 1 MiB.
	MaxManifestBytes int
	// Blobs, when set, holds the manifests of jobs larger than OffloadBytes (see Blobs).
	Blobs Blobs
	// OffloadBytes is the size of a job's manifests (as JSON) above which they go to Blobs;
	// 0 keeps every manifest in Redis.
	OffloadBytes int
	// BlobPrefix starts the key of offloaded manifests.
	BlobPrefix string
	// RoundTrips is how many round trips of scripts the store keeps in flight at once; script
	// calls made while they all are in flight wait and go together in the next one (see
	// roundTrips). Default 4; negative: every call is its own round trip.
	RoundTrips int
}

// Defaults of Options.
const (
	DefaultPrefix           = "ocmjobs"
	DefaultLeaseTTL         = 30 * time.Second
	DefaultTakeoverTTL      = 5 * time.Minute
	DefaultHistoryCap       = 100
	DefaultRetentionTTL     = 24 * time.Hour
	DefaultIncomplianceTTL  = 7 * 24 * time.Hour
	DefaultMaxManifestBytes = 1 << 20
	DefaultRoundTrips       = 4
)

// withDefaults fills every zero field with its default.
func (o Options) withDefaults() Options {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.LeaseTTL == 0 {
		o.LeaseTTL = DefaultLeaseTTL
	}
	if o.TakeoverTTL == 0 {
		o.TakeoverTTL = DefaultTakeoverTTL
	}
	if o.HistoryCap == 0 {
		o.HistoryCap = DefaultHistoryCap
	}
	if o.RetentionTTL == 0 {
		o.RetentionTTL = DefaultRetentionTTL
	}
	if o.IncomplianceTTL == 0 {
		o.IncomplianceTTL = DefaultIncomplianceTTL
	}
	if o.MaxManifestBytes == 0 {
		o.MaxManifestBytes = DefaultMaxManifestBytes
	}
	if o.RoundTrips == 0 {
		o.RoundTrips = DefaultRoundTrips
	}
	return o
}

// Validate reports options that cannot work.
func (o Options) Validate() error {
	if strings.ContainsAny(o.Prefix, "{}") {
		return fmt.Errorf("store prefix %q: braces would change the keys' hash tag", o.Prefix)
	}
	for name, d := range map[string]time.Duration{"lease TTL": o.LeaseTTL, "takeover TTL": o.TakeoverTTL,
		"retention TTL": o.RetentionTTL, "incompliance TTL": o.IncomplianceTTL} {
		if d < time.Millisecond {
			return fmt.Errorf("store %s %s: want at least 1ms", name, d)
		}
	}
	if o.HistoryCap < 1 {
		return fmt.Errorf("store history cap %d: want at least 1", o.HistoryCap)
	}
	if o.OffloadBytes < 0 {
		return fmt.Errorf("store offload bytes %d: want 0 (never) or more", o.OffloadBytes)
	}
	if o.MaxManifestBytes < 1 {
		return fmt.Errorf("store max manifest bytes %d: want at least 1", o.MaxManifestBytes)
	}
	return nil
}
