package function

import (
	"slices"
	"sync"
	"testing"
)

// TestAfterEvent: what an event's handlers leave for after the answer runs once the event is
// handled, all of it, in the order it was left, and a graceful stop waits for it; what is
// left later still runs.
func TestAfterEvent(t *testing.T) {
	f := &Function{}
	var (
		mu  sync.Mutex
		ran []int
	)
	piece := func(i int) func() {
		return func() {
			mu.Lock()
			ran = append(ran, i)
			mu.Unlock()
		}
	}
	a := &afterEvent{f: f}
	for i := 1; i <= 3; i++ {
		a.add(piece(i))
	}
	mu.Lock()
	if len(ran) != 0 {
		t.Fatalf("ran %v before the event was handled", ran)
	}
	mu.Unlock()
	a.run()
	a.add(piece(4))
	f.after.Wait()
	// 4 was left after the others went: it runs on its own, in any order with them.
	got := slices.DeleteFunc(slices.Clone(ran), func(i int) bool { return i == 4 })
	if !slices.Equal(got, []int{1, 2, 3}) || len(ran) != 4 {
		t.Errorf("ran %v, want 1, 2, 3 in that order, and 4", ran)
	}
	(&afterEvent{f: f}).run() // nothing left: nothing runs, nothing counted
	f.after.Wait()
}
