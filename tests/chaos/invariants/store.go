package invariants

import (
	"sort"
	"strings"
)

// StoreDump is the raw content of the store's keys that the index check needs: the job and
// group hashes and the index sets, by key (prefix:{b:xy}:rest). It is the one place the
// checks know the store's key layout (shared/store/doc.go); keep them in step.
type StoreDump struct {
	// Hashes are the job (…:job:<id>) and group (…:group:<id>) hashes.
	Hashes map[string]map[string]string
	// Indexes are the index keys (…:idx:…): member → score ("" in a set).
	Indexes map[string]map[string]string
}

// indexViolations recomputes every index from the job and group hashes and compares it with
// the stored indexes — the invariant every store script keeps (shared/store's own tests
// check it after each test; here it is checked after a run under faults).
func indexViolations(d StoreDump, r *Result) {
	want := map[string]map[string]string{}
	add := func(key, member, score string) {
		if want[key] == nil {
			want[key] = map[string]string{}
		}
		want[key][member] = score
	}
	keys := make([]string, 0, len(d.Hashes))
	for k := range d.Hashes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		h := d.Hashes[k]
		bp, rest, ok := strings.Cut(k, "}:")
		if !ok {
			r.add(Consistent, "key without a bucket tag", k, "the store's keys all carry a {b:xy} hash tag")
			continue
		}
		bp += "}"
		switch {
		case strings.HasPrefix(rest, "group:"):
			if h["deleted_at"] == "" {
				add(bp+":idx:groups", strings.TrimPrefix(rest, "group:"), "")
			}
		case strings.HasPrefix(rest, "job:"):
			if h["deleted_at"] != "" {
				continue
			}
			id := strings.TrimPrefix(rest, "job:")
			add(bp+":idx:state:"+h["state"], id, "")
			if h["owner"] != "" {
				add(bp+":idx:owner:"+h["owner"], id, "")
			}
			if h["targets"] != "" && h["orch"] != "" {
				switch {
				case h["state"] == "1":
					add(bp+":idx:ready:"+h["orch"]+":"+h["owner"], id, "")
				case (h["state"] == "2" || h["state"] == "4") && h["type"] == "5":
					add(bp+":idx:lease:"+h["orch"], id, h["lease_until"])
				}
			}
		}
	}
	for _, k := range sortedKeys(want) {
		for _, id := range sortedKeys(want[k]) {
			gs, ok := d.Indexes[k][id]
			switch {
			case !ok:
				r.add(Consistent, "index lacks a job", id, "index %s lacks it", k)
			case gs != want[k][id]:
				r.add(Consistent, "index score wrong", id, "index %s has it with score %s, want %s", k, gs, want[k][id])
			}
		}
	}
	for _, k := range sortedKeys(d.Indexes) {
		for _, id := range sortedKeys(d.Indexes[k]) {
			if _, ok := want[k][id]; !ok {
				r.add(Consistent, "index has a stray member", id, "index %s has it, which it should not", k)
			}
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
