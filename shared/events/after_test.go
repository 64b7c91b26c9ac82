package events

import (
	"context"
	"testing"
)

func TestAfterAnswer(t *testing.T) {
	var ran []string
	var deferred []func()
	ctx := WithAfter(context.Background(), func(fn func()) { deferred = append(deferred, fn) })
	AfterAnswer(ctx, func() { ran = append(ran, "deferred") })
	AfterAnswer(context.Background(), func() { ran = append(ran, "at once") })
	if len(ran) != 1 || ran[0] != "at once" || len(deferred) != 1 {
		t.Fatalf("ran %v with %d deferred, want only the call without a runner run, the other handed to the runner", ran, len(deferred))
	}
	deferred[0]()
	if len(ran) != 2 || ran[1] != "deferred" {
		t.Fatalf("ran %v, want the deferred call run by its runner", ran)
	}
}
