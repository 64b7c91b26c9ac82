package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"k8s.io/client-go/util/retry"
	"knative.dev/pkg/apis"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
)

// Claim is an owner's right to write to one job: who owns it, which execution holds its
// lease, and the fencing token every owner write carries. Promote hands one out; status sync,
// which writes for the owner without executing, builds one from the job it read (ClaimOf).
type Claim struct {
	JobID string
	// Owner is the hub that owns the job.
	Owner string
	// Holder is the execution that holds the lease (unique per execution, not per hub).
	Holder string
	// Fence is the fencing token: it grew by one on the promote that made this claim.
	Fence uint64
	// LeaseUntil is when the lease lapses unless renewed.
	LeaseUntil time.Time
	// From is the state the job was promoted from.
	From model.JobState
	// TakenOverFrom is the previous owner when the promote was a takeover.
	TakenOverFrom string
}

// ClaimOf is the claim of a job's current owner, as read.
func ClaimOf(j *model.Job) Claim {
	return Claim{JobID: j.ID, Owner: j.OwnerID, Holder: j.LeaseHolder, Fence: j.Fence, LeaseUntil: j.LeaseUntil}
}

func (c Claim) check(op string) error {
	var errs *apis.FieldError
	errs = errs.Also(checkID(c.JobID, "job_id"), checkOwner(c.Owner, "owner_id"))
	if c.Fence == 0 {
		errs = errs.Also(apis.ErrMissingField("fence"))
	}
	return invalid(op, errs)
}

// Promote makes owner (the hub) the owner of a job for one execution (holder), by the ICOS
// rules made atomic: a Created job with a target and no owner or this owner → Progressing,
// unless another execution holds a live lease on it; or, a takeover, a CreateDeployment job
// in Progressing whose lease lapsed more than the takeover TTL ago. A Finished or Degraded job
// is never promoted (ErrWrongState): only a new order (Reopen) acts on it. The promote is
// announced (job.progressing) through the outbox. The claim's
// fence is one more than the job's last one, so every write of an earlier owner or execution
// is refused from now on. The lease lasts the store's LeaseTTL.
func (s *Store) Promote(ctx context.Context, jobID, owner, holder string) (Claim, error) {
	c, _, err := s.promote(ctx, jobID, owner, holder, false, nil)
	return c, err
}

// PromoteJob is Promote that also returns the promoted job, whole (as GetJob reads it), read
// by the same script: an execution that follows needs no read of its own.
//
// With expect, it promotes only a Created job whose stored target is exactly expect
// (ErrWrongState, ErrNoTarget otherwise, and nothing written): the caller decided from a
// target it saw elsewhere (the job.created event) that the job is its to execute, and needs no
// read of the job first.
func (s *Store) PromoteJob(ctx context.Context, jobID, owner, holder string, expect *model.Target) (Claim, *model.Job, error) {
	return s.promote(ctx, jobID, owner, holder, true, expect)
}

func (s *Store) promote(ctx context.Context, jobID, owner, holder string, withJob bool, expect *model.Target) (Claim, *model.Job, error) {
	const op = "promote"
	errs := checkID(jobID, "job_id").Also(checkOwner(owner, "owner_id"), checkOwner(holder, "holder"))
	if err := invalid(op, errs); err != nil {
		return Claim{}, nil, err
	}
	var targets, orch string
	if expect != nil {
		var err error
		if targets, err = marshal(expect); err != nil {
			return Claim{}, nil, invalid(op, apis.ErrInvalidValue(err.Error(), "targets"))
		}
		orch = string(expect.Orchestrator)
	}
	why := "execution " + holder
	out, err := s.run(ctx, promoteScript, op, "job", jobID, []string{s.jobKey(jobID)},
		s.bucket(jobID), jobID, owner, holder, s.opts.LeaseTTL.Milliseconds(), s.opts.TakeoverTTL.Milliseconds(),
		s.opts.HistoryCap, jsonString(owner), jsonString(why), flag(withJob), targets, orch)
	if err != nil {
		return Claim{}, nil, err
	}
	fence, _ := strconv.ParseUint(out[1], 10, 64)
	from, _ := strconv.Atoi(out[4])
	c := Claim{JobID: jobID, Owner: owner, Holder: holder, Fence: fence, LeaseUntil: msTime(out[2]), From: model.JobState(from)}
	if c.From != model.Created {
		c.TakenOverFrom = out[3]
	}
	if !withJob || len(out) < 7 || out[5] != "#job" {
		return c, nil, nil
	}
	n, _ := strconv.Atoi(out[6])
	if 7+n > len(out) {
		return c, nil, fmt.Errorf("%s job %s: a short answer from the script", op, jobID)
	}
	h := make(map[string]string, n/2)
	for i := 7; i+1 < 7+n; i += 2 {
		h[out[i]] = out[i+1]
	}
	js, err := s.decodeJobs(ctx, []map[string]string{h}, false)
	if err != nil || len(js) == 0 {
		return c, nil, err
	}
	return c, js[0], nil
}

// RenewLease extends the claim's lease by the LeaseTTL. A lease that lapsed is taken again as
// long as nobody took the job over (the fence still matches) and no other execution leased
// it meanwhile. The job must be Progressing.
func (s *Store) RenewLease(ctx context.Context, c Claim) (Claim, error) {
	const op = "renew lease"
	if err := c.check(op); err != nil {
		return c, err
	}
	if err := invalid(op, checkOwner(c.Holder, "holder")); err != nil {
		return c, err
	}
	out, err := s.run(ctx, renewScript, op, "job", c.JobID, []string{s.jobKey(c.JobID)},
		s.bucket(c.JobID), c.JobID, c.Owner, c.Fence, c.Holder, s.opts.LeaseTTL.Milliseconds())
	if err != nil {
		return c, err
	}
	c.LeaseUntil = msTime(out[1])
	return c, nil
}

// ReleaseLease ends the claim's lease now: the execution is over. The owner keeps the job;
// the takeover TTL counts from now. Releasing a lapsed lease changes nothing.
func (s *Store) ReleaseLease(ctx context.Context, c Claim) error {
	return s.release(ctx, c, false)
}

// MarkApplied ends the claim's lease as ReleaseLease does and records that this execution did
// on the hub what the job asked (its ManifestWork applied, or deleted): a sweep then leaves
// the job to status sync instead of resuming an execution it thinks died half-way.
func (s *Store) MarkApplied(ctx context.Context, c Claim) error {
	return s.release(ctx, c, true)
}

func (s *Store) release(ctx context.Context, c Claim, applied bool) error {
	const op = "release lease"
	if err := c.check(op); err != nil {
		return err
	}
	if err := invalid(op, checkOwner(c.Holder, "holder")); err != nil {
		return err
	}
	_, err := s.run(ctx, releaseScript, op, "job", c.JobID, []string{s.jobKey(c.JobID)},
		s.bucket(c.JobID), c.JobID, c.Owner, c.Fence, c.Holder, flag(applied))
	return err
}

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// Change is what an owner changes on its job in one atomic step: its state, its resource, or
// both.
type Change struct {
	// To is the new state (Progressing, Finished or Degraded); 0 keeps the state.
	To model.JobState
	// Why is recorded in the history with a change of state.
	Why string
	// Resource, when set, replaces the job's resource.
	Resource *model.Resource
	// Read is the resource Resource was derived from (nil: the job had none). With
	// IfUnchanged the write happens only while the stored resource is still Read — a
	// concurrent write of another writer is never lost — else nothing is written and the
	// answer is ErrResourceChanged: read again and derive again.
	Read        *model.Resource
	IfUnchanged bool
}

// Changed says what a Change changed.
type Changed struct {
	State, Resource bool
}

// transition is a change of state an owner makes: from which states, and whether the
// execution's lease ends with it.
type transition struct {
	op      string
	from    string
	release bool
}

var transitions = map[model.JobState]transition{
	model.Progressing: {op: "progress", from: ",4,"},
	model.Finished:    {op: "finish", from: ",2,4,", release: true},
	model.Degraded:    {op: "degrade", from: ",2,3,", release: true},
}

// Apply makes a Change as the claim's owner: one round trip, guarded by owner and fence; a
// change of state is recorded in the history and announced through the outbox in the same
// step. Moving a job to the state it is in changes nothing; writing the resource it has
// changes nothing either. Finish and Degrade end the execution's lease.
func (s *Store) Apply(ctx context.Context, c Claim, ch Change) (Changed, error) {
	op := "write resource status"
	t, moves := transitions[ch.To]
	if ch.To != 0 {
		if !moves {
			return Changed{}, invalid("change", apis.ErrInvalidValue(int(ch.To), "state", "an owner moves a job to 2 (Progressing), 3 (Finished) or 4 (Degraded)"))
		}
		op = t.op
	}
	if err := c.check(op); err != nil {
		return Changed{}, err
	}
	res, read := "", ""
	if ch.Resource != nil {
		r := *ch.Resource // filled in (job id) without touching the caller's
		var err error
		if res, err = s.resourceDoc(c, &r); err != nil {
			return Changed{}, err
		}
		if ch.Read != nil {
			if read, err = marshal(*ch.Read); err != nil {
				return Changed{}, err
			}
		}
	}
	to := ""
	if ch.To != 0 {
		to = strconv.Itoa(int(ch.To))
	}
	out, err := s.run(ctx, changeScript, op, "job", c.JobID, []string{s.jobKey(c.JobID)},
		s.bucket(c.JobID), c.JobID, c.Owner, c.Fence, to, t.from, flag(t.release), s.opts.HistoryCap,
		jsonString(c.Owner), jsonString(clip(ch.Why)), t.op, res, flag(ch.IfUnchanged), read)
	if err != nil {
		return Changed{}, err
	}
	return Changed{State: out[1] == "1", Resource: out[2] == "1"}, nil
}

// Progress moves an owned Degraded job back to Progressing (its workload recovered). It
// reports false, and writes nothing, when the job is Progressing.
func (s *Store) Progress(ctx context.Context, c Claim, why string) (bool, error) {
	ch, err := s.Apply(ctx, c, Change{To: model.Progressing, Why: why})
	return ch.State, err
}

// Finish moves an owned Progressing or Degraded job to Finished and ends its lease. It
// reports false, and writes nothing, when the job is Finished already.
func (s *Store) Finish(ctx context.Context, c Claim, why string) (bool, error) {
	ch, err := s.Apply(ctx, c, Change{To: model.Finished, Why: why})
	return ch.State, err
}

// Degrade moves an owned Progressing or Finished job to Degraded and ends its lease. It
// reports false, and writes nothing, when the job is Degraded already.
func (s *Store) Degrade(ctx context.Context, c Claim, why string) (bool, error) {
	ch, err := s.Apply(ctx, c, Change{To: model.Degraded, Why: why})
	return ch.State, err
}

// Reopen is a new order for a job that ran: update it (with a remediation), delete it, or
// replace its manifests.
type Reopen struct {
	// Type is UpdateDeployment, DeleteDeployment, ReplaceDeployment, or CreateDeployment to
	// deploy a job's manifests again (a stopped group started).
	Type model.JobType
	// SubType is the remediation of an UpdateDeployment (required for one).
	SubType model.SubType
	// Remediation is the payload of an UpdateDeployment opened for an incompliance.
	Remediation *model.Remediation
	// Manifests are the new manifests of a ReplaceDeployment (required for one).
	Manifests []model.PlainManifest
	// IfFence, when not 0, refuses the order unless the job's fence is still this one.
	IfFence uint64
	// By and Why are recorded in the history.
	By, Why string
	// GroupOp, when set, says the order is part of a stop or a start of the job's group
	// (Group): the group's Policy Manager registration records it in the same step.
	GroupOp GroupOp
	Group   string
	// Order, when set, names the request this re-open carries out (a restart): a job it
	// re-opened once is left as it is when the same order comes again (ErrOrderSeen).
	Order string
	// Hold, when set, is the rollout (its id) that holds the re-opened job until its wave
	// starts (rollout.go); without it, a job a rollout held is released.
	Hold string
	// KeepPrevious keeps the manifests the job ran with (PreviousManifests), for a rollback.
	KeepPrevious bool
}

// Reopen turns a Finished or Degraded job into a Created job of another type. The job keeps
// its owner, and only that owner may promote it; a re-opened job nobody promoted yet takes
// the newer order instead. A job that was never promoted has nothing deployed: a Delete
// finishes it at once, a Replace only swaps its manifests, an Update is refused. It returns
// the state the job is in afterwards.
func (s *Store) Reopen(ctx context.Context, jobID string, r Reopen) (model.JobState, error) {
	const op = "reopen"
	errs := checkID(jobID, "job_id")
	switch r.Type {
	case model.UpdateDeployment:
		if r.SubType == "" {
			errs = errs.Also(apis.ErrMissingField("sub_type"))
		}
	case model.DeleteDeployment, model.CreateDeployment:
		// CreateDeployment re-deploys a job's manifests (starting a stopped group).
	case model.ReplaceDeployment:
		if len(r.Manifests) == 0 {
			errs = errs.Also(apis.ErrMissingField("manifests"))
		}
	case 0:
		errs = errs.Also(apis.ErrMissingField("type"))
	default:
		errs = errs.Also(apis.ErrInvalidValue(int(r.Type), "type", "re-open as 5 (CreateDeployment), 6 (DeleteDeployment), 7 (UpdateDeployment) or 8 (ReplaceDeployment)"))
	}
	if r.SubType != "" && !r.SubType.Valid() {
		errs = errs.Also(apis.ErrInvalidValue(string(r.SubType), "sub_type", "want one of "+joinSubTypes()))
	}
	switch r.GroupOp {
	case "":
	case GroupStop, GroupStart:
		if fe := checkID(r.Group, "group"); fe != nil {
			errs = errs.Also(fe)
		} else if model.Bucket(r.Group) != model.Bucket(jobID) {
			errs = errs.Also(apis.ErrInvalidValue(r.Group, "group", "not the group of job "+jobID))
		}
	default:
		errs = errs.Also(apis.ErrInvalidValue(string(r.GroupOp), "group_op", "want stop or start"))
	}
	for i, m := range r.Manifests {
		if m.YamlString == "" {
			errs = errs.Also(apis.ErrMissingField("yamlString").ViaFieldIndex("manifests", i))
		}
	}
	errs = errs.Also(s.manifestBytes(r.Manifests))
	if r.Remediation != nil {
		errs = errs.Also(r.Remediation.Validate().ViaField("remediation"))
		if r.SubType != "" && r.Remediation.Action != r.SubType {
			errs = errs.Also(apis.ErrInvalidValue(string(r.Remediation.Action), "remediation.action", "must equal sub_type"))
		}
	}
	if err := invalid(op, errs); err != nil {
		return 0, err
	}
	rem, err := marshal(r.Remediation)
	if err != nil {
		return 0, err
	}
	if r.Remediation == nil {
		rem = ""
	}
	ms := ""
	if len(r.Manifests) > 0 {
		if ms, err = s.manifestsField(ctx, r.Manifests); err != nil {
			return 0, err
		}
	}
	ifFence := ""
	if r.IfFence != 0 {
		ifFence = strconv.FormatUint(r.IfFence, 10)
	}
	out, err := s.run(ctx, reopenScript, op, "job", jobID, []string{s.jobKey(jobID)},
		s.bucket(jobID), jobID, int(r.Type), string(r.SubType), rem, ms, ifFence, s.opts.HistoryCap,
		jsonString(r.By), jsonString(clip(r.Why)), r.Group, string(r.GroupOp), r.Order, r.Hold, flag(r.KeepPrevious))
	if err != nil {
		return 0, err
	}
	st, _ := strconv.Atoi(out[1])
	if len(out) > 3 && out[3] == "seen" {
		return model.JobState(st), ErrOrderSeen
	}
	return model.JobState(st), nil
}

func joinSubTypes() string {
	s := ""
	for i, v := range model.SubTypes {
		if i > 0 {
			s += ", "
		}
		s += v
	}
	return s
}

// SetTargets sets (or replaces) where a Created job runs; a job created without a target
// becomes executable once it has one. It reports false when the target was already this one.
func (s *Store) SetTargets(ctx context.Context, jobID string, t model.Target, by string) (bool, error) {
	const op = "set targets"
	if err := invalid(op, checkID(jobID, "job_id").Also(t.Validate().ViaField("targets"))); err != nil {
		return false, err
	}
	targets, err := marshal(t)
	if err != nil {
		return false, err
	}
	out, err := s.run(ctx, setTargetsScript, op, "job", jobID, []string{s.jobKey(jobID)},
		s.bucket(jobID), jobID, targets, string(t.Orchestrator), s.opts.HistoryCap, jsonString(by),
		jsonString("target "+t.ClusterName+" ("+string(t.Orchestrator)+")"))
	if err != nil {
		return false, err
	}
	return out[1] == "1", nil
}

// WriteResourceStatus stores an owned job's resource (conditions, workload feedback,
// ManifestWork name and UID) when it differs from what is stored, and writes nothing at all
// when it does not. It reports whether it wrote. Build the conditions with
// Resource.SetCondition on the stored resource so unchanged ones keep their
// lastTransitionTime and compare equal.
func (s *Store) WriteResourceStatus(ctx context.Context, c Claim, r model.Resource) (bool, error) {
	ch, err := s.Apply(ctx, c, Change{Resource: &r})
	return ch.Resource, err
}

// WriteResourceStatusIf is WriteResourceStatus for a writer that derived r from the resource
// it read (prev, nil when the job had none): it writes only while the stored resource is still
// prev, so a concurrent write of another writer is never lost; otherwise it is
// ErrResourceChanged and nothing is written, and the caller reads again.
func (s *Store) WriteResourceStatusIf(ctx context.Context, c Claim, prev *model.Resource, r model.Resource) (bool, error) {
	ch, err := s.Apply(ctx, c, Change{Resource: &r, Read: prev, IfUnchanged: true})
	return ch.Resource, err
}

// WriteCreatedResource writes the resource of a Created job — why it waits (no target yet, no
// hub manages its cluster) — for whoever places jobs, while the stored one is still prev (nil:
// none); ErrResourceChanged otherwise, ErrWrongState once the job is no longer Created.
func (s *Store) WriteCreatedResource(ctx context.Context, jobID string, prev *model.Resource, r model.Resource) (bool, error) {
	const op = "write resource status"
	if r.JobID == "" {
		r.JobID = jobID
	}
	errs := checkID(jobID, "job_id").Also(r.Validate().ViaField("resource"))
	if r.JobID != jobID {
		errs = errs.Also(apis.ErrInvalidValue(r.JobID, "resource.job_id", "the resource of job "+jobID))
	}
	if err := invalid(op, errs); err != nil {
		return false, err
	}
	doc, err := marshal(r)
	if err != nil {
		return false, err
	}
	read := ""
	if prev != nil {
		if read, err = marshal(*prev); err != nil {
			return false, err
		}
	}
	out, err := s.run(ctx, createdResourceScript, op, "job", jobID, []string{s.jobKey(jobID)},
		s.bucket(jobID), jobID, doc, read)
	if err != nil {
		return false, err
	}
	return out[1] == "1", nil
}

// resourceDoc checks a resource status write and encodes the resource.
func (s *Store) resourceDoc(c Claim, r *model.Resource) (string, error) {
	const op = "write resource status"
	if err := c.check(op); err != nil {
		return "", err
	}
	if r.JobID == "" {
		r.JobID = c.JobID
	}
	errs := r.Validate().ViaField("resource")
	if r.JobID != c.JobID {
		errs = errs.Also(apis.ErrInvalidValue(r.JobID, "resource.job_id", "the resource of job "+c.JobID))
	}
	if err := invalid(op, errs); err != nil {
		return "", err
	}
	return marshal(*r)
}

// RetryOnResourceChange runs write again, a few times with a short backoff, while it fails
// with ErrResourceChanged: another writer changed the job's resource between the caller's read
// and its write, and the caller reads again and derives again.
func RetryOnResourceChange(write func() error) error {
	return retry.OnError(retry.DefaultRetry, func(err error) bool { return errors.Is(err, ErrResourceChanged) }, write)
}
