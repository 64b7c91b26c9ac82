package store

import (
	"context"
	"strconv"
	"time"

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
	errs = errs.Also(checkID(c.JobID, "job_id"), checkID(c.Owner, "owner_id"))
	if c.Fence == 0 {
		errs = errs.Also(apis.ErrMissingField("fence"))
	}
	return invalid(op, errs)
}

// Promote makes owner (the hub) the owner of a job for one execution (holder), by the ICOS
// rules made atomic: a Created job with a target and no owner or this owner → Progressing,
// unless another execution holds a live lease on it; or, a takeover, a CreateDeployment job
// in Progressing or Degraded whose lease lapsed more than the takeover TTL ago. The claim's
// fence is one more than the job's last one, so every write of an earlier owner or execution
// is refused from now on. The lease lasts the store's LeaseTTL.
func (s *Store) Promote(ctx context.Context, jobID, owner, holder string) (Claim, error) {
	const op = "promote"
	errs := checkID(jobID, "job_id").Also(checkID(owner, "owner_id"), checkID(holder, "holder"))
	if err := invalid(op, errs); err != nil {
		return Claim{}, err
	}
	why := "execution " + holder
	out, err := s.run(ctx, promoteScript, op, "job", jobID, []string{s.jobKey(jobID)},
		s.bucket(jobID), jobID, owner, holder, s.opts.LeaseTTL.Milliseconds(), s.opts.TakeoverTTL.Milliseconds(),
		s.opts.HistoryCap, jsonString(owner), jsonString(why))
	if err != nil {
		return Claim{}, err
	}
	fence, _ := strconv.ParseUint(out[1], 10, 64)
	from, _ := strconv.Atoi(out[4])
	c := Claim{JobID: jobID, Owner: owner, Holder: holder, Fence: fence, LeaseUntil: msTime(out[2]), From: model.JobState(from)}
	if c.From != model.Created {
		c.TakenOverFrom = out[3]
	}
	return c, nil
}

// RenewLease extends the claim's lease by the LeaseTTL. A lease that lapsed is taken again as
// long as nobody took the job over (the fence still matches) and no other execution leased
// it meanwhile. The job must be Progressing or Degraded.
func (s *Store) RenewLease(ctx context.Context, c Claim) (Claim, error) {
	const op = "renew lease"
	if err := c.check(op); err != nil {
		return c, err
	}
	if err := invalid(op, checkID(c.Holder, "holder")); err != nil {
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
	const op = "release lease"
	if err := c.check(op); err != nil {
		return err
	}
	if err := invalid(op, checkID(c.Holder, "holder")); err != nil {
		return err
	}
	_, err := s.run(ctx, releaseScript, op, "job", c.JobID, []string{s.jobKey(c.JobID)},
		s.bucket(c.JobID), c.JobID, c.Owner, c.Fence, c.Holder)
	return err
}

// transition is the state change an owner makes: from which states, and whether the
// execution's lease ends with it.
type transition struct {
	op      string
	to      model.JobState
	from    string
	release bool
}

var (
	progress = transition{op: "progress", to: model.Progressing, from: ",4,"}
	finish   = transition{op: "finish", to: model.Finished, from: ",2,4,", release: true}
	degrade  = transition{op: "degrade", to: model.Degraded, from: ",2,3,"}
)

func (s *Store) transition(ctx context.Context, t transition, c Claim, why string) (bool, error) {
	if err := c.check(t.op); err != nil {
		return false, err
	}
	release := "0"
	if t.release {
		release = "1"
	}
	out, err := s.run(ctx, transitionScript, t.op, "job", c.JobID, []string{s.jobKey(c.JobID)},
		s.bucket(c.JobID), c.JobID, c.Owner, c.Fence, int(t.to), t.from, release, s.opts.HistoryCap,
		jsonString(c.Owner), jsonString(clip(why)), t.op)
	if err != nil {
		return false, err
	}
	return out[1] == "1", nil
}

// Progress moves an owned Degraded job back to Progressing (its owner retries it, or its
// workload recovered). It reports false, and writes nothing, when the job is Progressing.
func (s *Store) Progress(ctx context.Context, c Claim, why string) (bool, error) {
	return s.transition(ctx, progress, c, why)
}

// Finish moves an owned Progressing or Degraded job to Finished and ends its lease. It
// reports false, and writes nothing, when the job is Finished already.
func (s *Store) Finish(ctx context.Context, c Claim, why string) (bool, error) {
	return s.transition(ctx, finish, c, why)
}

// Degrade moves an owned Progressing or Finished job to Degraded. It reports false, and
// writes nothing, when the job is Degraded already. The lease is left alone: the executor
// releases its own when its execution ends.
func (s *Store) Degrade(ctx context.Context, c Claim, why string) (bool, error) {
	return s.transition(ctx, degrade, c, why)
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
		jsonString(r.By), jsonString(clip(r.Why)))
	if err != nil {
		return 0, err
	}
	st, _ := strconv.Atoi(out[1])
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

// WriteResourceStatus stores what status sync read for an owned job (conditions, workload
// feedback, ManifestWork name and UID) when it differs from what is stored, and writes
// nothing at all when it does not. It reports whether it wrote. Build the conditions with
// Resource.SetCondition on the stored resource so unchanged ones keep their
// lastTransitionTime and compare equal.
func (s *Store) WriteResourceStatus(ctx context.Context, c Claim, r model.Resource) (bool, error) {
	doc, err := s.resourceDoc(c, &r)
	if err != nil {
		return false, err
	}
	out, err := s.run(ctx, resourceStatusScript, "write resource status", "job", c.JobID, []string{s.jobKey(c.JobID)},
		s.bucket(c.JobID), c.JobID, c.Owner, c.Fence, doc)
	if err != nil {
		return false, err
	}
	return out[1] == "1", nil
}

// WriteResourceStatusIf is WriteResourceStatus for a writer that derived r from the resource
// it read (prev, nil when the job had none): it writes only while the stored resource is still
// prev, so a concurrent write of another kind (the executor's) is never lost; otherwise it is
// ErrResourceChanged and nothing is written, and the caller reads again. When the stored
// resource is r already it writes nothing and reports false.
func (s *Store) WriteResourceStatusIf(ctx context.Context, c Claim, prev *model.Resource, r model.Resource) (bool, error) {
	doc, err := s.resourceDoc(c, &r)
	if err != nil {
		return false, err
	}
	was := ""
	if prev != nil {
		if was, err = marshal(*prev); err != nil {
			return false, err
		}
	}
	out, err := s.run(ctx, resourceStatusIfScript, "write resource status", "job", c.JobID, []string{s.jobKey(c.JobID)},
		s.bucket(c.JobID), c.JobID, c.Owner, c.Fence, doc, was)
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
