package chaos

import (
	"fmt"
	"hash/fnv"
	"math/rand"
	"sort"
	"strings"
	"time"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/tests/chaos/invariants"
)

// The clusters and the hubs that manage them: hub A manages cluster1, hub B cluster2.
var (
	hubNames     = []string{"a", "b"}
	clusterOfHub = map[string]string{"a": "cluster1", "b": "cluster2"}
	clusters     = []string{"cluster1", "cluster2"}
)

// Placements the workload names (PlacementDecisions on hub A, which the jobs function reads):
// spreadPlacement decides both clusters from the start; latePlacement, the jobs function's
// DEFAULT_PLACEMENT for components that name none, decides only when the plan says so, so
// jobs wait AwaitingTarget until then and are placed by the cron tick.
const (
	placementNamespace = "ocm-jobs"
	spreadPlacement    = "chaos-spread"
	latePlacement      = "chaos-late"
)

// Plan is everything a run does, decided from its seed before it starts: the groups, the
// workload's operations and the faults, each at an offset from the start. A seed reproduces
// its plan exactly (Digest says so); the interleaving with the system's own timing is what a
// rerun cannot repeat.
type Plan struct {
	Seed     int64
	Duration time.Duration
	Groups   []GroupSpec
	Ops      []Op
	Faults   []Fault
}

// GroupSpec is one application of the workload.
type GroupSpec struct {
	Index int
	Name  string
	// Placement is the descriptor's placement ("" for none).
	Placement  string
	Components []ComponentSpec
}

// ComponentSpec is one component: a Deployment and a ConfigMap, aimed at Cluster ("" when
// a placement chooses).
type ComponentSpec struct {
	Name    string
	Cluster string
	Base    invariants.Spec
}

// OpKind is what a workload operation does.
type OpKind string

// The workload's operations.
const (
	OpCreate          OpKind = "create"
	OpUpdate          OpKind = "update"
	OpAddComponent    OpKind = "add-component"
	OpRemoveComponent OpKind = "remove-component"
	OpStop            OpKind = "stop"
	OpStart           OpKind = "start"
	OpDelete          OpKind = "delete"
	OpIncompliance    OpKind = "incompliance"
	OpStorm           OpKind = "incompliance-storm"
	OpDuplicate       OpKind = "incompliance-duplicate"
	OpDecidePlacement OpKind = "decide-placement"
)

// Op is one workload operation.
type Op struct {
	At    time.Duration
	Kind  OpKind
	Group int
	// Via is how it is sent: "rest" (the ICOS REST API) or "event" (through the broker).
	Via string
	// Component is the component an incompliance is about, or the one added or removed.
	Component string
	// Remediation is an incompliance's remediation; Count a storm's size.
	Remediation model.SubType
	Count       int
	// Rev is the descriptor revision an update sends; Key seeds the op's ids.
	Rev int
	Key int64
}

// FaultKind is what a fault does.
type FaultKind string

// The faults.
const (
	FaultKillFunction  FaultKind = "kill-function"
	FaultPauseFunction FaultKind = "pause-function"
	FaultBrokerRefuse  FaultKind = "broker-refuse"
	FaultBrokerDrop    FaultKind = "broker-drop"
	FaultKillRedis     FaultKind = "kill-redis"
	FaultRestartHubAPI FaultKind = "restart-kube-apiserver"
	FaultStopAgent     FaultKind = "stop-work-agent"
	FaultDeleteWork    FaultKind = "delete-manifestwork"
	FaultDrift         FaultKind = "drift-spoke-deployment"
	// In-process faults (shared/faults, counted from the executors' logs and exits).
	FaultSlowApply      FaultKind = "slow-apply"
	FaultKillAfterApply FaultKind = "kill-after-apply"
)

// Fault is one fault of the schedule.
type Fault struct {
	At   time.Duration
	Kind FaultKind
	// Target is the process, hub or cluster it hits.
	Target string
	// For is how long it lasts (down time, window); Share the share of a broker window.
	For   time.Duration
	Share float64
	// AppendFsync is the fsync policy in force when redis-server is killed.
	AppendFsync string
	// Pick chooses, at run time, the ManifestWork or Deployment hit.
	Pick int64
}

// processNames are the function processes of a run.
var processNames = []string{"jobs", "incompliance", "executor-a1", "executor-a2", "statussync-a", "executor-b1", "executor-b2", "statussync-b"}

// NewPlan makes the plan of a seed.
func NewPlan(seed int64, groups int, d time.Duration) *Plan {
	rnd := rand.New(rand.NewSource(seed))
	p := &Plan{Seed: seed, Duration: d}
	at := func(from, to float64) time.Duration {
		return time.Duration((from + rnd.Float64()*(to-from)) * float64(d))
	}
	via := func() string {
		if rnd.Intn(2) == 0 {
			return "rest"
		}
		return "event"
	}
	for i := range groups {
		g := GroupSpec{Index: i, Name: fmt.Sprintf("chaos%d-g%d", seed%100000, i)}
		mode := rnd.Float64()
		n := 1 + rnd.Intn(4)
		for c := range n {
			cs := ComponentSpec{Name: fmt.Sprintf("c%d", c+1), Base: randomSpec(rnd)}
			if mode < 0.7 {
				cs.Cluster = clusters[rnd.Intn(2)]
			}
			g.Components = append(g.Components, cs)
		}
		if mode >= 0.7 && mode < 0.85 {
			g.Placement = spreadPlacement
		}
		p.Groups = append(p.Groups, g)

		created := at(0, 0.5)
		add := func(op Op) {
			op.Group, op.Key = i, rnd.Int63()
			if op.Kind != OpCreate && op.At < created+2*time.Second {
				op.At = created + 2*time.Second
			}
			p.Ops = append(p.Ops, op)
		}
		add(Op{At: created, Kind: OpCreate, Via: via()})
		after := func() time.Duration {
			return created + time.Duration(rnd.Float64()*float64(d-created))
		}
		for range rnd.Intn(5) {
			comp := g.Components[rnd.Intn(len(g.Components))].Name
			rem := model.SubType(model.SubTypes[rnd.Intn(len(model.SubTypes))])
			switch x := rnd.Float64(); {
			case x < 0.2:
				add(Op{At: after(), Kind: OpStorm, Via: via(), Component: comp, Remediation: rem, Count: 3 + rnd.Intn(4)})
			case x < 0.4:
				add(Op{At: after(), Kind: OpDuplicate, Via: via(), Component: comp, Remediation: rem})
			default:
				add(Op{At: after(), Kind: OpIncompliance, Via: via(), Component: comp, Remediation: rem})
			}
		}
		if rnd.Float64() < 0.2 {
			add(Op{At: after(), Kind: OpUpdate, Via: via(), Rev: 1})
		}
		if rnd.Float64() < 0.1 {
			add(Op{At: after(), Kind: OpAddComponent, Via: via(), Component: fmt.Sprintf("c%d", n+1)})
		}
		if rnd.Float64() < 0.1 && n > 1 {
			add(Op{At: after(), Kind: OpRemoveComponent, Via: via(), Component: g.Components[n-1].Name})
		}
		switch x := rnd.Float64(); {
		case x < 0.15:
			add(Op{At: after(), Kind: OpDelete, Via: "rest"})
		case x < 0.35:
			stop := after()
			add(Op{At: stop, Kind: OpStop, Via: via()})
			if rnd.Float64() < 0.5 {
				add(Op{At: stop + time.Duration(rnd.Float64()*float64(d-stop)), Kind: OpStart, Via: via()})
			}
		}
	}
	p.Ops = append(p.Ops, Op{At: at(0.35, 0.45), Kind: OpDecidePlacement, Group: -1})
	sort.SliceStable(p.Ops, func(a, b int) bool { return p.Ops[a].At < p.Ops[b].At })
	p.Faults = scheduleFaults(rnd, d)
	return p
}

// randomSpec is a Deployment's spec as submitted: 1–3 replicas, 100–300m CPU and 64–192Mi
// memory requested, limits twice that.
func randomSpec(rnd *rand.Rand) invariants.Spec {
	cpu, mem := int64(100*(1+rnd.Intn(3))), int64(64*(1+rnd.Intn(3)))<<20
	return invariants.Spec{Replicas: int64(1 + rnd.Intn(3)), CPU: cpu, Memory: mem, CPULimit: 2 * cpu, MemoryLimit: 2 * mem}
}

// faultWeights say how often each outside fault is drawn.
var faultWeights = []struct {
	kind   FaultKind
	weight float64
}{
	{FaultKillFunction, 4}, {FaultPauseFunction, 1}, {FaultBrokerRefuse, 1.5}, {FaultBrokerDrop, 1.5},
	{FaultKillRedis, 1.2}, {FaultRestartHubAPI, 0.8}, {FaultStopAgent, 1}, {FaultDeleteWork, 1.5}, {FaultDrift, 1.5},
}

// scheduleFaults draws the outside faults: after a short warm-up, one every m/2 to 3m/2 (m a
// twentieth of the run, within [2s, 6s]) until the workload ends; every kind comes once, in a
// seeded order, before any comes twice, so even a short run meets each. Redis kills alternate
// between appendfsync always and everysec.
func scheduleFaults(rnd *rand.Rand, d time.Duration) []Fault {
	var out []Fault
	total := 0.0
	for _, w := range faultWeights {
		total += w.weight
	}
	first := rnd.Perm(len(faultWeights))
	m := min(max(d/20, 2*time.Second), 6*time.Second)
	policies := []string{"always", "everysec"}
	redisKills := rnd.Intn(2)
	for t := min(d/10, 10*time.Second); ; {
		t += m/2 + time.Duration(rnd.Int63n(int64(m)))
		if t >= d {
			return out
		}
		var kind FaultKind
		if len(out) < len(first) {
			kind = faultWeights[first[len(out)]].kind
		} else {
			x := rnd.Float64() * total
			for _, w := range faultWeights {
				if x -= w.weight; x < 0 {
					kind = w.kind
					break
				}
			}
		}
		f := Fault{At: t, Kind: kind, Pick: rnd.Int63()}
		switch kind {
		case FaultKillFunction:
			f.Target, f.For = processNames[rnd.Intn(len(processNames))], time.Duration(500+rnd.Intn(2500))*time.Millisecond
		case FaultPauseFunction:
			// Longer than LEASE_TTL + TAKEOVER_TTL: the lease lapses and may be taken over.
			f.Target, f.For = []string{"executor-a1", "executor-a2", "executor-b1", "executor-b2"}[rnd.Intn(4)], time.Duration(10+rnd.Intn(5))*time.Second
		case FaultBrokerRefuse, FaultBrokerDrop:
			f.For, f.Share = time.Duration(4+rnd.Intn(12))*time.Second, 0.2+0.6*rnd.Float64()
		case FaultKillRedis:
			f.For, f.AppendFsync = time.Duration(500+rnd.Intn(2000))*time.Millisecond, policies[redisKills%2]
			redisKills++
		case FaultRestartHubAPI:
			f.Target, f.For = hubNames[rnd.Intn(2)], time.Duration(1+rnd.Intn(3))*time.Second
		case FaultStopAgent:
			f.Target, f.For = clusters[rnd.Intn(2)], time.Duration(5+rnd.Intn(15))*time.Second
		case FaultDeleteWork, FaultDrift:
			f.Target = clusters[rnd.Intn(2)]
		}
		out = append(out, f)
	}
}

// Digest is a short hash of the plan: two runs of one seed show the same digest.
func (p *Plan) Digest() string {
	h := fnv.New64a()
	fmt.Fprintf(h, "%d %s\n", p.Seed, p.Duration)
	for _, g := range p.Groups {
		fmt.Fprintf(h, "%+v\n", g)
	}
	for _, o := range p.Ops {
		fmt.Fprintf(h, "%+v\n", o)
	}
	for _, f := range p.Faults {
		fmt.Fprintf(h, "%+v\n", f)
	}
	return fmt.Sprintf("%016x", h.Sum64())
}

// String lists the plan, for a log.
func (p *Plan) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "plan of seed %d (%s): %d groups, %d operations, %d faults, digest %s\n", p.Seed, p.Duration, len(p.Groups), len(p.Ops), len(p.Faults), p.Digest())
	for _, f := range p.Faults {
		fmt.Fprintf(&b, "  %7.1fs %-24s %s %s share=%.2f %s\n", f.At.Seconds(), f.Kind, f.Target, f.For, f.Share, f.AppendFsync)
	}
	return b.String()
}
