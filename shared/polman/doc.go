// Package polman registers job groups with the ICOS Dynamic Policy Manager (the PM, "Polman"):
// the client of its registry (POST /polman/registry/api/v1/icos/app with the lifecycle events
// created, started, stopped, deleted), how it authenticates (a Keycloak client-credentials
// token, or the caller's bearer token), the sender that delivers each group's events in order
// from the registration the store keeps beside the group, and the validation of a
// descriptor's `policies` at intake.
//
// The Policy Manager being down never fails a user's request: the store records the events
// with the group change that causes them, and the sender delivers them after the request, and
// again on every cron tick with a backoff, until the Policy Manager takes them.
package polman
