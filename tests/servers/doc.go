// Package servers starts the real servers ocm-jobs is tested against and runs on locally:
// redis-server, a kube-apiserver with OCM's CRDs (controller-runtime envtest), and the OCM
// work agent. Each starts on free loopback ports from binaries `make tools` built into a cache
// outside the work tree, and every process it starts is stopped by PID.
//
// A server that cannot be started is an error, never a reason to skip: a test that needs
// Redis or a hub fails loudly when it is missing.
package servers

import (
	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// envtest logs through controller-runtime's logger; nothing here reads it, and unset it
// complains with a stack trace on every API server start.
func init() { ctrllog.SetLogger(logr.Discard()) }
