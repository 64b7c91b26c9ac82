package store

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"time"
	"unicode"

	"github.com/redis/go-redis/v9"
	"knative.dev/pkg/apis"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/telemetry"
)

// Store keeps job groups, jobs, their history and incompliances in Redis.
// It is safe for concurrent use and holds no state of its own besides the client (and a
// cache of offloaded manifests, which never change: their key is their SHA-256).
type Store struct {
	rdb   redis.UniversalClient
	opts  Options
	cache *blobCache
	// buckets are the 256 bucket prefixes, "<prefix>:{b:xy}".
	buckets *[256]string
	// emitter is the CloudEvents source of the events this store's changes announce.
	emitter string
	// trips sends the scripts, several per round trip when callers run at once.
	trips *roundTrips
}

// New returns a store on rdb (a single server, a Sentinel-managed master or a Redis Cluster).
func New(rdb redis.UniversalClient, opts Options) (*Store, error) {
	opts = opts.withDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	s := &Store{rdb: rdb, opts: opts, cache: &blobCache{}, buckets: new([256]string), emitter: DefaultEmitter,
		trips: newRoundTrips(rdb, opts.RoundTrips)}
	for i := range s.buckets {
		s.buckets[i] = bucketOf(opts.Prefix, i)
	}
	return s, nil
}

// DefaultEmitter is the source of the events of a store no function claimed (tests, tools).
const DefaultEmitter = "/ocm-jobs/store"

// As returns the store as one emitter sees it: the events its changes imply carry that
// CloudEvents source (e.g. /ocm-jobs/hubs/<hub>/executor). It shares everything else.
func (s *Store) As(emitter string) *Store {
	c := *s
	c.emitter = emitter
	return &c
}

// Emitter is the source of the events this store's changes announce.
func (s *Store) Emitter() string { return s.emitter }

// RoundTrips says how many round trips the store's scripts took so far and how many script
// calls they carried (more calls than round trips: callers at once shared them).
func (s *Store) RoundTrips() (trips, calls uint64) { return s.trips.stats() }

// Options returns the options in effect, defaults filled in.
func (s *Store) Options() Options { return s.opts }

// LoadScripts loads the store's scripts on every server (every master of a cluster), so the
// first call of each is one EVALSHA too. Optional: a script a server lacks is sent once.
func (s *Store) LoadScripts(ctx context.Context) error {
	load := func(ctx context.Context, c *redis.Client) error {
		for _, sc := range allScripts {
			if err := sc.Load(ctx, c).Err(); err != nil {
				return fmt.Errorf("loading store scripts: %w", err)
			}
		}
		return nil
	}
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, load)
	}
	for _, sc := range allScripts {
		if err := sc.Load(ctx, s.rdb).Err(); err != nil {
			return fmt.Errorf("loading store scripts: %w", err)
		}
	}
	return nil
}

// run runs a job script (the emitter and the caller's traceparent go last) and turns its answer into strings, or a guard
// failure into a GuardError. The outbox entries the script appended are handed to the
// context's Pending, if it has one, for the caller to publish at once.
func (s *Store) run(ctx context.Context, sc *redis.Script, op, kind, id string, keys []string, args ...any) ([]string, error) {
	return s.runScript(ctx, sc, op, kind, id, keys, append(args, s.emitter, telemetry.Traceparent(ctx))...)
}

// runScript runs a script with exactly args.
func (s *Store) runScript(ctx context.Context, sc *redis.Script, op, kind, id string, keys []string, args ...any) ([]string, error) {
	v, err := s.trips.run(ctx, sc, keys, args).Slice()
	if err != nil {
		return nil, fmt.Errorf("%s %s %s: %w", op, kind, id, err)
	}
	out := make([]string, len(v))
	for i, x := range v {
		switch x := x.(type) {
		case string:
			out[i] = x
		case int64:
			out[i] = strconv.FormatInt(x, 10)
		default:
			out[i] = fmt.Sprint(x)
		}
	}
	if len(out) == 4 && out[0] == "guard" {
		return nil, &GuardError{Op: op, Kind: kind, ID: id, Guard: out[1], Want: out[2], Got: out[3]}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s %s %s: empty answer from the script", op, kind, id)
	}
	// The entries are decoded only for a caller that publishes them (a Pending in ctx); the
	// others leave them to the relay.
	p := pendingFrom(ctx)
	out, entries := parseOutbox(out, outboxKey(s.bucket(id)), p != nil)
	if p != nil {
		p.add(entries)
	}
	return out, nil
}

// jsonString is s as a JSON string literal, for the history entries the scripts assemble.
func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// maxWhy caps the free text a history entry keeps.
const maxWhy = 1024

func clip(s string) string {
	if len(s) > maxWhy {
		return s[:maxWhy]
	}
	return s
}

// maxIDLen caps ids; they are part of keys.
const maxIDLen = 128

// checkID checks an id that becomes part of a Redis key or an object store key (a job, group
// or incompliance id): 1 to 128 of A-Z a-z 0-9 . _ -, not "." or "..". Nothing else may reach a
// key: no ':' (it would name another key, e.g. "<group>:jobs"), no '/' (an object store path),
// no braces (a hash tag), no whitespace or control characters.
func checkID(id, field string) *apis.FieldError {
	switch {
	case id == "":
		return apis.ErrMissingField(field)
	case len(id) > maxIDLen:
		return apis.ErrInvalidValue(abbreviate(id), field, fmt.Sprintf("an id is at most %d bytes", maxIDLen))
	case id == "." || id == "..":
		return apis.ErrInvalidValue(id, field, "an id is not . or ..")
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return apis.ErrInvalidValue(abbreviate(id), field, fmt.Sprintf("an id is made of letters, digits, '.', '_' and '-'; %q is not", r))
		}
	}
	return nil
}

// checkOwner checks an owner id (a hub's UID, a Nuvla deployment manager's id such as
// "nuvlabox/<uuid>"): it becomes part of index keys, so 1 to 128 printable characters without
// ':', braces or whitespace.
func checkOwner(owner, field string) *apis.FieldError {
	switch {
	case owner == "":
		return apis.ErrMissingField(field)
	case len(owner) > maxIDLen:
		return apis.ErrInvalidValue(abbreviate(owner), field, fmt.Sprintf("an owner id is at most %d bytes", maxIDLen))
	}
	for _, r := range owner {
		if r <= ' ' || r == 0x7f || r == ':' || r == '{' || r == '}' || !unicode.IsPrint(r) {
			return apis.ErrInvalidValue(abbreviate(owner), field, fmt.Sprintf("an owner id has no ':', braces, whitespace or control characters; %q is one", r))
		}
	}
	return nil
}

// abbreviate shortens a value quoted in an error.
func abbreviate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// manifestBytes checks the total size of a job's manifests against the limit.
func (s *Store) manifestBytes(ms []model.PlainManifest) *apis.FieldError {
	n := 0
	for _, m := range ms {
		n += len(m.YamlString)
	}
	if n > s.opts.MaxManifestBytes {
		return apis.ErrInvalidValue(fmt.Sprintf("%d bytes", n), "manifests",
			fmt.Sprintf("the manifests of a job may total at most %d bytes", s.opts.MaxManifestBytes))
	}
	return nil
}

// jobDoc is the part of a job that never changes after creation.
type jobDoc struct {
	ID                  string `json:"id"`
	JobGroupID          string `json:"job_group_id"`
	JobGroupName        string `json:"job_group_name"`
	JobGroupDescription string `json:"job_group_description"`
	Namespace           string `json:"namespace,omitempty"`
	Component           string `json:"component,omitempty"`
}

// groupDoc is a group without its jobs.
type groupDoc struct {
	ID             string `json:"id"`
	AppName        string `json:"appName"`
	AppDescription string `json:"appDescription"`
}

func marshal(v any) (string, error) {
	if v == nil {
		return "", nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// CreateGroup stores a group and all its jobs in one atomic step, or nothing. It fills in
// what the store decides: missing ids (a job's id shares the group's bucket), each job's group
// fields, type CreateDeployment and state Created when unset, and the timestamps. A job may
// carry an initial resource (e.g. a condition saying it awaits a target). A group or job id
// that exists already is ErrExists; bad input is an *InvalidError naming every problem. by
// says who asked, for the history.
func (s *Store) CreateGroup(ctx context.Context, g *model.JobGroup, by string) error {
	if g.ID == "" {
		g.ID = model.NewID()
	}
	doc, err := marshal(groupDoc{ID: g.ID, AppName: g.AppName, AppDescription: g.AppDescription})
	if err != nil {
		return fmt.Errorf("create group %s: %w", g.ID, err)
	}
	return s.writeJobs(ctx, "create", g, doc, by, nil)
}

// AddJobs adds new Created jobs to an existing group in one atomic step, or nothing, filling
// them in as CreateGroup does. A deleted or unknown group is ErrNotFound; a job id that exists
// already is ErrExists.
func (s *Store) AddJobs(ctx context.Context, groupID string, jobs []model.Job, by string) error {
	return s.addJobs(ctx, groupID, jobs, by, nil)
}

// addJobs is AddJobs; the jobs that held holds (rollout.go) are stored held.
func (s *Store) addJobs(ctx context.Context, groupID string, jobs []model.Job, by string, held *model.Rollout) error {
	const op = "add jobs to"
	if fe := checkID(groupID, "id"); fe != nil {
		return invalid(op+" group", fe)
	}
	// The group's name and description never change, so reading them first is safe; the
	// script checks again that the group exists and is not deleted.
	v, err := s.rdb.HMGet(ctx, s.groupKey(groupID), "doc", "deleted_at").Result()
	if err != nil {
		return fmt.Errorf("%s group %s: %w", op, groupID, err)
	}
	doc, _ := v[0].(string)
	if doc == "" || v[1] != nil {
		return &GuardError{Op: op, Kind: "group", ID: groupID, Guard: GuardExists, Want: "group", Got: "none"}
	}
	g, err := decodeGroup(doc)
	if err != nil {
		return err
	}
	g.Jobs = jobs // shares the caller's slice, so the caller sees the ids and times filled in
	g.Rollout = held
	return s.writeJobs(ctx, op, g, "", by, nil)
}

// writeJobs validates and completes g's jobs and runs the create script: a new group when
// doc is set, new jobs of an existing group when it is empty. A new group with a descriptor
// is registered with the Policy Manager too.
func (s *Store) writeJobs(ctx context.Context, op string, g *model.JobGroup, doc, by string, descriptor *string) error {
	errs := checkID(g.ID, "id")
	seen := map[string]bool{}
	for i := range g.Jobs {
		j := &g.Jobs[i]
		if j.ID == "" {
			j.ID = model.NewJobID(g.ID)
		}
		var je *apis.FieldError
		if fe := checkID(j.ID, "id"); fe != nil {
			je = je.Also(fe)
		} else if model.Bucket(j.ID) != model.Bucket(g.ID) {
			je = je.Also(apis.ErrInvalidValue(j.ID, "id", "a job id must start with the same byte as its group's id (model.NewJobID makes one)"))
		}
		if seen[j.ID] {
			je = je.Also(apis.ErrInvalidValue(j.ID, "id", "two jobs have this id"))
		}
		seen[j.ID] = true
		if j.JobGroupID != "" && j.JobGroupID != g.ID {
			je = je.Also(apis.ErrInvalidValue(j.JobGroupID, "job_group_id", "a job belongs to the group it is created with"))
		}
		j.JobGroupID, j.JobGroupName, j.JobGroupDescription = g.ID, g.AppName, g.AppDescription
		if j.Type == 0 {
			j.Type = model.CreateDeployment
		}
		if j.State == 0 {
			j.State = model.Created
		}
		if j.Type.Valid() && j.Type != model.CreateDeployment {
			je = je.Also(apis.ErrInvalidValue(int(j.Type), "type", "a new job is a CreateDeployment (5)"))
		}
		if j.State.Valid() && j.State != model.Created {
			je = je.Also(apis.ErrInvalidValue(int(j.State), "state", "a new job is Created (1)"))
		}
		if j.OwnerID != "" {
			je = je.Also(apis.ErrDisallowedFields("owner_id"))
		}
		if j.Fence != 0 {
			je = je.Also(apis.ErrDisallowedFields("fence"))
		}
		if j.Resource != nil && j.Resource.JobID == "" {
			j.Resource.JobID = j.ID
		}
		if j.Resource != nil && j.Resource.JobID != j.ID {
			je = je.Also(apis.ErrInvalidValue(j.Resource.JobID, "resource.job_id", "the resource of job "+j.ID))
		}
		je = je.Also(s.manifestBytes(j.Manifests))
		errs = errs.Also(je.ViaFieldIndex("jobs", i))
	}
	errs = errs.Also(g.Validate())
	if err := invalid(op+" group", errs); err != nil {
		return err
	}

	args := []any{s.bucket(g.ID), g.ID, doc, s.opts.HistoryCap, jsonString(by), jsonString("created"), len(g.Jobs)}
	for i := range g.Jobs {
		j := &g.Jobs[i]
		d, err := marshal(jobDoc{ID: j.ID, JobGroupID: j.JobGroupID, JobGroupName: j.JobGroupName,
			JobGroupDescription: j.JobGroupDescription, Namespace: j.Namespace, Component: j.Component})
		if err != nil {
			return fmt.Errorf("%s group %s: %w", op, g.ID, err)
		}
		ms, err := s.manifestsField(ctx, manifestsOrEmpty(j.Manifests))
		if err != nil {
			return fmt.Errorf("%s group %s: %w", op, g.ID, err)
		}
		orch, targets, resource := j.Orchestrator, "", ""
		if j.Targets != nil {
			if targets, err = marshal(j.Targets); err != nil {
				return fmt.Errorf("%s group %s: %w", op, g.ID, err)
			}
			orch = j.Targets.Orchestrator
			j.Orchestrator = orch
		}
		if j.Resource != nil {
			if resource, err = marshal(j.Resource); err != nil {
				return fmt.Errorf("%s group %s: %w", op, g.ID, err)
			}
		}
		args = append(args, j.ID, d, int(j.Type), string(j.SubType), string(orch), targets, ms, resource)
	}
	if descriptor != nil {
		args = append(args, "1", *descriptor)
	} else {
		args = append(args, "", "")
	}
	args, rerr := rolloutArgs(args, g.Rollout, doc != "")
	if rerr != nil {
		return fmt.Errorf("%s group %s: %w", op, g.ID, rerr)
	}
	out, err := s.run(ctx, createGroupScript, op, "group", g.ID,
		[]string{s.groupKey(g.ID), s.groupJobsKey(g.ID)}, args...)
	if err != nil {
		return err
	}
	at := msTime(out[1])
	for i := range g.Jobs {
		g.Jobs[i].CreatedAt, g.Jobs[i].UpdatedAt = at, at
	}
	return nil
}

// Ping checks that Redis answers, for health checks.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	return nil
}

func manifestsOrEmpty(ms []model.PlainManifest) []model.PlainManifest {
	if ms == nil {
		return []model.PlainManifest{}
	}
	return ms
}

// msTime reads the millisecond timestamps the scripts write.
func msTime(s string) time.Time {
	ms, err := strconv.ParseInt(s, 10, 64)
	if err != nil || ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// decodeJob assembles a job from its hash; nil when the hash is empty or the job deleted.
func decodeJob(h map[string]string) (*model.Job, error) {
	if len(h) == 0 || h["deleted_at"] != "" || h["doc"] == "" {
		return nil, nil
	}
	var d jobDoc
	if err := json.Unmarshal([]byte(h["doc"]), &d); err != nil {
		return nil, fmt.Errorf("decoding job: %w", err)
	}
	j := &model.Job{
		ID: d.ID, JobGroupID: d.JobGroupID, JobGroupName: d.JobGroupName, JobGroupDescription: d.JobGroupDescription,
		Namespace: d.Namespace, Component: d.Component,
		OwnerID: h["owner"], SubType: model.SubType(h["sub_type"]), Orchestrator: model.Orchestrator(h["orch"]),
		LeaseHolder: h["lease_holder"], LeaseUntil: msTime(h["lease_until"]),
		CreatedAt: msTime(h["created_at"]), UpdatedAt: msTime(h["updated_at"]),
	}
	st, _ := strconv.Atoi(h["state"])
	ty, _ := strconv.Atoi(h["type"])
	j.State, j.Type = model.JobState(st), model.JobType(ty)
	j.Fence, _ = strconv.ParseUint(h["fence"], 10, 64)
	j.Applied, _ = strconv.ParseUint(h["applied"], 10, 64)
	j.Remediated, _ = strconv.ParseUint(h["remediated"], 10, 64)
	for field, into := range map[string]any{"manifests": &j.Manifests, "targets": &j.Targets,
		"resource": &j.Resource, "remediation": &j.Remediation, "move": &j.Move} {
		if v := h[field]; v != "" {
			if err := json.Unmarshal([]byte(v), into); err != nil {
				return nil, fmt.Errorf("decoding %s of job %s: %w", field, d.ID, err)
			}
		}
	}
	return j, nil
}

// GetJob reads one job.
func (s *Store) GetJob(ctx context.Context, id string) (*model.Job, error) {
	if fe := checkID(id, "id"); fe != nil {
		return nil, invalid("get job", fe)
	}
	h, err := s.rdb.HGetAll(ctx, s.jobKey(id)).Result()
	if err != nil {
		return nil, fmt.Errorf("get job %s: %w", id, err)
	}
	js, err := s.decodeJobs(ctx, []map[string]string{h}, false)
	if err != nil {
		return nil, err
	}
	if len(js) == 0 {
		return nil, &GuardError{Op: "get", Kind: "job", ID: id, Guard: GuardExists, Want: "job", Got: "none"}
	}
	return js[0], nil
}

// GetJobStatus reads a job without its manifests and remediation (as JobStatusOfOwner does):
// what a caller needs to decide whether to act on a job, at a fraction of the bytes.
func (s *Store) GetJobStatus(ctx context.Context, id string) (*model.Job, error) {
	if fe := checkID(id, "id"); fe != nil {
		return nil, invalid("get job", fe)
	}
	js, err := s.fetchJobStatus(ctx, []string{id})
	if err != nil {
		return nil, err
	}
	if len(js) == 0 {
		return nil, &GuardError{Op: "get", Kind: "job", ID: id, Guard: GuardExists, Want: "job", Got: "none"}
	}
	return &js[0], nil
}

// fetchJobs reads jobs by id in one pipeline, skipping those deleted meanwhile, ordered by
// creation time then id.
func (s *Store) fetchJobs(ctx context.Context, ids []string) ([]model.Job, error) {
	if len(ids) == 0 {
		return []model.Job{}, nil
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HGetAll(ctx, s.jobKey(id))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("reading %d jobs: %w", len(ids), err)
	}
	hs := make([]map[string]string, len(cmds))
	for i, c := range cmds {
		hs[i] = c.Val()
	}
	decoded, err := s.decodeJobs(ctx, hs, false)
	if err != nil {
		return nil, err
	}
	jobs := make([]model.Job, 0, len(decoded))
	for _, j := range decoded {
		jobs = append(jobs, *j)
	}
	sort.Slice(jobs, func(a, b int) bool {
		if !jobs[a].CreatedAt.Equal(jobs[b].CreatedAt) {
			return jobs[a].CreatedAt.Before(jobs[b].CreatedAt)
		}
		return jobs[a].ID < jobs[b].ID
	})
	return jobs, nil
}

// statusFields are the job fields a status reader needs: everything but the manifests and
// the remediation, which make most of a job's bytes.
var statusFields = []string{"doc", "state", "type", "sub_type", "owner", "fence", "orch", "targets", "resource",
	"lease_holder", "lease_until", "created_at", "updated_at", "deleted_at", "applied", "remediated", "move"}

// fetchJobStatus reads jobs by id as fetchJobs does, without their manifests and remediation.
func (s *Store) fetchJobStatus(ctx context.Context, ids []string) ([]model.Job, error) {
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HMGet(ctx, s.jobKey(id), statusFields...)
	}
	if len(ids) > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, fmt.Errorf("reading %d jobs: %w", len(ids), err)
		}
	}
	jobs := make([]model.Job, 0, len(ids))
	h := make(map[string]string, len(statusFields))
	for _, c := range cmds {
		clear(h)
		for i, v := range c.Val() {
			if str, ok := v.(string); ok {
				h[statusFields[i]] = str
			}
		}
		j, err := decodeJob(h)
		if err != nil {
			return nil, err
		}
		if j != nil {
			jobs = append(jobs, *j)
		}
	}
	return jobs, nil
}

// indexMembers reads the named set index of every bucket in one pipeline (per cluster node)
// and returns the union.
func (s *Store) indexMembers(ctx context.Context, names ...string) ([]string, error) {
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.StringSliceCmd, 0, len(s.buckets)*len(names))
	for _, b := range s.buckets {
		for _, n := range names {
			cmds = append(cmds, pipe.SMembers(ctx, indexKey(b, n)))
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("reading index %v: %w", names, err)
	}
	return union(cmds), nil
}

func union(cmds []*redis.StringSliceCmd) []string {
	seen := map[string]bool{}
	var ids []string
	for _, c := range cmds {
		for _, id := range c.Val() {
			if !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
	}
	return ids
}

// JobsInState lists the jobs in one state.
func (s *Store) JobsInState(ctx context.Context, st model.JobState) ([]model.Job, error) {
	if !st.Valid() {
		return nil, invalid("list jobs", apis.ErrInvalidValue(int(st), "state", "want 1, 2, 3 or 4"))
	}
	ids, err := s.indexMembers(ctx, "state:"+strconv.Itoa(int(st)))
	if err != nil {
		return nil, err
	}
	return s.fetchJobs(ctx, ids)
}

// ListJobs lists every job of every group that is not deleted.
func (s *Store) ListJobs(ctx context.Context) ([]model.Job, error) {
	ids, err := s.indexMembers(ctx, "state:1", "state:2", "state:3", "state:4")
	if err != nil {
		return nil, err
	}
	return s.fetchJobs(ctx, ids)
}

// JobsOfOwner lists the jobs a hub owns.
func (s *Store) JobsOfOwner(ctx context.Context, owner string) ([]model.Job, error) {
	if fe := checkOwner(owner, "owner_id"); fe != nil {
		return nil, invalid("list jobs", fe)
	}
	ids, err := s.indexMembers(ctx, "owner:"+owner)
	if err != nil {
		return nil, err
	}
	return s.fetchJobs(ctx, ids)
}

// JobStatusOfOwner lists the jobs a hub owns as JobsOfOwner does, without their manifests
// and remediation (empty), in no particular order: what status sync needs of every job on
// every tick, at a fraction of the bytes.
func (s *Store) JobStatusOfOwner(ctx context.Context, owner string) ([]model.Job, error) {
	if fe := checkOwner(owner, "owner_id"); fe != nil {
		return nil, invalid("list jobs", fe)
	}
	ids, err := s.indexMembers(ctx, "owner:"+owner)
	if err != nil {
		return nil, err
	}
	return s.fetchJobStatus(ctx, ids)
}

// ProgressingJobStatusOfOwner lists the hub's jobs in Progressing as JobStatusOfOwner does
// (no manifests, no remediation): what a sweep looks at for executions that died. Each bucket
// answers the intersection of its Progressing index with the hub's (SINTER walks the smaller
// set, the Progressing jobs), so the hub's Finished jobs cost the query nothing.
func (s *Store) ProgressingJobStatusOfOwner(ctx context.Context, owner string) ([]model.Job, error) {
	if fe := checkOwner(owner, "owner_id"); fe != nil {
		return nil, invalid("list jobs", fe)
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.StringSliceCmd, 0, len(s.buckets))
	for _, b := range s.buckets {
		cmds = append(cmds, pipe.SInter(ctx, indexKey(b, "state:"+strconv.Itoa(int(model.Progressing))), indexKey(b, "owner:"+owner)))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("reading the Progressing jobs of %s: %w", owner, err)
	}
	return s.fetchJobStatus(ctx, union(cmds))
}

// ExecutableJobs lists what a hub may promote for an orchestrator, by the ICOS rules: Created
// jobs with a target that have no owner or are the hub's own, and CreateDeployment jobs in
// Progressing or Degraded whose owner's lease lapsed more than the takeover TTL ago (by this
// process's clock; Promote decides by the Redis clock).
func (s *Store) ExecutableJobs(ctx context.Context, orch model.Orchestrator, owner string) ([]model.Job, error) {
	ids, err := s.executableIDs(ctx, orch, owner)
	if err != nil {
		return nil, err
	}
	return s.fetchJobs(ctx, ids)
}

// ExecutableJobStatus is ExecutableJobs without the manifests and remediation: what a sweep
// needs to pick the jobs it then promotes (and reads whole).
func (s *Store) ExecutableJobStatus(ctx context.Context, orch model.Orchestrator, owner string) ([]model.Job, error) {
	ids, err := s.executableIDs(ctx, orch, owner)
	if err != nil {
		return nil, err
	}
	return s.fetchJobStatus(ctx, ids)
}

// executableIDs reads the executable and takeover indexes of every bucket in one pipeline.
func (s *Store) executableIDs(ctx context.Context, orch model.Orchestrator, owner string) ([]string, error) {
	errs := checkOwner(owner, "owner_id")
	if !orch.Valid() {
		errs = errs.Also(apis.ErrInvalidValue(string(orch), "orchestrator", `want "ocm" or "nuvla"`))
	}
	if err := invalid("list executable jobs", errs); err != nil {
		return nil, err
	}
	lapsed := strconv.FormatInt(time.Now().Add(-s.opts.TakeoverTTL).UnixMilli(), 10)
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.StringSliceCmd, 0, 3*len(s.buckets))
	for _, b := range s.buckets {
		cmds = append(cmds,
			pipe.SMembers(ctx, indexKey(b, "ready:"+string(orch)+":")),
			pipe.SMembers(ctx, indexKey(b, "ready:"+string(orch)+":"+owner)),
			pipe.ZRangeByScore(ctx, indexKey(b, "lease:"+string(orch)), &redis.ZRangeBy{Min: "-inf", Max: lapsed}))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("reading executable jobs: %w", err)
	}
	return union(cmds), nil
}

// GetGroup reads a group with its jobs.
func (s *Store) GetGroup(ctx context.Context, id string) (*model.JobGroup, error) {
	if fe := checkID(id, "id"); fe != nil {
		return nil, invalid("get group", fe)
	}
	pipe := s.rdb.Pipeline()
	gc := pipe.HMGet(ctx, s.groupKey(id), "doc", "deleted_at", "rollout")
	jc := pipe.SMembers(ctx, s.groupJobsKey(id))
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("get group %s: %w", id, err)
	}
	v := gc.Val()
	doc, _ := v[0].(string)
	if doc == "" || v[1] != nil {
		return nil, &GuardError{Op: "get", Kind: "group", ID: id, Guard: GuardExists, Want: "group", Got: "none"}
	}
	g, err := decodeGroup(doc)
	if err != nil {
		return nil, err
	}
	if raw, _ := v[2].(string); raw != "" {
		if g.Rollout, err = decodeRollout(raw); err != nil {
			return nil, err
		}
	}
	if g.Jobs, err = s.fetchJobs(ctx, jc.Val()); err != nil {
		return nil, err
	}
	return g, nil
}

func decodeGroup(doc string) (*model.JobGroup, error) {
	var d groupDoc
	if err := json.Unmarshal([]byte(doc), &d); err != nil {
		return nil, fmt.Errorf("decoding group: %w", err)
	}
	return &model.JobGroup{ID: d.ID, AppName: d.AppName, AppDescription: d.AppDescription}, nil
}

// GroupJobs lists the jobs of a group.
func (s *Store) GroupJobs(ctx context.Context, id string) ([]model.Job, error) {
	g, err := s.GetGroup(ctx, id)
	if err != nil {
		return nil, err
	}
	return g.Jobs, nil
}

// ListGroups lists every group that is not deleted, with its jobs, in three round trips
// (the bucket indexes, the groups, their jobs) whatever their number.
func (s *Store) ListGroups(ctx context.Context) ([]model.JobGroup, error) {
	groupIDs, err := s.indexMembers(ctx, "groups")
	if err != nil {
		return nil, err
	}
	pipe := s.rdb.Pipeline()
	docs := make([]*redis.SliceCmd, len(groupIDs))
	members := make([]*redis.StringSliceCmd, len(groupIDs))
	for i, id := range groupIDs {
		docs[i] = pipe.HMGet(ctx, s.groupKey(id), "doc", "deleted_at")
		members[i] = pipe.SMembers(ctx, s.groupJobsKey(id))
	}
	if len(groupIDs) > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, fmt.Errorf("reading %d groups: %w", len(groupIDs), err)
		}
	}
	groups := make([]model.JobGroup, 0, len(groupIDs))
	index := map[string]int{}
	var jobIDs []string
	for i := range groupIDs {
		v := docs[i].Val()
		doc, _ := v[0].(string)
		if doc == "" || v[1] != nil {
			continue // deleted since the index was read
		}
		g, err := decodeGroup(doc)
		if err != nil {
			return nil, err
		}
		g.Jobs = []model.Job{}
		index[g.ID] = len(groups)
		groups = append(groups, *g)
		jobIDs = append(jobIDs, members[i].Val()...)
	}
	jobs, err := s.fetchJobs(ctx, jobIDs)
	if err != nil {
		return nil, err
	}
	for _, j := range jobs {
		if i, ok := index[j.JobGroupID]; ok {
			groups[i].Jobs = append(groups[i].Jobs, j)
		}
	}
	sort.Slice(groups, func(a, b int) bool { return groups[a].ID < groups[b].ID })
	return groups, nil
}

// DeleteGroup deletes a group when every job may be deleted (never promoted, or a finished
// DeleteDeployment); otherwise it is a *BlockedError listing the others, and nothing changes.
// The group's keys then expire after the retention TTL; deleting it again answers nil.
func (s *Store) DeleteGroup(ctx context.Context, id, by string) error {
	if fe := checkID(id, "id"); fe != nil {
		return invalid("delete group", fe)
	}
	out, err := s.run(ctx, deleteGroupScript, "delete", "group", id,
		[]string{s.groupKey(id), s.groupJobsKey(id)},
		s.bucket(id), id, s.opts.RetentionTTL.Milliseconds(), s.opts.HistoryCap, jsonString(by), jsonString("group deleted"))
	if err != nil {
		return err
	}
	if out[0] == "blocked" {
		be := &BlockedError{Group: id}
		for i := 1; i+2 < len(out); i += 3 {
			st, _ := strconv.Atoi(out[i+1])
			ty, _ := strconv.Atoi(out[i+2])
			be.Jobs = append(be.Jobs, BlockedJob{ID: out[i], State: model.JobState(st), Type: model.JobType(ty)})
		}
		sort.Slice(be.Jobs, func(a, b int) bool { return be.Jobs[a].ID < be.Jobs[b].ID })
		return be
	}
	return nil
}

// History reads a job's history, newest first. It stays readable after the job's group is
// deleted, until the retention TTL passes.
func (s *Store) History(ctx context.Context, jobID string) ([]model.HistoryEntry, error) {
	if fe := checkID(jobID, "id"); fe != nil {
		return nil, invalid("get history", fe)
	}
	raw, err := s.rdb.LRange(ctx, s.histKey(jobID), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("get history of job %s: %w", jobID, err)
	}
	if len(raw) == 0 {
		return nil, &GuardError{Op: "get history", Kind: "job", ID: jobID, Guard: GuardExists, Want: "job", Got: "none"}
	}
	return decodeHistory(jobID, raw)
}

// decodeHistory decodes the entries of a job's history list, as stored (newest first).
func decodeHistory(jobID string, raw []string) ([]model.HistoryEntry, error) {
	out := make([]model.HistoryEntry, 0, len(raw))
	for _, r := range raw {
		var e struct {
			At     int64          `json:"at"`
			By     string         `json:"by"`
			Action string         `json:"action"`
			From   model.JobState `json:"from"`
			To     model.JobState `json:"to"`
			Why    string         `json:"why"`
			Fence  uint64         `json:"fence"`
		}
		if err := json.Unmarshal([]byte(r), &e); err != nil {
			return nil, fmt.Errorf("decoding history of job %s: %w", jobID, err)
		}
		out = append(out, model.HistoryEntry{At: time.UnixMilli(e.At).UTC(), By: e.By, Action: e.Action,
			From: e.From, To: e.To, Why: e.Why, Fence: e.Fence})
	}
	return out, nil
}

// Now is the Redis clock, the one every job timestamp and lease is written with.
func (s *Store) Now(ctx context.Context) (time.Time, error) {
	t, err := s.rdb.Time(ctx).Result()
	if err != nil {
		return time.Time{}, fmt.Errorf("reading the Redis clock: %w", err)
	}
	return t, nil
}
