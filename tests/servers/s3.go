package servers

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"
)

// S3 is a versitygw S3 gateway on a loopback port, its POSIX backend on a temporary
// directory (each top-level directory is a bucket), with static root credentials.
type S3 struct {
	Endpoint  string
	AccessKey string
	SecretKey string
	Region    string
	Dir       string
	addr      string
	proc      *Process
}

// StartS3 starts versitygw on a free loopback port and waits until it accepts connections.
// buckets are created as directories of the backend before it starts.
func StartS3(buckets ...string) (*S3, error) {
	d, err := os.MkdirTemp("", "ocm-jobs-s3-")
	if err != nil {
		return nil, err
	}
	root := filepath.Join(d, "data")
	for _, b := range append([]string{""}, buckets...) {
		if err := os.MkdirAll(filepath.Join(root, b), 0o755); err != nil {
			return nil, err
		}
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	s := &S3{
		addr: fmt.Sprintf("127.0.0.1:%d", port), AccessKey: "ocmjobs", SecretKey: "ocmjobs-secret-key",
		Region: "us-east-1", Dir: d,
	}
	s.Endpoint = "http://" + s.addr
	if err := s.start(); err != nil {
		_ = os.RemoveAll(d)
		return nil, err
	}
	return s, nil
}

func (s *S3) start() error {
	bin, err := Bin("versitygw")
	if err != nil {
		return err
	}
	args := []string{"--port", s.addr, "--access", s.AccessKey, "--secret", s.SecretKey, "--region", s.Region,
		"--quiet", "posix", "--sidecar", filepath.Join(s.Dir, "meta"), filepath.Join(s.Dir, "data")}
	if err := os.MkdirAll(filepath.Join(s.Dir, "meta"), 0o755); err != nil {
		return err
	}
	p, err := startProcess("versitygw "+s.addr, filepath.Join(s.Dir, "versitygw.log"), nil, bin, args...)
	if err != nil {
		return err
	}
	s.proc = p
	return waitFor(context.Background(), p, 20*time.Second, func(ctx context.Context) error {
		c, err := net.DialTimeout("tcp", s.addr, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// Env is the object store configuration of a function using this server.
func (s *S3) Env(bucket string) map[string]string {
	return map[string]string{
		"S3_ENDPOINT": s.Endpoint, "S3_REGION": s.Region, "S3_BUCKET": bucket, "S3_PATH_STYLE": "true",
		"S3_ACCESS_KEY_ID": s.AccessKey, "S3_SECRET_ACCESS_KEY": s.SecretKey,
	}
}

// Kill kills the gateway (the object store becomes unreachable; its data stays).
func (s *S3) Kill() { s.proc.Kill() }

// Restart starts the gateway again on the same port and data.
func (s *S3) Restart() error {
	s.proc.Stop(5 * time.Second)
	return s.start()
}

// Stop stops the gateway and removes its data.
func (s *S3) Stop() {
	s.proc.Stop(5 * time.Second)
	_ = os.RemoveAll(s.Dir)
}
