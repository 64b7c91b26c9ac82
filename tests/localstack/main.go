// Command localstack is `make run`: the whole of ocm-jobs on loopback, in the foreground.
//
// It starts a local OCM hub (kube-apiserver + etcd with OCM's CRDs) with two managed clusters
// — cluster1 (the hub's own API server as spoke) and cluster2 (a second API server), each with
// the real OCM work agent and a ManagedCluster on the hub — Redis (REDIS_URL, or an embedded
// in-process Redis for development), the four functions as processes on their own ports, and
// a local broker that routes events by the Triggers of k8s/base and ticks the PingSource every
// SYNC_INTERVAL. When everything answers it writes .run/env; Ctrl-C stops it all.
//
// Nothing outlives it, however it ends: the first SIGINT, SIGTERM or SIGHUP starts an orderly
// stop that further signals do not interrupt; every server it starts carries a parent-death
// signal (tests/servers); and a janitor child removes .run/env if it dies without stopping.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/kelseyhightower/envconfig"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/ocm-jobs/ocm-jobs/shared/logs"
)

// Config is the local run's configuration.
type Config struct {
	RedisURL     string        `envconfig:"REDIS_URL" desc:"Redis to use; empty: an embedded in-process Redis (development only)"`
	BrokerPort   int           `envconfig:"BROKER_PORT" default:"8080" desc:"not used: the broker is Knative's own (its ingress is BROKER_URL in .run/env); kept so that old scripts setting it still run"`
	FunctionPort int           `envconfig:"FUNCTION_PORT_BASE" default:"8081" desc:"jobs listens here, then incompliance, executor, statussync on the next ports"`
	SyncInterval time.Duration `envconfig:"SYNC_INTERVAL" default:"10s" desc:"how often the cron tick is sent"`
	RunDir       string        `envconfig:"RUN_DIR" default:".run" desc:"where env, logs and binaries of the local run go (relative to the repository unless absolute)"`
	LogLevel     string        `envconfig:"LOG_LEVEL" default:"info" desc:"log level of the stack and the functions"`
	// PolicyManagerURL names a real Policy Manager; empty: a stand-in that records what it gets.
	PolicyManagerURL string `envconfig:"POLICY_MANAGER_URL" desc:"ICOS Dynamic Policy Manager the jobs function registers groups with; empty: a local stand-in (the next port after the functions') that records every event"`
}

func init() {
	if isJanitor() {
		return // it must outlive its parent
	}
	// Stop cleanly (and stop everything started) if `make` itself is killed. Package init
	// runs on the main thread, which the Go runtime never ends, and Linux keeps this setting
	// per thread: set anywhere else, it could vanish with the thread that set it.
	_ = unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGTERM), 0, 0, 0)
}

func main() {
	if isJanitor() {
		janitor(os.Args[2], os.Args[3])
		return
	}
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
	ctx := stopOnSignal(log)
	s := &Stack{Config: cfg, Log: log}
	err = s.Run(ctx)
	stopCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s.Stop(stopCtx)
	if err != nil && ctx.Err() == nil {
		log.Errorw("local run failed", "error", err)
		os.Exit(1)
	}
}

func isJanitor() bool { return len(os.Args) == 4 && os.Args[1] == janitorArg }

// stopOnSignal returns a context that the first SIGINT, SIGTERM or SIGHUP cancels. Later
// signals are logged and otherwise ignored, so they cannot cut the stop short and leave
// servers running: one `kill` of make's process group is two SIGTERMs here (make forwards its
// own), make's death is another (the parent-death signal), and a second Ctrl-C is common.
func stopOnSignal(log *zap.SugaredLogger) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	// A closed terminal or pipe on stdout must not kill the stop either: with SIGPIPE
	// handled, a write there fails instead.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	go func() {
		sig := <-sigs
		log.Infow("stopping: signal received", "signal", sig.String())
		cancel()
		for sig := range sigs {
			log.Warnw("already stopping; signal ignored until everything is stopped", "signal", sig.String())
		}
	}()
	return ctx
}
