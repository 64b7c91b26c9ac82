// Package platform is what every function of a process runs on, built once by the root
// function: the Redis store, the OCM hub's clients and this hub's id, and the object store.
// An all-in-one process (FUNCTION unset) builds one of each and hands it to all four.
package platform

import (
	"github.com/redis/go-redis/v9"

	"github.com/ocm-jobs/ocm-jobs/shared/objectstore"
	"github.com/ocm-jobs/ocm-jobs/shared/ocm"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
	"github.com/ocm-jobs/ocm-jobs/shared/telemetry"
)

// Platform is what a function is built with.
type Platform struct {
	// Redis is the client the store uses (for its clock and health).
	Redis redis.UniversalClient
	// Store is the job store; a function takes its own view of it with Store.As(its source).
	Store *store.Store
	// Hub is the OCM hub (nil when the process has none: no kubeconfig, not in a cluster).
	Hub *ocm.Hub
	// NoHub says why there is no hub.
	NoHub error
	// HubID is this hub's owner id (HUB_ID, else the UID of the hub's ClusterManager); empty
	// without a hub and without HUB_ID.
	HubID string
	// Objects is the object store (nil when none is configured).
	Objects *objectstore.Client
	// Bucket is the object store bucket of this install (S3_BUCKET).
	Bucket string
	// Telemetry is the process's metrics and tracer (nil records nothing).
	Telemetry *telemetry.Telemetry
}
