package store_test

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/ocm-jobs/ocm-jobs/shared/store"
)

// evalCapture keeps the EVALSHA commands a client sends (while on), to replay their arguments.
type evalCapture struct {
	mu   sync.Mutex
	on   bool
	args [][]any
}

func (e *evalCapture) DialHook(next redis.DialHook) redis.DialHook { return next }

func (e *evalCapture) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		e.mu.Lock()
		if e.on && strings.EqualFold(fmt.Sprint(cmd.Args()[0]), "evalsha") {
			e.args = append(e.args, append([]any(nil), cmd.Args()...))
		}
		e.mu.Unlock()
		return next(ctx, cmd)
	}
}

func (e *evalCapture) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// serverCost is what a redis-server spent between two readings: CPU (INFO cpu, user + system,
// µs) and, by INFO commandstats, the µs of each command (a script's commands are counted
// under their own names and inside the EVALSHA's).
type serverCost struct {
	cpu   float64
	usec  map[string]float64
	calls map[string]float64
}

func readServerCost(b *testing.B, c *redis.Client) serverCost {
	b.Helper()
	info, err := c.Info(context.Background(), "cpu", "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	sc := serverCost{usec: map[string]float64{}, calls: map[string]float64{}}
	for _, line := range strings.Split(info, "\r\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		if k == "used_cpu_sys" || k == "used_cpu_user" {
			f, _ := strconv.ParseFloat(v, 64)
			sc.cpu += f * 1e6
		}
		if name, ok := strings.CutPrefix(k, "cmdstat_"); ok {
			for _, kv := range strings.Split(v, ",") {
				f, val, _ := strings.Cut(kv, "=")
				x, _ := strconv.ParseFloat(val, 64)
				switch f {
				case "calls":
					sc.calls[name] = x
				case "usec":
					sc.usec[name] = x
				}
			}
		}
	}
	return sc
}

// minus is the cost between two readings, per call of n.
func (sc serverCost) minus(before serverCost, n int) serverCost {
	d := serverCost{cpu: (sc.cpu - before.cpu) / float64(n), usec: map[string]float64{}, calls: map[string]float64{}}
	for k, v := range sc.usec {
		if u := v - before.usec[k]; u > 0 {
			d.usec[k] = u / float64(n)
			d.calls[k] = (sc.calls[k] - before.calls[k]) / float64(n)
		}
	}
	return d
}

// inner is the µs of the commands a script ran (all but the script call itself and INFO).
func (sc serverCost) inner() (float64, float64, string) {
	var us, calls float64
	var parts []string
	for k, v := range sc.usec {
		if k == "evalsha" || k == "eval" || k == "info" || k == "script|load" {
			continue
		}
		us += v
		calls += sc.calls[k]
		parts = append(parts, fmt.Sprintf("%s %.1f×%.1fµs", k, sc.calls[k], v))
	}
	sort.Strings(parts)
	return us, calls, strings.Join(parts, ", ")
}

// BenchmarkScriptCost splits what each hot script costs the redis-server per call: the
// EVALSHA's own time (INFO commandstats), of which the Redis commands it runs, the prelude
// every job script starts with (the same arguments replayed to a script that is only the
// prelude), the call and its argument decoding (the same arguments replayed to 'return 1'),
// the Lua of the body (the rest); and the server's CPU per call (INFO cpu, which also counts
// the network and the AOF). The hot scripts are a job's life: create (a one-job group),
// promote, finish.
func BenchmarkScriptCost(b *testing.B) {
	const n = 2000
	capture := &evalCapture{}
	s := benchStore(b, store.Options{}, capture)
	c := redis.NewClient(&redis.Options{Addr: single.Addr})
	defer c.Close()
	empty, err := c.ScriptLoad(ctx, "return 1").Result()
	if err != nil {
		b.Fatal(err)
	}
	preludeOnly, err := c.ScriptLoad(ctx, store.PreludeLua+"\nreturn 1").Result()
	if err != nil {
		b.Fatal(err)
	}
	claims := make([]store.Claim, n)
	ids := make([]string, n)
	steps := []struct {
		name string
		run  func(i int) error
	}{
		{"create", func(i int) error {
			g := newGroup(newJob("web", true))
			err := s.CreateGroup(ctx, g, "bench")
			ids[i] = g.Jobs[0].ID
			return err
		}},
		{"promote", func(i int) error {
			var err error
			claims[i], err = s.Promote(ctx, ids[i], hubA, "e")
			return err
		}},
		{"finish", func(i int) error {
			_, err := s.Finish(ctx, claims[i], "done")
			return err
		}},
	}
	for range b.N {
		for _, st := range steps {
			capture.mu.Lock()
			capture.on, capture.args = true, nil
			capture.mu.Unlock()
			before := readServerCost(b, c)
			for i := range n {
				if err := st.run(i); err != nil {
					b.Fatal(err)
				}
			}
			real := readServerCost(b, c).minus(before, n)
			capture.mu.Lock()
			capture.on = false
			args := capture.args
			capture.mu.Unlock()
			replay := func(sha string) serverCost {
				before := readServerCost(b, c)
				for _, a := range args {
					if err := c.Do(ctx, append([]any{"evalsha", sha}, a[2:]...)...).Err(); err != nil {
						b.Fatal(err)
					}
				}
				return readServerCost(b, c).minus(before, len(args))
			}
			bareCost := replay(empty)
			bare := bareCost.usec["evalsha"]
			pre := replay(preludeOnly).usec["evalsha"] - bare
			script := real.usec["evalsha"]
			cmds, calls, detail := real.inner()
			fmt.Printf("SCRIPT %s: redis-server CPU %.0fµs/call; EVALSHA %.1fµs = call+arguments %.1f + prelude %.1f + Lua body %.1f + %.1f redis.calls %.1fµs (%s); %d calls, %d args; CPU of the same call to 'return 1' %.0fµs\n",
				st.name, real.cpu, script, bare, pre, script-bare-pre-cmds, calls, cmds, detail, len(args)/n, len(args[0])-3, bareCost.cpu)
		}
	}
}
