// Package leaks checks that nothing outlives `make run` (tests/localstack) or a test binary
// that started servers through tests/servers, whatever signal ends it: no kube-apiserver,
// etcd, kube-controller-manager, work agent, redis-server or versitygw, and no stale .run/env.
package leaks
