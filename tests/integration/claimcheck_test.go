package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ocm-jobs/ocm-jobs/shared/config"
	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/objectstore"
	"github.com/ocm-jobs/ocm-jobs/shared/ocm"
	"github.com/ocm-jobs/ocm-jobs/tests/servers"
)

// s3Env is the configuration of functions using the suite's object store; mod edits it.
func s3Env(mod map[string]string) map[string]string {
	vars := env.S3.Env(servers.S3Bucket)
	vars["S3_MAX_ATTEMPTS"] = "1"
	vars["S3_TIMEOUT"] = "10s"
	for k, v := range mod {
		vars[k] = v
	}
	return vars
}

// putObject stores data in the suite's bucket at key and returns its dataref.
func putObject(t testing.TB, key string, data []byte) string {
	t.Helper()
	c, err := objectstore.New(context.Background(), objectstore.Options{
		Endpoint: env.S3.Endpoint, Region: env.S3.Region, PathStyle: true,
		AccessKeyID: env.S3.AccessKey, SecretAccessKey: env.S3.SecretKey,
	})
	if err != nil {
		t.Fatal(err)
	}
	ref := objectstore.Ref{Bucket: servers.S3Bucket, Key: key}
	if err := c.Put(context.Background(), ref, "application/yaml", data); err != nil {
		t.Fatal(err)
	}
	return ref.String()
}

// contentKey is the content-addressed key of data.
func contentKey(data []byte) string {
	sum := sha256.Sum256(data)
	return "descriptors/" + hex.EncodeToString(sum[:]) + ".yaml"
}

// refEvent sends a create event in binary mode whose descriptor is passed by reference.
func (f *functions) refEvent(t *testing.T, id, dataref string) reply {
	t.Helper()
	return f.eventWith(t, "eu.icos.jobgroup.create.v1", id, map[string]string{"Ce-Dataref": dataref}, nil)
}

// bigApp is a descriptor of n components on cluster1, each a ConfigMap of size bytes: large
// enough together that no broker carries it inline, each small enough for one ManifestWork.
func bigApp(name string, n, size int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "name: %s\ncomponents:\n", name)
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "  - name: part%d\n    manifests: [{name: part%d}]\n    targets: {cluster_name: cluster1, orchestrator: ocm}\n", i, i)
	}
	b.WriteString("manifests:\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "  - apiVersion: v1\n    kind: ConfigMap\n    metadata: {name: part%d}\n    data: {blob: %s}\n", i, strings.Repeat("x", size))
	}
	return b.Bytes()
}

// TestClaimCheckCreate: a 5 MiB descriptor passed by reference (dataref, content-addressed)
// goes end to end: fetched from the real S3 server, stored, executed, and applied by the
// real work agent as ManifestWorks holding the whole payload.
func TestClaimCheckCreate(t *testing.T) {
	s := startE2E(t, s3Env(nil))
	s.ticking(t, time.Second)
	name := "big" + uuid.NewString()[:6]
	const parts, size = 9, 600 << 10
	desc := bigApp(name, parts, size)
	if len(desc) < 5<<20 {
		t.Fatalf("descriptor of %d bytes, want at least 5 MiB", len(desc))
	}
	r := s.refEvent(t, "big-1", putObject(t, contentKey(desc), desc))
	if r.status != http.StatusOK {
		t.Fatalf("create by reference: %d %.500s", r.status, r.body)
	}
	var g model.JobGroup
	r.decode(t, &g)
	if len(g.Jobs) != parts {
		t.Fatalf("%d jobs, want %d", len(g.Jobs), parts)
	}
	// Each job's 600 KiB of manifests is in the object store, only referenced from Redis,
	// and every reader (the REST API, the executor) gets the manifests themselves.
	rdb := redisClient(t)
	for _, j := range g.Jobs {
		key := fmt.Sprintf("%s:{b:%02x}:job:%s", s.prefix, model.Bucket(j.ID), j.ID)
		if v := rdb.HGet(context.Background(), key, "manifests").Val(); !strings.HasPrefix(v, "blob:manifests/") {
			t.Errorf("job %s: Redis holds %d bytes of manifests %.40q, want a reference", j.ID, len(v), v)
		}
		var got model.Job
		s.rest(t, http.MethodGet, "/jobmanager/jobs/"+j.ID, nil, s.token).decode(t, &got)
		if len(got.Manifests) != 1 || len(got.Manifests[0].YamlString) < size {
			t.Errorf("GET job %s: %d manifests", j.ID, len(got.Manifests))
		}
	}
	// The test's own reader needs the object store too.
	sc := config.Store{Prefix: s.prefix, RetentionTTL: time.Hour, MaxManifestBytes: 1 << 20, OffloadBytes: 64 << 10,
		ManifestPrefix: "manifests", ObjectStore: config.ObjectStore{S3Endpoint: env.S3.Endpoint, S3Region: env.S3.Region,
			S3Bucket: servers.S3Bucket, S3PathStyle: true, S3AccessKeyID: env.S3.AccessKey, S3SecretAccessKey: env.S3.SecretKey,
			S3Timeout: 10 * time.Second, S3MaxAttempts: 1}}
	objects, err := sc.Objects(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	st, err := sc.Open(rdb, objects)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, j := range g.Jobs {
		waitJob(t, st, j.ID, 120*time.Second, "finished", finished)
		mw, err := env.Hub.Work.WorkV1().ManifestWorks("cluster1").Get(context.Background(), ocm.WorkName(j.ID), metav1.GetOptions{})
		if err != nil {
			t.Fatalf("ManifestWork of %s: %v", j.Component, err)
		}
		for _, m := range mw.Spec.Workload.Manifests {
			total += len(m.Raw)
		}
	}
	if total < parts*size {
		t.Errorf("the ManifestWorks hold %d bytes, want the descriptor's %d", total, parts*size)
	}
}

// TestClaimCheckBadInput: every dataref that cannot be read for good is 422 with the reason;
// an unreachable object store is 503 so the broker retries; nothing is created.
func TestClaimCheckBadInput(t *testing.T) {
	good := guestbook(t)
	goodRef := putObject(t, contentKey(good), good)
	notDesc := []byte("\x89PNG\r\n\x1a\n not a descriptor")
	lying := putObject(t, contentKey([]byte("something else")), good)
	for name, tc := range map[string]struct {
		env    map[string]string
		ref    string
		status int
		reason string
	}{
		"missing object":       {nil, "s3://" + servers.S3Bucket + "/descriptors/none.yaml", http.StatusUnprocessableEntity, "no such object"},
		"missing bucket":       {map[string]string{"DATAREF_ALLOWED": "no-such-bucket," + servers.S3Bucket}, "s3://no-such-bucket/app.yaml", http.StatusUnprocessableEntity, "no such object"},
		"a bucket not allowed": {nil, "s3://another-bucket/app.yaml", http.StatusUnprocessableEntity, "DATAREF_ALLOWED"},
		"bad credentials":      {map[string]string{"S3_SECRET_ACCESS_KEY": "wrong"}, goodRef, http.StatusUnprocessableEntity, "access denied"},
		"not a descriptor":     {nil, putObject(t, "descriptors/png.yaml", notDesc), http.StatusUnprocessableEntity, "not valid"},
		"sha mismatch":         {nil, lying, http.StatusUnprocessableEntity, "content address"},
		"too large":            {map[string]string{"MAX_DATAREF_BYTES": "100"}, goodRef, http.StatusUnprocessableEntity, "too large"},
		"not an s3 ref":        {nil, "http://example.com/app.yaml", http.StatusUnprocessableEntity, "s3://bucket/key"},
		"no object store":      {map[string]string{"S3_ENDPOINT": "", "S3_BUCKET": ""}, goodRef, http.StatusUnprocessableEntity, "object store"},
		"store unreachable":    {map[string]string{"S3_ENDPOINT": "http://127.0.0.1:1"}, goodRef, http.StatusServiceUnavailable, "unavailable"},
	} {
		t.Run(name, func(t *testing.T) {
			f := startFunctions(t, s3Env(tc.env))
			r := f.refEvent(t, uuid.NewString(), tc.ref)
			if r.status != tc.status || !strings.Contains(string(r.body)+r.header.Get("Ce-Reason"), tc.reason) {
				t.Errorf("dataref %s: %d %q, want %d mentioning %q", tc.ref, r.status, r.body, tc.status, tc.reason)
			}
			var all []model.JobGroup
			f.rest(t, http.MethodGet, "/jobmanager/groups", nil, f.token).decode(t, &all)
			if len(all) != 0 {
				t.Errorf("%d groups created by a refused event", len(all))
			}
		})
	}
	// The good reference works with the same functions; the same descriptor inline, past
	// MAX_BODY_BYTES (default 1 MiB), is 413 pointing at dataref, over REST and as an event.
	f := startFunctions(t, s3Env(nil))
	big := bigApp("inline", 2, 600<<10)
	if r := f.rest(t, http.MethodPost, "/jobmanager/groups", big, f.token); r.status != http.StatusRequestEntityTooLarge || !strings.Contains(string(r.body), "dataref") {
		t.Errorf("POST /groups of %d bytes: %d %.200s", len(big), r.status, r.body)
	}
	if r := f.event(t, "eu.icos.jobgroup.create.v1", uuid.NewString(), "application/yaml", big); r.status != http.StatusRequestEntityTooLarge || !strings.Contains(string(r.body), "dataref") {
		t.Errorf("create event of %d bytes: %d %.200s", len(big), r.status, r.body)
	}
	if r := f.refEvent(t, uuid.NewString(), goodRef); r.status != http.StatusOK {
		t.Errorf("good dataref: %d %s", r.status, r.body)
	}
}
