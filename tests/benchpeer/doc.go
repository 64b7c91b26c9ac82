// Package benchpeer compares ocm-jobs' Redis store with github.com/hibiken/asynq, the peer
// task queue on Redis, in one run against one redis-server. It is a module of its own so the
// main module never depends on asynq; its only content is the benchmark.
package benchpeer
