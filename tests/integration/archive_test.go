package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ocm-jobs/ocm-jobs/functions/jobs"
	"github.com/ocm-jobs/ocm-jobs/shared/events"
	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/objectstore"
	"github.com/ocm-jobs/ocm-jobs/tests/servers"
)

// archivedGroup is GET /jobmanager/groups/{id} of an archived group: the group (decoded
// separately: model.JobGroup has its own UnmarshalJSON) and what marks it archived.
type archivedGroup struct {
	Group     model.JobGroup                  `json:"-"`
	Archived  bool                            `json:"archived"`
	DeletedAt *time.Time                      `json:"deleted_at"`
	Histories map[string][]model.HistoryEntry `json:"histories"`
}

// createAndDelete creates the guestbook group over REST and deletes it (its jobs never ran,
// so it may be deleted at once).
func createAndDelete(t *testing.T, f *functions) model.JobGroup {
	t.Helper()
	r := f.rest(t, http.MethodPost, "/jobmanager/groups", guestbook(t), f.token)
	if r.status != http.StatusCreated {
		t.Fatalf("POST /groups: %d %s", r.status, r.body)
	}
	var g model.JobGroup
	r.decode(t, &g)
	if r := f.rest(t, http.MethodDelete, "/jobmanager/groups/"+g.ID, nil, f.token); r.status != http.StatusOK {
		t.Fatalf("DELETE /groups/%s: %d %s", g.ID, r.status, r.body)
	}
	return g
}

// readArchived reads a group by id and wants it from the archive.
func readArchived(t *testing.T, f *functions, g model.JobGroup) {
	t.Helper()
	r := f.rest(t, http.MethodGet, "/jobmanager/groups/"+g.ID, nil, f.token)
	if r.status != http.StatusOK || r.header.Get(jobs.HeaderArchived) != "true" {
		t.Fatalf("GET archived group: %d %s %s", r.status, r.header.Get(jobs.HeaderArchived), r.body)
	}
	var a archivedGroup
	r.decode(t, &a)
	r.decode(t, &a.Group)
	if !a.Archived || a.Group.ID != g.ID || len(a.Group.Jobs) != len(g.Jobs) || a.DeletedAt == nil {
		t.Fatalf("archived group %.300s, want %s with %d jobs", r.body, g.ID, len(g.Jobs))
	}
	for _, j := range a.Group.Jobs {
		if len(j.Manifests) == 0 || len(a.Histories[j.ID]) < 2 {
			t.Errorf("archived job %s: %d manifests, history %v", j.ID, len(j.Manifests), a.Histories[j.ID])
		}
	}
}

// archiveObject reads the archive document of a group straight from the object store.
func archiveObject(t *testing.T, id string, deleted time.Time) (jobs.Archive, error) {
	t.Helper()
	c, err := objectstore.New(context.Background(), objectstore.Options{
		Endpoint: env.S3.Endpoint, Region: env.S3.Region, PathStyle: true, MaxAttempts: 1,
		AccessKeyID: env.S3.AccessKey, SecretAccessKey: env.S3.SecretKey,
	})
	if err != nil {
		t.Fatal(err)
	}
	var a jobs.Archive
	key := "archive/" + deleted.UTC().Format("2006/01") + "/" + id + ".json"
	raw, err := c.Get(context.Background(), objectstore.Ref{Bucket: servers.S3Bucket, Key: key}, 1<<30)
	if err != nil {
		return a, err
	}
	return a, json.Unmarshal(raw, &a)
}

// ttlOf is the PTTL of every Redis key of a group: -1 for a key held without expiry.
func ttlsOf(t *testing.T, prefix string, g model.JobGroup) map[string]time.Duration {
	t.Helper()
	rdb := redisClient(t)
	b := fmt.Sprintf("%s:{b:%02x}", prefix, model.Bucket(g.ID))
	keys := []string{b + ":group:" + g.ID, b + ":group:" + g.ID + ":jobs"}
	for _, j := range g.Jobs {
		keys = append(keys, b+":job:"+j.ID, b+":hist:"+j.ID)
	}
	out := map[string]time.Duration{}
	for _, k := range keys {
		out[k] = rdb.PTTL(context.Background(), k).Val()
	}
	return out
}

// TestArchiveDeletedGroup: a deleted group is written to the object store as one JSON
// document <prefix>/<yyyy>/<mm>/<id>.json and GET /groups/{id} reads it back, saying so.
func TestArchiveDeletedGroup(t *testing.T) {
	prefix := "a" + uuid.NewString()[:8]
	f := startFunctions(t, s3Env(map[string]string{"STORE_PREFIX": prefix}))
	r := f.rest(t, http.MethodPost, "/jobmanager/groups", guestbook(t), f.token)
	if r.status != http.StatusCreated {
		t.Fatalf("POST /groups: %d %s", r.status, r.body)
	}
	var g model.JobGroup
	r.decode(t, &g)
	in := &model.Incompliance{PolicyName: "cpu", Subject: model.Subject{Type: "app", AppName: "guestbook", AppInstance: g.ID,
		AppComponent: "frontend"}, Remediation: model.ScaleOut}
	if _, err := newStore(t, prefix).RecordIncompliance(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	if r := f.rest(t, http.MethodDelete, "/jobmanager/groups/"+g.ID, nil, f.token); r.status != http.StatusOK {
		t.Fatalf("DELETE /groups/%s: %d %s", g.ID, r.status, r.body)
	}
	readArchived(t, f, g)
	a, err := archiveObject(t, g.ID, *mustDeleted(t, f, g.ID))
	if err != nil {
		t.Fatalf("the archive document: %v", err)
	}
	if a.Group.ID != g.ID || len(a.Group.Jobs) != 2 || len(a.Histories) != 2 || a.ArchivedAt.IsZero() ||
		len(a.Incompliances) != 1 || a.Incompliances[0].ID != in.ID {
		t.Errorf("archive document %+v", a)
	}
	for k, ttl := range ttlsOf(t, prefix, g) {
		if ttl <= 0 {
			t.Errorf("key %s of an archived group: TTL %v, want the retention TTL", k, ttl)
		}
	}
	if r := f.rest(t, http.MethodGet, "/jobmanager/groups/"+uuid.NewString(), nil, f.token); r.status != http.StatusNotFound {
		t.Errorf("GET of a group never seen: %d %s", r.status, r.body)
	}
}

// mustDeleted reads the deletion time of an archived group through the REST API.
func mustDeleted(t *testing.T, f *functions, id string) *time.Time {
	t.Helper()
	var a archivedGroup
	f.rest(t, http.MethodGet, "/jobmanager/groups/"+id, nil, f.token).decode(t, &a)
	if a.DeletedAt == nil {
		t.Fatalf("group %s has no deleted_at", id)
	}
	return a.DeletedAt
}

// TestArchiveSurvivesObjectStoreDown: with the object store down the delete still succeeds,
// the group's keys lose their TTL (nothing can expire unarchived), and the next tick, with
// the store back, archives it.
func TestArchiveSurvivesObjectStoreDown(t *testing.T) {
	prefix := "d" + uuid.NewString()[:8]
	f := startFunctions(t, s3Env(map[string]string{"STORE_PREFIX": prefix}))
	env.S3.Kill()
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			_ = env.S3.Restart()
		}
	})
	g := createAndDelete(t, f)
	for k, ttl := range ttlsOf(t, prefix, g) {
		if ttl != -1 {
			t.Errorf("key %s of a group not yet archived: TTL %v, want none", k, ttl)
		}
	}
	if r := f.rest(t, http.MethodGet, "/jobmanager/groups/"+g.ID, nil, f.token); r.status != http.StatusServiceUnavailable {
		t.Errorf("GET of a deleted group with the archive down: %d %s", r.status, r.body)
	}
	// A tick while the store is still down archives nothing and loses nothing.
	if r := f.event(t, events.Ping, uuid.NewString(), "application/json", []byte(`{}`)); r.status != http.StatusOK {
		t.Fatalf("tick: %d %s", r.status, r.body)
	}
	for k, ttl := range ttlsOf(t, prefix, g) {
		if ttl != -1 {
			t.Errorf("after a failed tick, key %s: TTL %v, want none", k, ttl)
		}
	}
	if err := env.S3.Restart(); err != nil {
		t.Fatal(err)
	}
	restarted = true
	if r := f.event(t, events.Ping, uuid.NewString(), "application/json", []byte(`{}`)); r.status != http.StatusOK {
		t.Fatalf("tick: %d %s", r.status, r.body)
	}
	readArchived(t, f, g)
	for k, ttl := range ttlsOf(t, prefix, g) {
		if ttl <= 0 {
			t.Errorf("key %s once archived: TTL %v, want the retention TTL", k, ttl)
		}
	}
}

// TestArchiveRetiresStoppedGroups: a group stopped for longer than the retention TTL is
// deleted and archived by the tick; a live group is left alone.
func TestArchiveRetiresStoppedGroups(t *testing.T) {
	prefix := "r" + uuid.NewString()[:8]
	f := startFunctions(t, s3Env(map[string]string{"STORE_PREFIX": prefix, "RETENTION_TTL": "1s"}))
	var stopped, live model.JobGroup
	f.rest(t, http.MethodPost, "/jobmanager/groups", guestbook(t), f.token).decode(t, &stopped)
	f.rest(t, http.MethodPost, "/jobmanager/groups", guestbook(t), f.token).decode(t, &live)
	if r := f.rest(t, http.MethodPut, "/jobmanager/groups/undeploy/"+stopped.ID, nil, f.token); r.status != http.StatusOK {
		t.Fatalf("stop: %d %s", r.status, r.body)
	}
	time.Sleep(1200 * time.Millisecond)
	if r := f.event(t, events.Ping, uuid.NewString(), "application/json", []byte(`{}`)); r.status != http.StatusOK {
		t.Fatalf("tick: %d %s", r.status, r.body)
	}
	readArchived(t, f, stopped)
	if r := f.rest(t, http.MethodGet, "/jobmanager/groups/"+live.ID, nil, f.token); r.status != http.StatusOK || r.header.Get(jobs.HeaderArchived) != "" {
		t.Errorf("live group after the tick: %d %s", r.status, r.header.Get(jobs.HeaderArchived))
	}
}
