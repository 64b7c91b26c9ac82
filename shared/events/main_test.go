package events_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/ocm-jobs/ocm-jobs/tests/servers"
)

var redisServer *servers.Redis

func TestMain(m *testing.M) {
	r, err := servers.StartRedis(servers.RedisOptions{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting redis-server:", err)
		os.Exit(1)
	}
	redisServer = r
	code := m.Run()
	r.Stop()
	os.Exit(code)
}
