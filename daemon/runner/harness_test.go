package runner

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// The harness runs Loop in lockstep with the test. The sync function and the
// wait hook both hand an event to the test over an unbuffered channel and
// block until the test takes it (and, for a sync, answers it). Loop is
// single-threaded, so its events form one ordered sequence that the test reads
// with expectSync and expectWait; nothing depends on goroutine scheduling.
// Tests call Run, SetIntervals and Step only while Loop is parked in such a
// hand-over or blocked in its select, never racing a decision it is making.
// A wait event is sent after Loop armed its timer, so a Step made after
// expectWait always reaches that timer.

// failAfter bounds how long the test waits for an event before failing; it is
// a deadline for a hung Loop, not a sleep that the tests rely on.
const failAfter = 10 * time.Second

var (
	t0      = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	errSync = errors.New("sync failed on purpose")
)

type syncCall struct {
	at    time.Time // fake-clock time when the sync started
	full  bool
	ctx   context.Context
	reply chan error
}

type harness struct {
	t      *testing.T
	clk    *clocktesting.FakeClock
	r      *Runner
	calls  chan syncCall
	waits  chan time.Duration
	cancel context.CancelFunc
	done   chan struct{} // closed when Loop returns
}

func newHarness(t *testing.T, minI, retry, maxI time.Duration) *harness {
	t.Helper()
	h := &harness{
		t:     t,
		clk:   clocktesting.NewFakeClock(t0),
		calls: make(chan syncCall),
		waits: make(chan time.Duration),
		done:  make(chan struct{}),
	}
	fn := func(ctx context.Context, full bool) error {
		c := syncCall{at: h.clk.Now(), full: full, ctx: ctx, reply: make(chan error)}
		h.calls <- c
		return <-c.reply
	}
	h.r = New("test", fn, Options{
		MinInterval:   minI,
		RetryInterval: retry,
		MaxInterval:   maxI,
		Clock:         h.clk,
		Logger:        slog.New(slog.DiscardHandler),
	})
	h.r.waitHook = func(d time.Duration) { h.waits <- d }
	t.Cleanup(h.stop)
	return h
}

// start runs Loop in a goroutine.
func (h *harness) start() {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() {
		defer close(h.done)
		h.r.Loop(ctx)
	}()
}

// stop cancels Loop and answers whatever it still hands over until it
// returns, so no goroutine outlives the test.
func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	timeout := time.After(failAfter)
	for {
		select {
		case c := <-h.calls:
			c.reply <- nil
		case <-h.waits:
		case <-h.done:
			return
		case <-timeout:
			h.t.Error("Loop did not return after its context was cancelled")
			return
		}
	}
}

// expectSync takes the next event, which must be a sync started at t0+at with
// the given full flag. The sync stays in progress until the test answers it.
func (h *harness) expectSync(at time.Duration, full bool) syncCall {
	h.t.Helper()
	select {
	case c := <-h.calls:
		if want := t0.Add(at); !c.at.Equal(want) || c.full != full {
			h.t.Fatalf("sync at t0+%v full=%v, want t0+%v full=%v", c.at.Sub(t0), c.full, at, full)
		}
		return c
	case d := <-h.waits:
		h.t.Fatalf("Loop waits %v, want a sync at t0+%v full=%v", d, at, full)
	case <-h.done:
		h.t.Fatalf("Loop returned, want a sync at t0+%v", at)
	case <-time.After(failAfter):
		h.t.Fatalf("no sync within %v, want one at t0+%v", failAfter, at)
	}
	return syncCall{}
}

// syncReturns expects a sync and answers it with err.
func (h *harness) syncReturns(at time.Duration, full bool, err error) {
	h.t.Helper()
	h.expectSync(at, full).reply <- err
}

// expectWait takes the next event, which must be Loop about to wait d
// (-1: wait with no timer).
func (h *harness) expectWait(d time.Duration) {
	h.t.Helper()
	select {
	case got := <-h.waits:
		if got != d {
			h.t.Fatalf("Loop waits %v, want %v", got, d)
		}
	case c := <-h.calls:
		h.t.Fatalf("sync at t0+%v full=%v, want Loop to wait %v", c.at.Sub(t0), c.full, d)
	case <-h.done:
		h.t.Fatalf("Loop returned, want it to wait %v", d)
	case <-time.After(failAfter):
		h.t.Fatalf("Loop did not wait within %v, want a wait of %v", failAfter, d)
	}
}

// expectDone waits for Loop to return, failing on any other event.
func (h *harness) expectDone() {
	h.t.Helper()
	select {
	case <-h.done:
	case c := <-h.calls:
		h.t.Fatalf("sync at t0+%v full=%v, want Loop to return", c.at.Sub(t0), c.full)
	case d := <-h.waits:
		h.t.Fatalf("Loop waits %v, want it to return", d)
	case <-time.After(failAfter):
		h.t.Fatalf("Loop did not return within %v", failAfter)
	}
}
