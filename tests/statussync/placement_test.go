package statussync

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"
	clusterv1beta1 "open-cluster-management.io/api/cluster/v1beta1"

	"github.com/ocm-jobs/ocm-jobs/functions/statussync"
	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/ocm"
	"github.com/ocm-jobs/ocm-jobs/shared/platform"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
)

// decisionLists counts the PlacementDecision LISTs a hub client sends.
type decisionLists struct {
	n  atomic.Int64
	rt http.RoundTripper
}

func (d *decisionLists) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/placementdecisions") {
		d.n.Add(1)
	}
	return d.rt.RoundTrip(r)
}

// placementSuite is a status sync function whose hub client counts PlacementDecision LISTs,
// and a namespace of its own for its PlacementDecisions.
type placementSuite struct {
	*suite
	lists *decisionLists
	ns    string
}

func newPlacementSuite(t *testing.T) *placementSuite {
	s := newSuite(t, nil)
	p := &placementSuite{suite: s, lists: &decisionLists{}, ns: "pl-" + uuid.NewString()[:8]}
	cfg := rest.CopyConfig(env.Hub.Config)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { p.lists.rt = rt; return p.lists })
	hub, err := ocm.NewHub(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s.fn, err = statussync.New(context.Background(), s.cfg, platform.Platform{Redis: s.rdb, Store: s.store, Hub: hub, HubID: s.hubID}); err != nil {
		t.Fatal(err)
	}
	if err := env.Hub.EnsureNamespace(t.Context(), p.ns); err != nil {
		t.Fatal(err)
	}
	return p
}

// decide writes the decision of Placement name (as the placement controller would).
func (p *placementSuite) decide(name string, clusters ...string) {
	p.t.Helper()
	ctx := p.t.Context()
	pds := env.Hub.OCM.ClusterV1beta1().PlacementDecisions(p.ns)
	pd, err := pds.Get(ctx, name+"-decision-1", metav1.GetOptions{})
	if err != nil {
		pd, err = pds.Create(ctx, &clusterv1beta1.PlacementDecision{ObjectMeta: metav1.ObjectMeta{Name: name + "-decision-1", Namespace: p.ns,
			Labels: map[string]string{clusterv1beta1.PlacementLabel: name}}}, metav1.CreateOptions{})
		if err != nil {
			p.t.Fatal(err)
		}
	}
	pd.Status.Decisions = nil
	for _, c := range clusters {
		pd.Status.Decisions = append(pd.Status.Decisions, clusterv1beta1.ClusterDecision{ClusterName: c})
	}
	if _, err := pds.UpdateStatus(ctx, pd, metav1.UpdateOptions{}); err != nil {
		p.t.Fatal(err)
	}
}

// group stores a group whose component web runs on the clusters listed (one Created job
// each), bound to Placement name when name is set.
func (p *placementSuite) group(name string, rollout *model.RolloutStrategy, clusters ...string) *model.JobGroup {
	p.t.Helper()
	g := &model.JobGroup{ID: model.NewID(), AppName: "shop"}
	for _, c := range clusters {
		g.Jobs = append(g.Jobs, model.Job{ID: model.NewJobID(g.ID), Component: "web", Namespace: "shop",
			Targets:   &model.Target{ClusterName: c, Orchestrator: model.OCM},
			Manifests: []model.PlainManifest{{YamlString: "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\n"}}})
	}
	if rollout != nil {
		jc := map[string]string{}
		for _, j := range g.Jobs {
			jc[j.ID] = j.Targets.ClusterName
		}
		g.Rollout = model.NewRollout("create-1", "create", *rollout, jc, nil)
	}
	if err := p.store.CreateGroup(p.t.Context(), g, "test"); err != nil {
		p.t.Fatal(err)
	}
	if name != "" {
		if err := p.store.BindPlacements(p.t.Context(), g.ID, map[string]string{"web": p.ns + "/" + name}, nil); err != nil {
			p.t.Fatal(err)
		}
	}
	return g
}

// racingTicks runs two placement ticks at once and sums what they did.
func (p *placementSuite) racingTicks() statussync.PlacementReport {
	p.t.Helper()
	var wg sync.WaitGroup
	reps := make([]statussync.PlacementReport, 2)
	errs := make([]error, 2)
	for i := range reps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, pending := store.WithPending(context.Background())
			reps[i], errs[i] = p.fn.Placements(ctx)
			p.flush(pending)
		}()
	}
	wg.Wait()
	var sum statussync.PlacementReport
	for i, r := range reps {
		if errs[i] != nil {
			p.t.Fatalf("placement tick: %v", errs[i])
		}
		sum.Groups += r.Groups
		sum.Placements += r.Placements
		sum.Added += r.Added
		sum.Dropped += r.Dropped
		sum.Deferred += r.Deferred
	}
	return sum
}

// byCluster lists a group's jobs by cluster.
func (p *placementSuite) jobsOf(id string) map[string][]model.Job {
	p.t.Helper()
	g, err := p.store.GetGroup(p.t.Context(), id)
	if err != nil {
		p.t.Fatal(err)
	}
	out := map[string][]model.Job{}
	for _, j := range g.Jobs {
		out[j.Targets.ClusterName] = append(out[j.Targets.ClusterName], j)
	}
	return out
}

// TestPlacementRacingTicks: two ticks racing on the same decisions add each new cluster's job
// once and drop each gone cluster's job once, with one PlacementDecision LIST per distinct
// Placement per tick however many groups follow it; a group without a Placement is not read,
// and a tick with nothing to follow writes nothing.
func TestPlacementRacingTicks(t *testing.T) {
	p := newPlacementSuite(t)
	p.decide("edge", "cluster1")
	a := p.group("edge", nil, "cluster1")
	b := p.group("edge", nil, "cluster1")
	plain := p.group("", nil, "cluster1")

	p.decide("edge", "cluster1", "cluster2")
	before := p.lists.n.Load()
	rep := p.racingTicks()
	if lists := p.lists.n.Load() - before; lists != 2 {
		t.Errorf("%d PlacementDecision LISTs for two ticks, want one per tick (one Placement)", lists)
	}
	if rep.Added != 2 || rep.Placements != 2 {
		t.Errorf("racing ticks: %s; want 2 jobs added in all (one per group), 1 placement listed per tick", rep)
	}
	for _, g := range []*model.JobGroup{a, b} {
		js := p.jobsOf(g.ID)
		if len(js["cluster1"]) != 1 || len(js["cluster2"]) != 1 {
			t.Errorf("group %s: %v, want one job on each cluster", g.ID, js)
		}
		if j := js["cluster2"][0]; j.Type != model.CreateDeployment || j.State != model.Created || len(p.get(j.ID).Manifests) != 1 {
			t.Errorf("new job %+v, want a Created CreateDeployment with the component's manifests", j)
		}
	}
	if js := p.jobsOf(plain.ID); len(js) != 1 || len(js["cluster1"]) != 1 {
		t.Errorf("the group without a Placement changed: %v", js)
	}

	// Nothing changed: a tick reads, lists once and writes nothing.
	writes := p.cmds.writes()
	rep = p.racingTicks()
	if rep.Added+rep.Dropped != 0 || p.cmds.writes() != writes {
		t.Errorf("a tick with nothing to follow did %s and %d writes", rep, p.cmds.writes()-writes)
	}

	// cluster1 leaves: its jobs are dropped once each (never promoted: finished at once).
	p.decide("edge", "cluster2")
	rep = p.racingTicks()
	if rep.Dropped != 2 {
		t.Errorf("racing ticks: %s; want 2 jobs dropped in all", rep)
	}
	for _, g := range []*model.JobGroup{a, b} {
		j := p.jobsOf(g.ID)["cluster1"][0]
		if j.Type != model.DeleteDeployment || j.State != model.Finished {
			t.Errorf("dropped job %+v, want a finished DeleteDeployment", j)
		}
		h, err := p.store.History(t.Context(), j.ID)
		if err != nil {
			t.Fatal(err)
		}
		reopens := 0
		for _, e := range h {
			if strings.Contains(e.Why, "left the decision") {
				reopens++
			}
		}
		if reopens != 1 {
			t.Errorf("job %s re-opened %d times by the Placement, want once: %+v", j.ID, reopens, h)
		}
	}

	// cluster1 comes back: a new job beside the undeployed one.
	p.decide("edge", "cluster1", "cluster2")
	if rep = p.racingTicks(); rep.Added != 2 {
		t.Errorf("racing ticks: %s; want 2 jobs added", rep)
	}
	for _, g := range []*model.JobGroup{a, b} {
		if js := p.jobsOf(g.ID); len(js["cluster1"]) != 2 {
			t.Errorf("group %s on cluster1: %v, want the undeployed job and a new one", g.ID, js["cluster1"])
		}
	}
}

// TestPlacementWaitsForRollout: a cluster that joins the decision of a group whose rollout is
// rolling waits until the rollout ends (a wave of its own after it).
func TestPlacementWaitsForRollout(t *testing.T) {
	p := newPlacementSuite(t)
	one := intstr.FromInt32(1)
	p.decide("waves", "cluster1", "cluster2")
	g := p.group("waves", &model.RolloutStrategy{Strategy: model.RolloutProgressive, MaxConcurrency: &one}, "cluster1", "cluster2")
	p.decide("waves", "cluster1", "cluster2", "cluster3")
	if rep := p.racingTicks(); rep.Added != 0 || rep.Deferred != 2 {
		t.Errorf("during the rollout: %s; want nothing added, the group deferred by both ticks", rep)
	}
	if js := p.jobsOf(g.ID); len(js["cluster3"]) != 0 {
		t.Errorf("cluster3 got a job during the rollout: %v", js)
	}
	// The rollout ends: the next tick gives cluster3 its job.
	read, err := p.store.GetRollout(t.Context(), g.ID)
	if err != nil {
		t.Fatal(err)
	}
	done := *read.Rollout
	done.Phase = model.RolloutComplete
	if _, err := p.store.AdvanceRollout(t.Context(), read, &done, nil); err != nil {
		t.Fatal(err)
	}
	if rep := p.racingTicks(); rep.Added != 1 {
		t.Errorf("after the rollout: %s; want cluster3's job added once", rep)
	}
	if js := p.jobsOf(g.ID); len(js["cluster3"]) != 1 {
		t.Errorf("cluster3 after the rollout: %v", js)
	}
}

// TestPlacementTickCost: a tick over many groups following one Placement, with nothing to
// change, costs one PlacementDecision LIST and three Redis round trips whatever the number of
// groups (the index, the bindings with their job ids, the jobs without manifests); the groups
// without a Placement cost nothing; it writes nothing. Counts, not times: the figures
// are logged.
func TestPlacementTickCost(t *testing.T) {
	p := newPlacementSuite(t)
	const bound, plain = 40, 40
	p.decide("many", "cluster1", "cluster2")
	for range bound {
		p.group("many", nil, "cluster1", "cluster2")
	}
	for range plain {
		p.group("", nil, "cluster1")
	}
	// The first tick warms the client's connections; the second is measured.
	if _, err := p.fn.Placements(context.Background()); err != nil {
		t.Fatal(err)
	}
	lists, trips, writes := p.lists.n.Load(), p.cmds.roundTrips.Load(), p.cmds.writes()
	rep, err := p.fn.Placements(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	lists, trips, writes = p.lists.n.Load()-lists, p.cmds.roundTrips.Load()-trips, p.cmds.writes()-writes
	t.Logf("placement tick over %d bound groups (+%d without a Placement): %d PlacementDecision LIST, %d Redis round trips, %d writes; %s",
		bound, plain, lists, trips, writes, rep)
	if lists != 1 || rep.Groups != bound {
		t.Errorf("%d LISTs over %d groups, want 1 over %d", lists, rep.Groups, bound)
	}
	if trips != 3 || writes != 0 {
		t.Errorf("%d round trips and %d writes, want 3 and 0", trips, writes)
	}
}
