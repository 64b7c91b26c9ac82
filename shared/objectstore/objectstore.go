// Package objectstore is ocm-jobs' S3 object store: it fetches application descriptors passed
// by reference (the CloudEvents dataref extension, s3://bucket/key: the claim check) with
// aws-sdk-go-v2. Endpoint, region, path-style addressing and credentials come from
// configuration, so MinIO, versitygw, Ceph RGW and AWS S3 all work.
package objectstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// Options configure a client (shared/config.ObjectStore fills them from the environment).
type Options struct {
	// Endpoint is the S3 endpoint URL; empty: AWS S3 of Region.
	Endpoint string
	// Region is the region requests are signed for.
	Region string
	// Bucket is the bucket of this install's objects.
	Bucket string
	// PathStyle addresses buckets as endpoint/bucket/key rather than as host names.
	PathStyle bool
	// AccessKeyID and SecretAccessKey are static credentials; empty: the SDK's default chain.
	AccessKeyID, SecretAccessKey string
	// Timeout bounds one request, retries included.
	Timeout time.Duration
	// MaxAttempts is how often a request failing with a network error or a 5xx is tried.
	MaxAttempts int
}

// Enabled reports whether an object store is configured.
func (c Options) Enabled() bool { return c.Endpoint != "" || c.Bucket != "" }

// Validate checks what envconfig cannot.
func (c Options) Validate() error {
	if (c.AccessKeyID == "") != (c.SecretAccessKey == "") {
		return fmt.Errorf("S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY go together")
	}
	if c.Endpoint != "" {
		if u, err := url.Parse(c.Endpoint); err != nil || u.Scheme == "" || u.Host == "" {
			return fmt.Errorf("S3_ENDPOINT=%q: want a URL such as http://host:port", c.Endpoint)
		}
	}
	return nil
}

// The ways a request can fail. ErrNotFound, ErrDenied, ErrTooLarge and ErrDigest are the
// caller's (or the object's) fault and do not heal on retry; ErrUnavailable may.
var (
	ErrNotFound    = errors.New("no such object")
	ErrDenied      = errors.New("access denied")
	ErrTooLarge    = errors.New("object too large")
	ErrDigest      = errors.New("object does not match its content address")
	ErrUnavailable = errors.New("object store unavailable")
)

// Client is an S3 client for one configuration.
type Client struct {
	cfg Options
	s3  *s3.Client
}

// New builds a client. It does not contact the object store.
func New(ctx context.Context, cfg Options) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	opts := []func(*awsconfig.LoadOptions) error{
		awsconfig.WithRegion(cfg.Region),
		awsconfig.WithRetryMaxAttempts(max(cfg.MaxAttempts, 1)),
	}
	if cfg.AccessKeyID != "" {
		opts = append(opts, awsconfig.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(cfg.AccessKeyID, cfg.SecretAccessKey, "")))
	}
	ac, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("object store configuration: %w", err)
	}
	c := s3.NewFromConfig(ac, func(o *s3.Options) {
		o.UsePathStyle = cfg.PathStyle
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		// S3-compatible servers differ in their support of the SDK's default CRC checksums;
		// ask for them only where an operation requires one.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
	return &Client{cfg: cfg, s3: c}, nil
}

// Ref is an object named by a dataref.
type Ref struct {
	Bucket, Key string
}

func (r Ref) String() string { return "s3://" + r.Bucket + "/" + r.Key }

// ParseRef parses s3://bucket/key.
func ParseRef(s string) (Ref, error) {
	rest, ok := strings.CutPrefix(s, "s3://")
	if !ok {
		return Ref{}, fmt.Errorf("dataref %q: want s3://bucket/key", s)
	}
	b, k, _ := strings.Cut(rest, "/")
	if b == "" || k == "" {
		return Ref{}, fmt.Errorf("dataref %q: want s3://bucket/key", s)
	}
	return Ref{Bucket: b, Key: k}, nil
}

// ContentAddress returns the SHA-256 (hex) a key claims its object has: the key's last path
// element, up to its first dot, when that is 64 hex digits (…/<sha256> or …/<sha256>.yaml).
func ContentAddress(key string) (string, bool) {
	name, _, _ := strings.Cut(path.Base(key), ".")
	if len(name) != sha256.Size*2 {
		return "", false
	}
	if _, err := hex.DecodeString(name); err != nil {
		return "", false
	}
	return strings.ToLower(name), true
}

// Get reads an object of at most limit bytes. A content-addressed key (ContentAddress) is
// checked against the SHA-256 of what was read: a mismatch is ErrDigest, so a truncated,
// replaced or corrupted object is never taken for the one that was referenced.
func (c *Client) Get(ctx context.Context, ref Ref, limit int64) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	out, err := c.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(ref.Bucket), Key: aws.String(ref.Key)})
	if err != nil {
		return nil, classify(ref, err)
	}
	defer out.Body.Close()
	if out.ContentLength != nil && *out.ContentLength > limit {
		return nil, fmt.Errorf("%s: %d bytes, more than the %d accepted: %w", ref, *out.ContentLength, limit, ErrTooLarge)
	}
	// Read one byte past the limit so a server that did not announce the length cannot
	// make us hold more than limit.
	data, err := io.ReadAll(io.LimitReader(out.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s: reading: %v: %w", ref, err, ErrUnavailable)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s: more than the %d bytes accepted: %w", ref, limit, ErrTooLarge)
	}
	if want, ok := ContentAddress(ref.Key); ok {
		sum := sha256.Sum256(data)
		if got := hex.EncodeToString(sum[:]); got != want {
			return nil, fmt.Errorf("%s: its SHA-256 is %s: %w", ref, got, ErrDigest)
		}
	}
	return data, nil
}

// Put writes an object.
func (c *Client) Put(ctx context.Context, ref Ref, contentType string, data []byte) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	_, err := c.s3.PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String(ref.Bucket), Key: aws.String(ref.Key), Body: bytes.NewReader(data),
		ContentType: aws.String(contentType), ContentLength: aws.Int64(int64(len(data))),
	})
	if err != nil {
		return classify(ref, err)
	}
	return nil
}

// classify maps an SDK error to ErrNotFound, ErrDenied or ErrUnavailable: the S3 error code
// where the server sent one, else the HTTP status (a HEAD-like error has no body), else the
// transport failed.
func classify(ref Ref, err error) error {
	var api smithy.APIError
	if errors.As(err, &api) {
		switch api.ErrorCode() {
		case "NoSuchKey", "NoSuchBucket", "NotFound":
			return fmt.Errorf("%s: %s: %w", ref, api.ErrorMessage(), ErrNotFound)
		case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden", "AllAccessDisabled", "AccountProblem":
			return fmt.Errorf("%s: %s (%s): %w", ref, api.ErrorCode(), api.ErrorMessage(), ErrDenied)
		}
	}
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		switch re.HTTPStatusCode() {
		case http.StatusNotFound:
			return fmt.Errorf("%s: %v: %w", ref, err, ErrNotFound)
		case http.StatusForbidden, http.StatusUnauthorized:
			return fmt.Errorf("%s: %v: %w", ref, err, ErrDenied)
		}
	}
	return fmt.Errorf("%s: %v: %w", ref, err, ErrUnavailable)
}
