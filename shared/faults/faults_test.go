package faults

import (
	"context"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	cases := map[string]struct {
		spec    string
		want    map[Point]rule
		wantErr bool
	}{
		"empty":        {spec: "", want: map[Point]rule{}},
		"both":         {spec: "delay-before-apply=0.5:2s, kill-after-apply=0.01", want: map[Point]rule{DelayBeforeApply: {0.5, 2 * time.Second}, KillAfterApply: {probability: 0.01}}},
		"unknown":      {spec: "explode=1", wantErr: true},
		"no value":     {spec: "kill-after-apply", wantErr: true},
		"probability":  {spec: "kill-after-apply=2", wantErr: true},
		"delay needed": {spec: "delay-before-apply=0.5", wantErr: true},
		"bad delay":    {spec: "delay-before-apply=0.5:soon", wantErr: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := parse(tc.spec)
			if (err != nil) != tc.wantErr {
				t.Fatalf("parse(%q) error %v, want error %v", tc.spec, err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if len(got) != len(tc.want) {
				t.Fatalf("parse(%q) = %v, want %v", tc.spec, got, tc.want)
			}
			for p, r := range tc.want {
				if got[p] != r {
					t.Errorf("parse(%q)[%s] = %v, want %v", tc.spec, p, got[p], r)
				}
			}
		})
	}
}

// TestSeeded: the same seed makes the same decisions, so a chaos seed reproduces its faults.
func TestSeeded(t *testing.T) {
	decisions := func(seed int64) []bool {
		in, err := New(Config{Spec: "kill-after-apply=0.3", Seed: seed})
		if err != nil {
			t.Fatal(err)
		}
		var out []bool
		in.kill = func() { out = append(out, true) }
		for range 200 {
			n := len(out)
			in.AfterApply(context.Background(), true)
			if len(out) == n {
				out = append(out, false)
			}
		}
		return out
	}
	a, b := decisions(7), decisions(7)
	kills := 0
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("decision %d differs between two injectors with one seed", i)
		}
		if a[i] {
			kills++
		}
	}
	if kills < 30 || kills > 100 {
		t.Errorf("%d kills in 200 at probability 0.3", kills)
	}
}

func TestOffAndAlways(t *testing.T) {
	in, err := New(Config{})
	if err != nil || in != nil {
		t.Fatalf("no faults configured: injector %v, error %v", in, err)
	}
	in.BeforeApply(context.Background()) // a nil injector injects nothing
	in.AfterApply(context.Background(), true)

	always, err := New(Config{KillAfterApply: true})
	if err != nil {
		t.Fatal(err)
	}
	killed := 0
	always.kill = func() { killed++ }
	always.AfterApply(context.Background(), false)
	always.AfterApply(context.Background(), true)
	if killed != 1 {
		t.Errorf("FAULT_KILL_AFTER_APPLY: %d kills for one applied work and one not, want 1", killed)
	}
	slow, err := New(Config{Spec: "delay-before-apply=1:50ms"})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	slow.BeforeApply(context.Background())
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Errorf("delay-before-apply=1:50ms slept %s", d)
	}
}
