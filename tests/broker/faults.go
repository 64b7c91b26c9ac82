package broker

import (
	"math/rand"
	"sync"
	"time"
)

// Faults are the delivery faults a chaos run turns on in the broker: deliveries made twice
// (redelivery, as at-least-once allows) and delayed by a random time (so events overtake each
// other), and, during fault windows, a share of publishes and delivery attempts refused with
// 503 (the subscriber never sees them; the sender retries) and a share of deliveries dropped
// (lost for that Trigger, as a broker that loses a message would). Every decision is drawn
// from one source seeded by the run, so a seed reproduces them as far as the order of
// deliveries does. A nil *Faults injects nothing.
type Faults struct {
	// Duplicate is the share of deliveries made twice.
	Duplicate float64
	// MaxDelay delays every delivery by a random time up to it.
	MaxDelay time.Duration

	mu     sync.Mutex
	rnd    *rand.Rand
	refuse float64
	drop   float64
	counts FaultCounts
}

// FaultCounts count the faults injected so far.
type FaultCounts struct {
	// Refused counts publishes and delivery attempts answered 503 by the broker itself.
	Refused int
	// Dropped counts deliveries lost.
	Dropped int
	// Duplicated counts deliveries made a second time.
	Duplicated int
}

// NewFaults returns delivery faults drawn from seed: duplicate is the share of deliveries
// made twice, maxDelay the longest random delay of a delivery.
func NewFaults(seed int64, duplicate float64, maxDelay time.Duration) *Faults {
	return &Faults{Duplicate: duplicate, MaxDelay: maxDelay, rnd: rand.New(rand.NewSource(seed))}
}

// SetRefuse sets the share of publishes and delivery attempts refused (0 ends a window).
func (f *Faults) SetRefuse(share float64) {
	f.mu.Lock()
	f.refuse = share
	f.mu.Unlock()
}

// SetDrop sets the share of deliveries dropped (0 ends a window).
func (f *Faults) SetDrop(share float64) {
	f.mu.Lock()
	f.drop = share
	f.mu.Unlock()
}

// Counts returns the faults injected so far.
func (f *Faults) Counts() FaultCounts {
	if f == nil {
		return FaultCounts{}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counts
}

// draw reports whether an event of probability p happens, counting it with count.
func (f *Faults) draw(p func(*Faults) float64, count func(*FaultCounts)) bool {
	if f == nil {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if pr := p(f); pr > 0 && f.rnd.Float64() < pr {
		count(&f.counts)
		return true
	}
	return false
}

func (f *Faults) refused() bool {
	return f.draw(func(f *Faults) float64 { return f.refuse }, func(c *FaultCounts) { c.Refused++ })
}

func (f *Faults) dropped() bool {
	return f.draw(func(f *Faults) float64 { return f.drop }, func(c *FaultCounts) { c.Dropped++ })
}

func (f *Faults) duplicated() bool {
	return f.draw(func(f *Faults) float64 { return f.Duplicate }, func(c *FaultCounts) { c.Duplicated++ })
}

// delay is how long to hold a delivery back.
func (f *Faults) delay() time.Duration {
	if f == nil || f.MaxDelay <= 0 {
		return 0
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return time.Duration(f.rnd.Int63n(int64(f.MaxDelay)))
}
