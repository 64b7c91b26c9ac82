package objectstore_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/ocm-jobs/ocm-jobs/shared/objectstore"
	"github.com/ocm-jobs/ocm-jobs/tests/servers"
)

var env *servers.Env

func TestMain(m *testing.M) {
	servers.Main(m, servers.Need{S3: true, Redis: true}, &env)
}

func client(t *testing.T, mod func(*objectstore.Options)) *objectstore.Client {
	t.Helper()
	cfg := objectstore.Options{
		Endpoint: env.S3.Endpoint, Region: env.S3.Region, Bucket: servers.S3Bucket, PathStyle: true,
		AccessKeyID: env.S3.AccessKey, SecretAccessKey: env.S3.SecretKey, Timeout: 10 * time.Second,
		MaxAttempts: 1,
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := objectstore.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestGet reads objects back from a real S3 server and classifies every way a read fails.
func TestGet(t *testing.T) {
	ctx := context.Background()
	c := client(t, nil)
	body := []byte("name: app\n")
	good := objectstore.Ref{Bucket: servers.S3Bucket, Key: "descriptors/" + digest(body) + ".yaml"}
	wrong := objectstore.Ref{Bucket: servers.S3Bucket, Key: "descriptors/" + digest([]byte("other")) + ".yaml"}
	plain := objectstore.Ref{Bucket: servers.S3Bucket, Key: "descriptors/app.yaml"}
	big := objectstore.Ref{Bucket: servers.S3Bucket, Key: "big"}
	for _, r := range []objectstore.Ref{good, wrong, plain} {
		if err := c.Put(ctx, r, "application/yaml", body); err != nil {
			t.Fatalf("put %s: %v", r, err)
		}
	}
	if err := c.Put(ctx, big, "application/octet-stream", bytes.Repeat([]byte("x"), 2048)); err != nil {
		t.Fatal(err)
	}
	for _, r := range []objectstore.Ref{good, plain} {
		got, err := c.Get(ctx, r, 1<<20)
		if err != nil || !bytes.Equal(got, body) {
			t.Errorf("get %s: %q, %v", r, got, err)
		}
	}
	bad := client(t, func(c *objectstore.Options) { c.SecretAccessKey = "wrong" })
	down := client(t, func(c *objectstore.Options) { c.Endpoint = "http://127.0.0.1:1" })
	for name, tc := range map[string]struct {
		c     *objectstore.Client
		ref   objectstore.Ref
		limit int64
		want  error
	}{
		"missing object":    {c, objectstore.Ref{Bucket: servers.S3Bucket, Key: "nope"}, 1 << 20, objectstore.ErrNotFound},
		"missing bucket":    {c, objectstore.Ref{Bucket: "no-such-bucket", Key: "x"}, 1 << 20, objectstore.ErrNotFound},
		"bad credentials":   {bad, good, 1 << 20, objectstore.ErrDenied},
		"sha mismatch":      {c, wrong, 1 << 20, objectstore.ErrDigest},
		"too large":         {c, big, 1024, objectstore.ErrTooLarge},
		"store unreachable": {down, good, 1 << 20, objectstore.ErrUnavailable},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := tc.c.Get(ctx, tc.ref, tc.limit)
			if !errors.Is(err, tc.want) {
				t.Errorf("get %s: %v, want %v", tc.ref, err, tc.want)
			}
		})
	}
}

func TestParseRef(t *testing.T) {
	for in, ok := range map[string]bool{"s3://b/k": true, "s3://b/a/b/c.yaml": true, "s3://b": false, "s3:///k": false, "http://b/k": false} {
		if _, err := objectstore.ParseRef(in); (err == nil) != ok {
			t.Errorf("ParseRef(%q): %v", in, err)
		}
	}
}
