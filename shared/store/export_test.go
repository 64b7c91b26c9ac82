package store

// PreludeLua is the part every job script starts with, for BenchmarkScriptCost.
const PreludeLua = prelude

// QueuedScripts is how many script calls wait for a round trip.
func (s *Store) QueuedScripts() int {
	s.trips.mu.Lock()
	defer s.trips.mu.Unlock()
	return len(s.trips.queue)
}
