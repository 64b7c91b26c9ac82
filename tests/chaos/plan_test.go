package chaos

import (
	"testing"
	"time"
)

// TestPlanReproducible: a seed makes the same plan every time, another seed another plan,
// and even the short run meets every kind of outside fault.
func TestPlanReproducible(t *testing.T) {
	a, b := NewPlan(7, 30, 45*time.Second), NewPlan(7, 30, 45*time.Second)
	if a.Digest() != b.Digest() {
		t.Errorf("seed 7 made two plans: %s and %s", a.Digest(), b.Digest())
	}
	if c := NewPlan(8, 30, 45*time.Second); c.Digest() == a.Digest() {
		t.Error("seeds 7 and 8 made the same plan")
	}
	kinds := map[FaultKind]bool{}
	for _, f := range a.Faults {
		kinds[f.Kind] = true
	}
	for _, w := range faultWeights {
		if !kinds[w.kind] {
			t.Errorf("the 45s plan has no %s fault", w.kind)
		}
	}
	creates := 0
	for _, op := range a.Ops {
		if op.Kind == OpCreate {
			creates++
		}
		if op.At < 0 || op.At > a.Duration {
			t.Errorf("op %+v outside the run", op)
		}
	}
	if creates != 30 {
		t.Errorf("%d creates for 30 groups", creates)
	}
}
