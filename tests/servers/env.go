package servers

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
)

// Need says which servers a test binary needs.
type Need struct {
	Redis bool
	// Hub starts a kube-apiserver with OCM's CRDs (and Knative's with Knative).
	Hub     bool
	Knative bool
	// Eventing runs Knative Eventing itself against the hub (knative.go): its controllers,
	// the multi-tenant broker, the in-memory channel, the PingSource adapter. Implies Hub.
	Eventing bool
	// Brokers are the brokers ("namespace/name") the suite creates (KnativeOptions.Brokers).
	Brokers []string
	// OIDC turns on Knative's OIDC sender identity (KnativeOptions.OIDC).
	OIDC bool
	// Clusters is how many managed clusters get a real work agent: 1 is cluster1 (the hub's
	// own API server as spoke); 2 adds cluster2, a second API server with its own agent.
	Clusters int
	// S3 starts an S3-compatible object store (versitygw) with the bucket S3Bucket.
	S3 bool
	// TwoHubs starts two OCM hubs with disjoint clusters instead: hub A (Env.Hub) manages
	// cluster1 and hub B (Env.HubB) manages cluster2, each the spoke of its own cluster with
	// its own real work agent. Clusters is ignored.
	TwoHubs bool
	// Placement runs OCM's placement controller against the hub (placement.go). Implies Hub.
	Placement bool
}

// S3Bucket is the bucket the suite's object store starts with.
const S3Bucket = "ocm-jobs"

// Env is the set of servers started for one test binary.
type Env struct {
	Redis *Redis
	Hub   *Hub
	// Spokes are the API servers of managed clusters other than the hub, by cluster name.
	Spokes map[string]*Hub
	// Agents are the work agents, by cluster name.
	Agents map[string]*Agent
	// S3 is the object store, when Need.S3.
	S3 *S3
	// Knative is the Knative Eventing stack, when Need.Eventing.
	Knative *Knative
	// Placement is OCM's placement controller, when Need.Placement.
	Placement *PlacementController
	// HubB is the second hub, when Need.TwoHubs.
	HubB *Hub
	// hubOf is the hub that manages each cluster.
	hubOf map[string]*Hub
}

// Start starts what need names. On error everything already started is stopped.
func Start(ctx context.Context, need Need) (env *Env, err error) {
	env = &Env{Spokes: map[string]*Hub{}, Agents: map[string]*Agent{}, hubOf: map[string]*Hub{}}
	defer func() {
		if err != nil {
			env.Stop()
		}
	}()
	if need.Redis {
		if env.Redis, err = StartRedis(RedisOptions{}); err != nil {
			return nil, fmt.Errorf("redis-server: %w", err)
		}
	}
	if need.S3 {
		if env.S3, err = StartS3(S3Bucket); err != nil {
			return nil, fmt.Errorf("versitygw: %w", err)
		}
	}
	if need.TwoHubs {
		return env, env.startTwoHubs(ctx)
	}
	if need.Hub || need.Clusters > 0 || need.Eventing || need.Placement {
		if env.Hub, err = StartHub(HubOptions{Knative: need.Knative || need.Eventing}); err != nil {
			return nil, fmt.Errorf("hub: %w", err)
		}
	}
	if need.Eventing {
		if env.Knative, err = StartKnative(ctx, env.Hub, KnativeOptions{Brokers: need.Brokers, OIDC: need.OIDC}); err != nil {
			return nil, fmt.Errorf("knative eventing: %w", err)
		}
	}
	for i := 1; i <= need.Clusters; i++ {
		name := fmt.Sprintf("cluster%d", i)
		spoke := env.Hub
		if i > 1 {
			if spoke, err = StartHub(HubOptions{}); err != nil {
				return nil, fmt.Errorf("spoke API server of %s: %w", name, err)
			}
			env.Spokes[name] = spoke
		}
		a, err := StartAgent(ctx, env.Hub, spoke, name)
		if err != nil {
			return nil, fmt.Errorf("work agent of %s: %w", name, err)
		}
		env.Agents[name] = a
		env.hubOf[name] = env.Hub
	}
	if need.Placement {
		if env.Placement, err = StartPlacement(ctx, env.Hub); err != nil {
			return nil, fmt.Errorf("placement controller: %w", err)
		}
	}
	return env, nil
}

// startTwoHubs starts hub A with cluster1 and hub B with cluster2; each hub is the spoke of
// its one cluster.
func (e *Env) startTwoHubs(ctx context.Context) error {
	var err error
	if e.Hub, err = StartHub(HubOptions{}); err != nil {
		return fmt.Errorf("hub A: %w", err)
	}
	if e.HubB, err = StartHub(HubOptions{}); err != nil {
		return fmt.Errorf("hub B: %w", err)
	}
	for name, hub := range map[string]*Hub{"cluster1": e.Hub, "cluster2": e.HubB} {
		a, err := StartAgent(ctx, hub, hub, name)
		if err != nil {
			return fmt.Errorf("work agent of %s: %w", name, err)
		}
		e.Agents[name] = a
		e.hubOf[name] = hub
	}
	return nil
}

// HubOf returns the hub that manages a cluster (nil for an unknown cluster).
func (e *Env) HubOf(cluster string) *Hub { return e.hubOf[cluster] }

// Spoke returns the API server a cluster's workloads land on.
func (e *Env) Spoke(cluster string) *Hub {
	if s, ok := e.Spokes[cluster]; ok {
		return s
	}
	if h := e.hubOf[cluster]; h != nil {
		return h
	}
	return e.Hub
}

// Stop stops every server, agents first.
func (e *Env) Stop() {
	if e == nil {
		return
	}
	e.Knative.Stop()
	e.Placement.Stop()
	for _, a := range e.Agents {
		a.Stop()
	}
	for _, s := range e.Spokes {
		s.Stop()
	}
	if e.HubB != nil {
		e.HubB.Stop()
	}
	if e.Hub != nil {
		e.Hub.Stop()
	}
	if e.Redis != nil {
		e.Redis.Stop()
	}
	if e.S3 != nil {
		e.S3.Stop()
	}
}

// Main is a TestMain body: it starts what need names, runs the tests and stops everything.
// A server that cannot start fails the whole binary loudly; nothing is skipped.
func Main(m *testing.M, need Need, env **Env) {
	e, err := Start(context.Background(), need)
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: starting the servers this suite needs:", errors.Unwrap(err), "\n", err)
		os.Exit(1)
	}
	*env = e
	code := m.Run()
	e.Stop()
	os.Exit(code)
}
