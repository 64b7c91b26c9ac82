// Command serve runs the ocm-jobs functions as a plain process — what func's scaffolding does
// in a Knative Service, plus the REST API — for `make run`, the test suites and installs
// without Knative. FUNCTION narrows it to one function; PORT (default 8080) is where it
// listens, on BIND_ADDRESS (default all interfaces). PROFILE_DIR, when set, receives a CPU
// profile of the process's whole life (cpu.pprof) and its allocations (allocs.pprof) when it
// stops: what `make bench` profiles the executor with.
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"

	"knative.dev/pkg/logging"
	"knative.dev/pkg/signals"

	function "github.com/ocm-jobs/ocm-jobs"
	"github.com/ocm-jobs/ocm-jobs/shared/events"
)

func main() {
	if err := run(signals.NewContext()); err != nil {
		fmt.Fprintln(os.Stderr, "ocm-jobs:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	if dir := os.Getenv("PROFILE_DIR"); dir != "" {
		stop, err := profile(dir)
		if err != nil {
			return err
		}
		defer stop()
	}
	f := function.New()
	if err := f.Start(ctx, nil); err != nil {
		return err
	}
	defer f.Stop(context.Background())
	log := f.Logger()
	ctx = logging.WithLogger(ctx, log)
	h, err := f.Server().HTTPHandler(ctx)
	if err != nil {
		return err
	}
	addr := net.JoinHostPort(os.Getenv("BIND_ADDRESS"), strconv.Itoa(f.Runtime.Port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", addr, err)
	}
	log.Infow("listening", "addr", l.Addr().String())
	err = events.Serve(ctx, l, h, f.Runtime.ShutdownTimeout)
	log.Infow("stopped", "error", err)
	return err
}

// profile starts a CPU profile into dir/cpu.pprof; the returned stop ends it and writes the
// allocation profile dir/allocs.pprof.
func profile(dir string) (func(), error) {
	cpu, err := os.Create(filepath.Join(dir, "cpu.pprof"))
	if err != nil {
		return nil, fmt.Errorf("PROFILE_DIR: %w", err)
	}
	if err := pprof.StartCPUProfile(cpu); err != nil {
		cpu.Close()
		return nil, fmt.Errorf("PROFILE_DIR: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		cpu.Close()
		if f, err := os.Create(filepath.Join(dir, "allocs.pprof")); err == nil {
			_ = pprof.Lookup("allocs").WriteTo(f, 0)
			f.Close()
		}
	}, nil
}
