package servers

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisOptions configure a redis-server.
type RedisOptions struct {
	// Dir holds the data and the log; a new temporary directory when empty.
	Dir string
	// AppendFsync is the AOF fsync policy: "everysec" (default), "always" or "no".
	AppendFsync string
	// Cluster starts the server with cluster-enabled yes.
	Cluster bool
}

// Redis is a redis-server on a loopback port, with AOF on.
type Redis struct {
	Addr string
	Dir  string
	opts RedisOptions
	port int
	proc *Process
}

// StartRedis starts a redis-server on a free loopback port and waits until it answers PING.
func StartRedis(opts RedisOptions) (*Redis, error) {
	if opts.AppendFsync == "" {
		opts.AppendFsync = "everysec"
	}
	if opts.Dir == "" {
		d, err := os.MkdirTemp("", "ocm-jobs-redis-")
		if err != nil {
			return nil, err
		}
		opts.Dir = d
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	r := &Redis{Addr: fmt.Sprintf("127.0.0.1:%d", port), Dir: opts.Dir, opts: opts, port: port}
	if err := r.start(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Redis) start() error {
	bin, err := Bin("redis-server")
	if err != nil {
		return err
	}
	args := []string{
		"--bind", "127.0.0.1", "--port", itoa(r.port), "--dir", r.Dir,
		"--appendonly", "yes", "--appendfsync", r.opts.AppendFsync,
		"--save", "", "--protected-mode", "no", "--daemonize", "no",
		"--logfile", "", "--loglevel", "warning",
	}
	if r.opts.Cluster {
		args = append(args, "--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(r.Dir, "nodes.conf"),
			"--cluster-node-timeout", "5000")
	}
	p, err := startProcess("redis-server "+r.Addr, filepath.Join(r.Dir, "redis.log"), nil, bin, args...)
	if err != nil {
		return err
	}
	r.proc = p
	c := redis.NewClient(&redis.Options{Addr: r.Addr, MaxRetries: -1})
	defer c.Close()
	return waitFor(context.Background(), p, 20*time.Second, func(ctx context.Context) error {
		// LOADING errors while the AOF is replayed count as not ready.
		return c.Ping(ctx).Err()
	})
}

// URL is the REDIS_URL of this server.
func (r *Redis) URL() string { return "redis://" + r.Addr + "/0" }

// PID is the server's process id.
func (r *Redis) PID() int { return r.proc.PID() }

// Kill kills the server with SIGKILL, as a crash would.
func (r *Redis) Kill() { r.proc.Kill() }

// Restart starts the server again on the same port and directory (its AOF is replayed).
func (r *Redis) Restart() error {
	r.proc.Stop(5 * time.Second)
	return r.start()
}

// Stop stops the server and removes its directory.
func (r *Redis) Stop() {
	r.proc.Stop(5 * time.Second)
	_ = os.RemoveAll(r.Dir)
}

// RedisCluster is a Redis Cluster of masters on loopback, without replicas.
type RedisCluster struct {
	Nodes []*Redis
}

// StartRedisCluster starts n cluster-enabled servers and joins them with
// `redis-cli --cluster create`, waiting until every node reports cluster_state:ok.
func StartRedisCluster(n int) (*RedisCluster, error) {
	rc := &RedisCluster{}
	for i := 0; i < n; i++ {
		r, err := StartRedis(RedisOptions{Cluster: true})
		if err != nil {
			rc.Stop()
			return nil, err
		}
		rc.Nodes = append(rc.Nodes, r)
	}
	cli, err := Bin("redis-cli")
	if err != nil {
		rc.Stop()
		return nil, err
	}
	args := []string{"--cluster", "create"}
	args = append(args, rc.Addrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		rc.Stop()
		return nil, fmt.Errorf("redis-cli --cluster create: %w\n%s", err, out)
	}
	for _, node := range rc.Nodes {
		c := redis.NewClient(&redis.Options{Addr: node.Addr})
		err := waitFor(context.Background(), node.proc, 30*time.Second, func(ctx context.Context) error {
			info, err := c.ClusterInfo(ctx).Result()
			if err != nil {
				return err
			}
			if !strings.Contains(info, "cluster_state:ok") {
				return fmt.Errorf("cluster_state not ok")
			}
			return nil
		})
		c.Close()
		if err != nil {
			rc.Stop()
			return nil, err
		}
	}
	return rc, nil
}

// Addrs lists the nodes' host:port.
func (rc *RedisCluster) Addrs() []string {
	out := make([]string, len(rc.Nodes))
	for i, n := range rc.Nodes {
		out[i] = n.Addr
	}
	return out
}

// URL is the REDIS_URL of the cluster: redis+cluster://host:port?addr=host:port&addr=….
func (rc *RedisCluster) URL() string {
	addrs := rc.Addrs()
	u := "redis+cluster://" + addrs[0]
	for i, a := range addrs[1:] {
		sep := "&"
		if i == 0 {
			sep = "?"
		}
		u += sep + "addr=" + a
	}
	return u
}

// Stop stops every node.
func (rc *RedisCluster) Stop() {
	for _, n := range rc.Nodes {
		n.Stop()
	}
}
