// Package polman tests the registration of job groups with the ICOS Dynamic Policy Manager
// against real parts: redis-server, the jobs and incompliance functions in process (the root
// function, as a deployment runs them), deployment managers through the REST API, and a
// local HTTP server standing in for the Policy Manager that records every request and can
// fail, hang or answer slowly.
package polman

import (
	"testing"

	"github.com/ocm-jobs/ocm-jobs/tests/servers"
)

var env *servers.Env

func TestMain(m *testing.M) {
	servers.Main(m, servers.Need{Redis: true}, &env)
}
