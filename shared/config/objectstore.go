package config

import (
	"time"

	"github.com/ocm-jobs/ocm-jobs/shared/objectstore"
)

// ObjectStore is the configuration of the S3 object store: offloaded manifests (every
// function), descriptors passed by reference and the archive (jobs). With neither
// S3_ENDPOINT nor S3_BUCKET there is none.
type ObjectStore struct {
	S3Endpoint        string        `envconfig:"S3_ENDPOINT" desc:"S3 endpoint URL (MinIO, versitygw, Ceph RGW: http://host:port); empty: AWS S3 of S3_REGION. With neither S3_ENDPOINT nor S3_BUCKET set there is no object store and a dataref is refused (422)"`
	S3Region          string        `envconfig:"S3_REGION" default:"us-east-1" desc:"S3 region requests are signed for"`
	S3Bucket          string        `envconfig:"S3_BUCKET" desc:"bucket of this install's objects; a dataref may name any bucket the credentials can read"`
	S3PathStyle       bool          `envconfig:"S3_PATH_STYLE" default:"true" desc:"address buckets as http://endpoint/bucket/key (MinIO, versitygw, Ceph RGW) rather than as host names (AWS S3: false)"`
	S3AccessKeyID     string        `envconfig:"S3_ACCESS_KEY_ID" desc:"static access key; empty: aws-sdk-go-v2's default credential chain (AWS_ACCESS_KEY_ID, web identity, instance role)"`
	S3SecretAccessKey string        `envconfig:"S3_SECRET_ACCESS_KEY" desc:"static secret key, with S3_ACCESS_KEY_ID"`
	S3Timeout         time.Duration `envconfig:"S3_TIMEOUT" default:"30s" desc:"deadline of one object store request, retries included"`
	S3MaxAttempts     int           `envconfig:"S3_MAX_ATTEMPTS" default:"3" desc:"attempts of an object store request that fails with a network error or a 5xx"`
}

// Options converts the configuration to object store options.
func (o ObjectStore) Options() objectstore.Options {
	return objectstore.Options{
		Endpoint: o.S3Endpoint, Region: o.S3Region, Bucket: o.S3Bucket, PathStyle: o.S3PathStyle,
		AccessKeyID: o.S3AccessKeyID, SecretAccessKey: o.S3SecretAccessKey, Timeout: o.S3Timeout, MaxAttempts: o.S3MaxAttempts,
	}
}

// Validate checks what envconfig cannot.
func (o ObjectStore) Validate() error {
	return o.Options().Validate()
}
