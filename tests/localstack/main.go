// Command localstack is `make run`: the whole of ocm-jobs on loopback, in the foreground.
//
// It starts a local OCM hub (kube-apiserver + etcd with OCM's CRDs) with two managed clusters
// — cluster1 (the hub's own API server as spoke) and cluster2 (a second API server), each with
// the real OCM work agent and a ManagedCluster on the hub — Redis (REDIS_URL, or an embedded
// in-process Redis for development), the four functions as processes on their own ports, and
// a local broker that routes events by the Triggers of k8s/base and ticks the PingSource every
// SYNC_INTERVAL. When everything answers it writes .run/env; Ctrl-C stops it all.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/kelseyhightower/envconfig"
	"golang.org/x/sys/unix"
	"knative.dev/pkg/signals"

	"github.com/ocm-jobs/ocm-jobs/shared/logs"
)

// Config is the local run's configuration.
type Config struct {
	RedisURL     string        `envconfig:"REDIS_URL" desc:"Redis to use; empty: an embedded in-process Redis (development only)"`
	BrokerPort   int           `envconfig:"BROKER_PORT" default:"8080" desc:"port of the local broker's ingress"`
	FunctionPort int           `envconfig:"FUNCTION_PORT_BASE" default:"8081" desc:"jobs listens here, then incompliance, executor, statussync on the next ports"`
	SyncInterval time.Duration `envconfig:"SYNC_INTERVAL" default:"10s" desc:"how often the cron tick is sent"`
	RunDir       string        `envconfig:"RUN_DIR" default:".run" desc:"where env, logs and binaries of the local run go"`
	LogLevel     string        `envconfig:"LOG_LEVEL" default:"info" desc:"log level of the stack and the functions"`
}

func main() {
	var cfg Config
	if err := envconfig.Process("", &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "localstack:", err)
		os.Exit(2)
	}
	log, err := logs.New(cfg.LogLevel, "localstack")
	if err != nil {
		fmt.Fprintln(os.Stderr, "localstack:", err)
		os.Exit(2)
	}
	// Stop cleanly (and stop everything started) if `make` itself is killed.
	_ = unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGTERM), 0, 0, 0)
	ctx := signals.NewContext()
	s := &Stack{Config: cfg, Log: log}
	err = s.Run(ctx)
	stopCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s.Stop(stopCtx)
	if err != nil {
		log.Errorw("local run failed", "error", err)
		os.Exit(1)
	}
}
