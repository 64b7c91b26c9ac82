package config

import (
	"time"

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
}

// Options converts the configuration to store options.
func (s Store) Options() store.Options {
	return store.Options{
		Prefix: s.Prefix, LeaseTTL: s.LeaseTTL, TakeoverTTL: s.TakeoverTTL, HistoryCap: s.HistoryCap,
		RetentionTTL: s.RetentionTTL, IncomplianceTTL: s.IncomplianceTTL, MaxManifestBytes: s.MaxManifestBytes,
	}
}
