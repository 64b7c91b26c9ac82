package events

import "context"

type afterKey struct{}

// WithAfter returns ctx carrying run, which the process uses to run work off an event's
// answer: the answer goes out without waiting for it (see AfterAnswer).
func WithAfter(ctx context.Context, run func(fn func())) context.Context {
	return context.WithValue(ctx, afterKey{}, run)
}

// AfterAnswer runs fn off the answer to the event being handled, with ctx's runner (the
// process counts it, so a graceful stop waits for it), or at once when ctx has none. What
// runs there must be something the sender need not wait for: its loss, if the process dies
// first, is recovered some other way.
func AfterAnswer(ctx context.Context, fn func()) {
	if run, ok := ctx.Value(afterKey{}).(func(func())); ok && run != nil {
		run(fn)
		return
	}
	fn()
}
