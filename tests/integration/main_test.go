// Package integration holds suites that run against the real hub: a kube-apiserver with
// OCM's CRDs and real OCM work agents for cluster1 (the hub itself) and cluster2 (a second
// API server).
package integration

import (
	"testing"

	"github.com/ocm-jobs/ocm-jobs/tests/servers"
)

var env *servers.Env

func TestMain(m *testing.M) {
	servers.Main(m, servers.Need{Redis: true, Hub: true, Clusters: 2, S3: true, Placement: true,
		Eventing: true, OIDC: true, Brokers: suiteBrokers()}, &env)
}
