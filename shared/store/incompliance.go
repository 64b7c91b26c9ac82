package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"knative.dev/pkg/apis"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
)

// RecordIncompliance records an incompliance (a missing id is generated; a missing outcome is
// pending). Recording the same id again changes nothing and reports false, so a redelivered
// report is harmless; in either case in is filled with the stored record's received_at. The
// record expires after the IncomplianceTTL.
func (s *Store) RecordIncompliance(ctx context.Context, in *model.Incompliance) (bool, error) {
	const op = "record"
	if in.ID == "" {
		in.ID = model.NewID()
	}
	if in.Outcome == "" {
		in.Outcome = model.OutcomePending
	}
	errs := checkID(in.ID, "id").Also(in.Validate())
	if err := invalid(op+" incompliance", errs); err != nil {
		return false, err
	}
	doc := *in
	doc.JobID, doc.JobIDs, doc.Outcome, doc.Reason, doc.ReceivedAt = "", nil, "", "", nil
	b, err := json.Marshal(&doc)
	if err != nil {
		return false, fmt.Errorf("record incompliance %s: %w", in.ID, err)
	}
	payload, err := marshal(in.Payload)
	if err != nil || in.Payload == nil {
		payload = ""
	}
	out, err := s.runScript(ctx, recordIncomplianceScript, op, "incompliance", in.ID, []string{s.incKey(in.ID), s.pendingIncKey(in.ID)},
		string(b), in.JobID, string(in.Outcome), clip(in.Reason), s.opts.IncomplianceTTL.Milliseconds(), payload, in.ID)
	if err != nil {
		return false, err
	}
	at := msTime(out[2])
	in.ReceivedAt = &at
	if err := s.indexGroupIncompliance(ctx, in); err != nil {
		return false, err
	}
	return out[1] == "1", nil
}

// indexGroupIncompliance adds an incompliance to its group's set P:{b:xy}:group:<id>:inc, so
// the archive finds a group's incompliances. The record lives in its own id's slot, so this
// is a second command after the script; a redelivered report (recorded again, answered false)
// adds it again, which repairs a crash between the two.
func (s *Store) indexGroupIncompliance(ctx context.Context, in *model.Incompliance) error {
	g := in.Subject.AppInstance
	if g == "" || checkID(g, "appInstance") != nil {
		return nil
	}
	pipe := s.rdb.Pipeline()
	pipe.SAdd(ctx, s.groupIncKey(g), in.ID)
	pipe.PExpire(ctx, s.groupIncKey(g), s.opts.IncomplianceTTL)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("record incompliance %s: indexing it under group %s: %w", in.ID, g, err)
	}
	return nil
}

// SetIncomplianceOutcome settles a pending incompliance as applied (naming the job opened for
// it, when jobID is set) or rejected (with a reason). Settling it again the same way reports
// false; settling it differently is ErrWrongState.
func (s *Store) SetIncomplianceOutcome(ctx context.Context, id string, o model.Outcome, reason, jobID string) (bool, error) {
	const op = "settle"
	errs := checkID(id, "id")
	if o != model.OutcomeApplied && o != model.OutcomeRejected {
		errs = errs.Also(apis.ErrInvalidValue(string(o), "outcome", "settle as applied or rejected"))
	}
	if o == model.OutcomeRejected && reason == "" {
		errs = errs.Also(apis.ErrMissingField("reason"))
	}
	if err := invalid(op+" incompliance", errs); err != nil {
		return false, err
	}
	out, err := s.runScript(ctx, incomplianceOutcomeScript, op, "incompliance", id, []string{s.incKey(id), s.pendingIncKey(id)},
		string(o), clip(reason), jobID, id)
	if err != nil {
		return false, err
	}
	return out[1] == "1", nil
}

// SetIncomplianceOutcomeJobs is SetIncomplianceOutcome for an incompliance that covers
// several jobs (every cluster of a component): the record names them all (job_ids), the
// first as its job_id.
func (s *Store) SetIncomplianceOutcomeJobs(ctx context.Context, id string, o model.Outcome, reason string, jobIDs []string) (bool, error) {
	if len(jobIDs) < 2 {
		return s.SetIncomplianceOutcome(ctx, id, o, reason, strings.Join(jobIDs, ""))
	}
	const op = "settle"
	errs := checkID(id, "id")
	if o != model.OutcomeApplied && o != model.OutcomeRejected {
		errs = errs.Also(apis.ErrInvalidValue(string(o), "outcome", "settle as applied or rejected"))
	}
	for i, j := range jobIDs {
		errs = errs.Also(checkID(j, fmt.Sprintf("job_ids[%d]", i)))
	}
	if err := invalid(op+" incompliance", errs); err != nil {
		return false, err
	}
	out, err := s.runScript(ctx, incomplianceOutcomeScript, op, "incompliance", id, []string{s.incKey(id), s.pendingIncKey(id)},
		string(o), clip(reason), jobIDs[0], id, strings.Join(jobIDs, ","))
	if err != nil {
		return false, err
	}
	return out[1] == "1", nil
}

// GetIncompliance reads an incompliance with its outcome.
func (s *Store) GetIncompliance(ctx context.Context, id string) (*model.Incompliance, error) {
	if fe := checkID(id, "id"); fe != nil {
		return nil, invalid("get incompliance", fe)
	}
	h, err := s.rdb.HGetAll(ctx, s.incKey(id)).Result()
	if err != nil {
		return nil, fmt.Errorf("get incompliance %s: %w", id, err)
	}
	if h["doc"] == "" {
		return nil, &GuardError{Op: "get", Kind: "incompliance", ID: id, Guard: GuardExists, Want: "incompliance", Got: "none"}
	}
	return decodeIncompliance(id, h)
}

// decodeIncompliance decodes an incompliance's hash (doc, job_id, outcome, reason,
// received_at, payload).
func decodeIncompliance(id string, h map[string]string) (*model.Incompliance, error) {
	in := &model.Incompliance{}
	if err := json.Unmarshal([]byte(h["doc"]), in); err != nil {
		return nil, fmt.Errorf("decoding incompliance %s: %w", id, err)
	}
	in.JobID, in.Outcome, in.Reason = h["job_id"], model.Outcome(h["outcome"]), h["reason"]
	switch {
	case h["job_ids"] != "":
		in.JobIDs = strings.Split(h["job_ids"], ",")
	case in.JobID != "":
		in.JobIDs = []string{in.JobID}
	}
	at := msTime(h["received_at"])
	in.ReceivedAt = &at
	if p := h["payload"]; p != "" {
		in.Payload = &model.Remediation{}
		if err := json.Unmarshal([]byte(p), in.Payload); err != nil {
			return nil, fmt.Errorf("decoding the payload of incompliance %s: %w", id, err)
		}
	}
	return in, nil
}

// PendingIncompliances lists the incompliances received at least age ago (by the Redis clock)
// whose outcome is still pending: their intake died half-way (or is very slow), and whoever
// finishes them reads each with GetIncompliance. One round trip per server.
func (s *Store) PendingIncompliances(ctx context.Context, age time.Duration) ([]string, error) {
	now, err := s.Now(ctx)
	if err != nil {
		return nil, err
	}
	until := strconv.FormatInt(now.Add(-age).UnixMilli(), 10)
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.StringSliceCmd, len(s.buckets))
	for i, b := range s.buckets {
		cmds[i] = pipe.ZRangeByScore(ctx, indexKey(b, "inc-pending"), &redis.ZRangeBy{Min: "-inf", Max: until})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("reading pending incompliances: %w", err)
	}
	return union(cmds), nil
}
