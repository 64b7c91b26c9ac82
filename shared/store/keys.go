package store

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
)

// Every Redis key of ocm-jobs is built here, from Options.Prefix ("P" below): two installs
// with different prefixes share a Redis without sharing a key. Keys of one bucket carry its
// hash tag {b:xy} (xy: the first byte of an id, model.Bucket), so everything one change
// touches lives in one Redis Cluster slot. See the package documentation for what each holds.

// bucket is the prefix of the bucket an id lives in: P:{b:xy}.
func (s *Store) bucket(id string) string { return s.buckets[model.Bucket(id)] }

// bucketOf is the prefix of bucket i.
func bucketOf(prefix string, i int) string { return fmt.Sprintf("%s:{b:%02x}", prefix, i) }

func (s *Store) jobKey(id string) string       { return s.bucket(id) + ":job:" + id }
func (s *Store) histKey(id string) string      { return s.bucket(id) + ":hist:" + id }
func (s *Store) groupKey(id string) string     { return s.bucket(id) + ":group:" + id }
func (s *Store) groupJobsKey(id string) string { return s.groupKey(id) + ":jobs" }
func (s *Store) groupIncKey(id string) string  { return s.groupKey(id) + ":inc" }
func (s *Store) incKey(id string) string       { return s.bucket(id) + ":inc:" + id }

// regKey is a group's Policy Manager registration (its queue and log add :q and :log).
func (s *Store) regKey(id string) string { return s.bucket(id) + ":reg:" + id }

// pendingIncKey indexes the bucket's incompliances whose outcome is still pending.
func (s *Store) pendingIncKey(id string) string { return indexKey(s.bucket(id), "inc-pending") }

// indexKey is one of a bucket's indexes (idx:state:<n>, idx:owner:<hub>, …).
func indexKey(bucket, name string) string { return bucket + ":idx:" + name }

// archiveIndexKey lists a bucket's deleted groups whose record is not archived yet.
func (s *Store) archiveIndexKey(id string) string { return indexKey(s.bucket(id), "archive") }

// outboxKey is a bucket's outbox stream: the events its transitions implied, until published.
func outboxKey(bucket string) string { return bucket + ":outbox" }

// cooldownKey marks an incompliance policy that fired on a job recently (in the job's bucket).
func (s *Store) cooldownKey(jobID, policy string) string {
	return s.bucket(jobID) + ":cooldown:" + jobID + ":" + hashed(policy)
}

// memoKey holds the answer to one delivered event, per scope (a function, and the hub it
// acts for): the event's source and id are hashed into the key and pick its bucket.
func (s *Store) memoKey(scope, source, id string) string {
	h := hashed(source + "\x00" + id)
	return s.buckets[fromHex(h[:2])] + ":memo:" + scope + ":" + h
}

// hubsKey is the registry of the hubs sharing this store and the clusters each manages.
func (s *Store) hubsKey() string { return s.opts.Prefix + ":hubs" }

// ordersKey holds the groups' pending orders (stop, start) by group id (orders.go).
func (s *Store) ordersKey() string { return s.opts.Prefix + ":orders" }

// lockKey is a named lock of the whole install (e.g. the outbox drain).
func (s *Store) lockKey(name string) string { return s.opts.Prefix + ":lock:" + name }

func hashed(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func fromHex(s string) int {
	var n int
	_, _ = fmt.Sscanf(s, "%02x", &n)
	return n
}
