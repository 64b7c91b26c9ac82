package telemetry

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"

	"github.com/redis/go-redis/v9"
)

// RedisErrors is a go-redis hook that counts the commands that failed (a missing key is an
// answer, not a failure; NOSCRIPT is go-redis loading a script on a new server; HELLO and
// CLIENT are its connection handshake, whose refusals it tolerates).
func RedisErrors(t *Telemetry) redis.Hook { return redisHook{t} }

type redisHook struct{ t *Telemetry }

func (h redisHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		if err != nil {
			h.t.RedisError(ctx, "dial")
		}
		return c, err
	}
}

func (h redisHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		h.count(ctx, cmd.Name(), err)
		return err
	}
}

func (h redisHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		for _, c := range cmds {
			h.count(ctx, c.Name(), c.Err())
		}
		return err
	}
}

// count counts a failed command. err is what the hook chain returned for it: in a process
// hook the command's own Err is not set yet (TestClientErrors).
func (h redisHook) count(ctx context.Context, command string, err error) {
	if err == nil || errors.Is(err, redis.Nil) || strings.HasPrefix(err.Error(), "NOSCRIPT") {
		return
	}
	name := strings.ToLower(command)
	if name == "hello" || name == "client" {
		return
	}
	h.t.RedisError(ctx, name)
}

// HubErrors wraps the hub client's transport (rest.Config.Wrap) to count the requests that got
// no answer or a 5xx, by verb.
func HubErrors(t *Telemetry) func(http.RoundTripper) http.RoundTripper {
	return func(rt http.RoundTripper) http.RoundTripper {
		if t == nil {
			return rt
		}
		return hubTransport{next: rt, t: t}
	}
}

type hubTransport struct {
	next http.RoundTripper
	t    *Telemetry
}

func (h hubTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := h.next.RoundTrip(r)
	if err != nil || resp.StatusCode >= 500 {
		h.t.HubError(r.Context(), strings.ToLower(r.Method))
	}
	return resp, err
}
