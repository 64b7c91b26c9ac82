package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/redis/go-redis/v9"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
)

// A group whose components follow an OCM Placement (one job per cluster the Placement
// decides, issue 18) keeps its binding in its group hash, field `placement` (JSON, a
// PlacementBinding), and is in its bucket's idx:placements while it has one: the status sync
// tick reads only those groups, so a group without a Placement costs it nothing. The tick
// writes the binding compare-and-set on the text it read before it acts (WritePlacement), so
// of two ticks racing on one group only one acts; the jobs it adds have ids derived from the
// group, the component, the cluster and how many jobs the component had there, so even a tick
// that acted on an older read adds nothing twice (the create script refuses an id that
// exists).
//
//	P:{b:xy}:idx:placements   set   groups with a Placement binding

// PlacementBinding is what a group's components follow.
type PlacementBinding struct {
	// Bound is the Placement ("namespace/name") each component follows, by component.
	Bound map[string]string `json:"bound"`
	// Followed is the clusters each component was last given jobs for, by component.
	Followed map[string][]string `json:"followed,omitempty"`
	// Dropped are the jobs undeployed because their cluster left the decision: a component
	// whose every job was dropped still follows its Placement (a stopped one does not).
	Dropped []string `json:"dropped,omitempty"`
}

// GuardPlacement: the group's Placement binding is still the one the caller read.
const GuardPlacement = "placement"

// ErrPlacementChanged: the group's Placement binding changed since it was read (another tick
// acted on it, or an update bound a component): read again.
var ErrPlacementChanged = errors.New("placement binding changed")

func init() { guardSentinels[GuardPlacement] = ErrPlacementChanged }

// writePlacementLua writes a group's binding if it is still the text read, and keeps the group
// in idx:placements while the binding binds a component.
// KEYS: group. ARGV: prefix, group id, the binding read, the new binding, bound (1/0); emitter.
const writePlacementLua = prelude + `
local g = redis.call('HMGET', KEYS[1], 'doc', 'deleted_at', 'placement')
if not g[1] or g[2] then return guard('exists', 'group ' .. ARGV[2], 'none') end
if (g[3] or '') ~= ARGV[3] then return guard('placement', 'the binding read', 'another') end
redis.call('HSET', KEYS[1], 'placement', ARGV[4])
if ARGV[5] == '1' then redis.call('SADD', idx('placements'), ARGV[2]) else redis.call('SREM', idx('placements'), ARGV[2]) end
return {'ok'}
`

var writePlacementScript = redis.NewScript(writePlacementLua)

// PlacementRead is a group's Placement binding as read, with the stored text a
// compare-and-set needs.
type PlacementRead struct {
	GroupID string
	Binding PlacementBinding
	raw     string
}

// PlacementState is what the tick needs of a bound group: its binding, whether a rollout is
// rolling, and its jobs without their manifests.
type PlacementState struct {
	Read PlacementRead
	// Rolling: the group's rollout is rolling (the tick leaves the group alone until it ends).
	Rolling bool
	Jobs    []model.Job
}

func decodeBinding(raw string) (PlacementBinding, error) {
	var b PlacementBinding
	if raw != "" {
		if err := json.Unmarshal([]byte(raw), &b); err != nil {
			return b, fmt.Errorf("decoding placement binding: %w", err)
		}
	}
	if b.Bound == nil {
		b.Bound = map[string]string{}
	}
	if b.Followed == nil {
		b.Followed = map[string][]string{}
	}
	return b, nil
}

// GetPlacement reads a group's Placement binding (empty when it has none).
func (s *Store) GetPlacement(ctx context.Context, groupID string) (PlacementRead, error) {
	if err := invalid("get placement", checkID(groupID, "id")); err != nil {
		return PlacementRead{}, err
	}
	raw, err := s.rdb.HGet(ctx, s.groupKey(groupID), "placement").Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return PlacementRead{}, fmt.Errorf("get placement of group %s: %w", groupID, err)
	}
	b, err := decodeBinding(raw)
	return PlacementRead{GroupID: groupID, Binding: b, raw: raw}, err
}

// PlacementsFollowed reads the bound groups listed as the tick needs them, in two round trips
// whatever their number (their bindings and job ids, then their jobs without manifests); gone
// lists those deleted meanwhile.
func (s *Store) PlacementsFollowed(ctx context.Context, groupIDs []string) (states map[string]*PlacementState, gone []string, err error) {
	const op = "read placements"
	for _, id := range groupIDs {
		if err := invalid(op, checkID(id, "id")); err != nil {
			return nil, nil, err
		}
	}
	if len(groupIDs) == 0 {
		return map[string]*PlacementState{}, nil, nil
	}
	pipe := s.rdb.Pipeline()
	gcs := make([]*redis.SliceCmd, len(groupIDs))
	jcs := make([]*redis.StringSliceCmd, len(groupIDs))
	for i, id := range groupIDs {
		gcs[i] = pipe.HMGet(ctx, s.groupKey(id), "doc", "deleted_at", "rollout", "placement")
		jcs[i] = pipe.SMembers(ctx, s.groupJobsKey(id))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, nil, fmt.Errorf("%s of %d groups: %w", op, len(groupIDs), err)
	}
	states = map[string]*PlacementState{}
	var jobIDs []string
	for i, id := range groupIDs {
		v := gcs[i].Val()
		if doc, _ := v[0].(string); doc == "" || v[1] != nil {
			gone = append(gone, id)
			continue
		}
		st := &PlacementState{Read: PlacementRead{GroupID: id}}
		if raw, _ := v[2].(string); raw != "" {
			r, err := decodeRollout(raw)
			if err != nil {
				return nil, nil, err
			}
			st.Rolling = r.Active()
		}
		st.Read.raw, _ = v[3].(string)
		if st.Read.Binding, err = decodeBinding(st.Read.raw); err != nil {
			return nil, nil, err
		}
		states[id] = st
		jobIDs = append(jobIDs, jcs[i].Val()...)
	}
	jobs, err := s.fetchJobStatus(ctx, jobIDs)
	if err != nil {
		return nil, nil, err
	}
	for _, j := range jobs {
		if st := states[j.JobGroupID]; st != nil {
			st.Jobs = append(st.Jobs, j)
		}
	}
	return states, gone, nil
}

// WritePlacement writes next as the group's binding if it is still the one read
// (ErrPlacementChanged otherwise).
func (s *Store) WritePlacement(ctx context.Context, read PlacementRead, next PlacementBinding) error {
	const op = "write placement"
	if err := invalid(op, checkID(read.GroupID, "id")); err != nil {
		return err
	}
	sort.Strings(next.Dropped)
	b, err := json.Marshal(next)
	if err != nil {
		return err
	}
	_, err = s.run(ctx, writePlacementScript, op, "group", read.GroupID, []string{s.groupKey(read.GroupID)},
		s.bucket(read.GroupID), read.GroupID, read.raw, string(b), flag(len(next.Bound) > 0))
	return err
}

// BindPlacements binds components of a group to Placements ("namespace/name") and unbinds
// others (components that name their clusters now, or are gone); a compare-and-set retried
// while ticks write the binding meanwhile.
func (s *Store) BindPlacements(ctx context.Context, groupID string, bind map[string]string, unbind []string) error {
	for attempt := 0; ; attempt++ {
		read, err := s.GetPlacement(ctx, groupID)
		if err != nil {
			return err
		}
		next := read.Binding
		next.Bound = map[string]string{}
		for c, p := range read.Binding.Bound {
			next.Bound[c] = p
		}
		changed := false
		for c, p := range bind {
			if next.Bound[c] != p {
				next.Bound[c], changed = p, true
			}
		}
		for _, c := range unbind {
			if _, ok := next.Bound[c]; ok {
				delete(next.Bound, c)
				changed = true
			}
		}
		if !changed {
			return nil
		}
		err = s.WritePlacement(ctx, read, next)
		if !errors.Is(err, ErrPlacementChanged) || attempt >= 10 {
			return err
		}
	}
}

// PlacementGroups lists the groups with a Placement binding (one round trip per server).
func (s *Store) PlacementGroups(ctx context.Context) ([]string, error) {
	return s.indexMembers(ctx, "placements")
}

// ForgetPlacementGroup takes a group that is gone out of idx:placements.
func (s *Store) ForgetPlacementGroup(ctx context.Context, groupID string) error {
	if err := invalid("forget placement", checkID(groupID, "id")); err != nil {
		return err
	}
	return s.rdb.SRem(ctx, indexKey(s.bucket(groupID), "placements"), groupID).Err()
}
