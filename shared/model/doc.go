// Package model holds the job model ocm-jobs shares between its functions: job groups, jobs,
// resources and their conditions, incompliances, and the ICOS enums.
//
// The JSON names and integers are the ICOS Job Manager's, so an ICOS client (a deployment
// manager polling /jobmanager/jobs/executable, the Policy Manager posting incompliances) reads
// and writes these documents unchanged. Every type reads `id` and, because the 1.4.1 server
// wrote the job id untagged, also `ID`; it always writes `id`.
//
// Fields ICOS does not have come after the ICOS ones and are omitted when empty, so an ICOS
// client that ignores unknown fields sees nothing new. The fencing token is one of them
// (`fence`): it is not a secret (it only orders the writes of one job's owners, and every
// write is also checked against the owner id), and a REST client that drives a job through
// PUT /jobs needs it to prove it is still the owner. The execution lease is not written.
//
// Validate methods return every problem at once as a knative.dev/pkg apis.FieldError whose
// paths name the offending fields (`jobs[2].targets.cluster_name`).
package model
