package model

import (
	"encoding/json"
	"hash/fnv"

	"github.com/google/uuid"
)

// NewID returns a new random (version 4) UUID, the id of a job group or an incompliance.
func NewID() string { return uuid.NewString() }

// NewJobID returns a new random UUID for a job of the group groupID whose first byte is the
// group's bucket, so the store keeps the group and all its jobs in one Redis Cluster slot
// (and can create them in one atomic step).
func NewJobID(groupID string) string {
	u := uuid.New()
	u[0] = Bucket(groupID)
	return u.String()
}

// Bucket is the byte that places an id in one of 256 store buckets: the value of its first
// two hex digits (the first byte of a UUID), or a hash of the id when it does not start with
// two hex digits.
func Bucket(id string) byte {
	if len(id) >= 2 {
		hi, ok1 := hexVal(id[0])
		lo, ok2 := hexVal(id[1])
		if ok1 && ok2 {
			return hi<<4 | lo
		}
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	return byte(h.Sum32())
}

func hexVal(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// idFields reads both spellings of an id: `id` (ICOS's tag) and `ID` (what the 1.4.1 server
// wrote for jobs). encoding/json prefers the exact-case match, so each lands in its own field.
type idFields struct {
	Lower *string `json:"id"`
	Upper *string `json:"ID"`
}

// decodeWithID decodes a JSON object into v (a type without UnmarshalJSON, so this does not
// recurse) and sets *id from `id` or `ID`, `id` winning when both are there: the one rule every
// model type's UnmarshalJSON shares.
func decodeWithID(b []byte, v any, id *string) error {
	if err := json.Unmarshal(b, v); err != nil {
		return err
	}
	var f idFields
	if err := json.Unmarshal(b, &f); err != nil {
		return err
	}
	switch {
	case f.Lower != nil && *f.Lower != "":
		*id = *f.Lower
	case f.Upper != nil:
		*id = *f.Upper
	default:
		*id = ""
	}
	return nil
}
