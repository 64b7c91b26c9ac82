// Package store keeps ocm-jobs' state in Redis: job groups, jobs, each job's history,
// incompliances, and the ownership of jobs by hubs.
//
// # Atomic, guarded, one round trip
//
// Every change is one Lua script (EVALSHA) that checks its guards — the job exists, is in a
// state the change starts from, is owned by the caller, and the caller's fencing token is the
// current one — and then writes the job, its indexes and its history together. A failed guard
// writes nothing and comes back as a *GuardError naming the guard (errors.Is with ErrNotFound,
// ErrWrongState, ErrNotOwner, ErrFenced, ErrLeaseHeld, ErrNoTarget, ErrExists,
// ErrResourceChanged). Callers never read, decide and write: they ask for the change and learn
// whether it happened (a resource derived from the one read is written with
// WriteResourceStatusIf, which refuses it when another writer changed the resource meanwhile).
//
// # Ownership, leases and fencing
//
// Promote makes a hub the owner of a job for one execution and returns a Claim. The claim's
// fence is the job's fence plus one: it grows on every promote, so any write still carrying an
// older token (an execution that lost the job) is refused. The execution lease (LeaseTTL,
// renewable) is kept in the job's own hash as holder + expiry, read from the Redis clock: it
// is per execution, so two replicas sharing a hub id never run the same job at once, and
// because its expiry stays recorded after it lapses, Promote can tell when a lease lapsed more
// than the TakeoverTTL ago and let another hub take a stuck CreateDeployment job over.
//
// # Keys
//
// All keys start with Options.Prefix (default "ocmjobs") and a bucket hash tag {b:xy}, xy
// being the first byte of the id in hex (model.Bucket). A job id starts with its group's byte
// (model.NewJobID), so a group, its jobs and the indexes of that bucket share one Redis
// Cluster slot: creating a group is one script, and so is every transition.
//
//	P:{b:xy}:group:<group>        hash   doc (id, appName, appDescription), created_at, updated_at, deleted_at
//	P:{b:xy}:group:<group>:jobs   set    the group's job ids
//	P:{b:xy}:job:<job>            hash   doc (the fixed ICOS fields), state, type, sub_type, owner,
//	                                     fence, orch, targets, manifests, resource, remediation,
//	                                     lease_holder, lease_until, created_at, updated_at, deleted_at,
//	                                     trace (the W3C traceparent of the order that opened it)
//	P:{b:xy}:group:<group>:inc    set    ids of incompliances about the group (TTL IncomplianceTTL)
//	P:{b:xy}:hist:<job>           list   history entries, newest first, capped at HistoryCap
//	P:{b:xy}:inc:<incompliance>   hash   doc, job_id, outcome, reason, received_at (TTL IncomplianceTTL)
//	P:{b:xy}:idx:groups           set    live group ids
//	P:{b:xy}:idx:state:<n>        set    job ids in state n
//	P:{b:xy}:idx:owner:<hub>      set    job ids the hub owns
//	P:{b:xy}:idx:ready:<orch>:<hub> set  Created jobs with a target, owned by hub ("" = nobody)
//	P:{b:xy}:idx:lease:<orch>     zset   CreateDeployment jobs in Progressing/Degraded, scored by
//	                                     lease expiry (ms), for takeover
//	P:{b:xy}:idx:created-since    zset   jobs in Created, scored by when they entered it (ms): the
//	                                     age of the oldest waiting job, for the metrics
//	P:{b:xy}:idx:archive          set    deleted groups whose record is not in the object store yet
//	P:{b:xy}:reg:<group>          hash   the group's Policy Manager registration (registration.go),
//	                                     with :q (events to deliver) and :log (their outcomes)
//	P:{b:xy}:idx:reg              zset   registrations that need a look, by when (ms)
//
// Times are Unix milliseconds from Redis TIME. A script declares the key it routes on and
// builds the others of its bucket from the bucket prefix; they share the hash tag, so they
// are in the same slot on a cluster.
//
// Queries across jobs (by state, by owner, executable, all groups) read the index of each of
// the 256 buckets in one pipeline — one round trip per server — then the jobs in another.
// Nothing uses KEYS or SCAN.
//
// # Retention
//
// Deleting a group (allowed when every job was never promoted or is a finished
// DeleteDeployment) takes its jobs out of every index and gives its keys the RetentionTTL;
// until then a second delete answers as the first and the history stays readable. History
// lists are capped, incompliances expire, an index entry leaves with its job: nothing grows
// without bound but the live groups themselves.
//
// # Object store
//
// With Options.Blobs set, a job's manifests larger than OffloadBytes (as JSON) are written to
// the object store under their SHA-256 before the script runs, and the job's manifests field
// holds "blob:<key>" instead; readers get the manifests back transparently (GetJob, the job
// lists, GetGroup). The scripts never look inside the field, so they are unchanged.
//
// With an archive (functions/jobs), a group enters idx:archive before it is deleted and
// leaves it once its GroupRecord is in the object store; until then HoldGroup keeps its keys
// without a TTL, so an object store that is down delays the archive but never loses a group.
//
// The scripts also run on miniredis, which `make run` uses when no Redis is named; miniredis
// expires keys only when its clock is moved (FastForward), leases work there regardless.
package store
