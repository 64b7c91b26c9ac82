package ocm

import (
	"testing"

	"k8s.io/client-go/rest"
)

// TestClientLimits: the hub's clients have no client-side limit unless one is configured,
// and a configured one holds for every client.
func TestClientLimits(t *testing.T) {
	tests := map[string]struct {
		qps       float32
		burst     int
		wantLimit bool
		wantQPS   float32
	}{
		"none configured: no client-side limit": {qps: 0},
		"disabled explicitly":                   {qps: -1},
		"a limit, no burst: twice the limit":    {qps: 50, wantLimit: true, wantQPS: 50},
		"a limit and a burst":                   {qps: 50, burst: 7, wantLimit: true, wantQPS: 50},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			h, err := NewHub(&rest.Config{Host: "https://127.0.0.1:1", QPS: tc.qps, Burst: tc.burst})
			if err != nil {
				t.Fatal(err)
			}
			for client, rl := range map[string]interface{ QPS() float32 }{
				"work": limiterOf(h.Work.WorkV1().RESTClient()), "kube": limiterOf(h.Kube.CoreV1().RESTClient()),
			} {
				if got := rl != nil; got != tc.wantLimit {
					t.Fatalf("%s client: limited %v, want %v", client, got, tc.wantLimit)
				}
				if rl != nil && rl.QPS() != tc.wantQPS {
					t.Errorf("%s client: %v per second, want %v", client, rl.QPS(), tc.wantQPS)
				}
			}
			if tc.wantLimit {
				want := tc.burst
				if want == 0 {
					want = int(2 * tc.qps)
				}
				if h.Config.Burst != want {
					t.Errorf("burst %d, want %d", h.Config.Burst, want)
				}
			}
		})
	}
}

func limiterOf(c rest.Interface) interface{ QPS() float32 } {
	rl := c.GetRateLimiter()
	if rl == nil {
		return nil
	}
	return rl
}
