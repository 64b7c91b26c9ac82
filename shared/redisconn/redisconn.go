// Package redisconn opens the Redis connection every function shares, from one URL that names
// a single server, a Sentinel-managed master or a Redis Cluster.
//
//	redis://[user:password@]host:port[/db]                 one server (rediss:// for TLS)
//	redis+sentinel://[user:password@]host:port[,...]?master_name=NAME[&addr=host:port…]
//	redis+cluster://[user:password@]host:port?addr=host:port[&addr=host:port…]
//
// Query parameters are go-redis's (dial_timeout, read_timeout, pool_size, …).
package redisconn

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Open parses a REDIS_URL and returns a client for it. It does not connect.
func Open(rawURL string) (redis.UniversalClient, error) {
	if rawURL == "" {
		return nil, fmt.Errorf("REDIS_URL is empty: name a Redis (redis://host:port/0, redis+sentinel://…, redis+cluster://…)")
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL %q: %w", redact(rawURL), err)
	}
	switch u.Scheme {
	case "redis", "rediss", "unix":
		o, err := redis.ParseURL(rawURL)
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL %q: %w", redact(rawURL), err)
		}
		return redis.NewClient(o), nil
	case "redis+sentinel", "rediss+sentinel":
		o, err := redis.ParseFailoverURL(withScheme(u, strings.TrimSuffix(u.Scheme, "+sentinel")))
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL %q: %w", redact(rawURL), err)
		}
		if o.MasterName == "" {
			return nil, fmt.Errorf("REDIS_URL %q: a sentinel URL needs master_name=", redact(rawURL))
		}
		return redis.NewFailoverClient(o), nil
	case "redis+cluster", "rediss+cluster":
		o, err := redis.ParseClusterURL(withScheme(u, strings.TrimSuffix(u.Scheme, "+cluster")))
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL %q: %w", redact(rawURL), err)
		}
		return redis.NewClusterClient(o), nil
	default:
		return nil, fmt.Errorf("REDIS_URL %q: unknown scheme %q (want redis, rediss, redis+sentinel or redis+cluster)", redact(rawURL), u.Scheme)
	}
}

// Connect opens a REDIS_URL and waits up to timeout for a PING to succeed.
func Connect(ctx context.Context, rawURL string, timeout time.Duration) (redis.UniversalClient, error) {
	c, err := Open(rawURL)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := c.Ping(ctx).Err()
		if err == nil {
			return c, nil
		}
		select {
		case <-ctx.Done():
			c.Close()
			return nil, fmt.Errorf("redis at %s does not answer: %w", redact(rawURL), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func withScheme(u *url.URL, scheme string) string {
	c := *u
	c.Scheme = scheme
	return c.String()
}

// redact hides a password in a URL for messages.
func redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil || u.User == nil {
		return rawURL
	}
	return u.Redacted()
}
