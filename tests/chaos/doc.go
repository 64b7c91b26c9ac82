// Package chaos is the fault-injection suite of ocm-jobs, in the spirit of Jepsen: against
// the real stack — redis-server with AOF, two OCM hubs each with its own kube-apiserver and
// real work agent, the function processes of both hubs, the local broker routing by
// k8s/base's Triggers with redelivery and reordering on — it drives a seeded workload (job
// groups created, updated, stopped, started and deleted; incompliances of every remediation,
// in storms and duplicated), injects faults at moments decided from the same seed (function
// processes killed or frozen, the broker refusing or dropping deliveries, redis-server killed
// and restarted from its AOF, a hub's kube-apiserver restarted, a work agent stopped,
// ManifestWorks deleted and spoke Deployments edited from outside, executions slowed before
// their apply and killed right after it), lets the system settle once the faults stop, and
// checks the invariants of package invariants against Redis, both hubs, the spokes and every
// event published.
//
// `go test ./tests/chaos` runs a short fixed seed (part of `make test`); `make chaos` runs a
// longer one, with SEED, GROUPS and DURATION settable. A seed reproduces its schedule (the
// report's schedule digest); the interleaving with the system's own timing is what a rerun
// cannot repeat exactly.
package chaos
