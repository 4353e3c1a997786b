package runner

import (
	"context"
	"sync"
	"testing"
	"time"
)

const (
	minI  = 10 * time.Second
	retry = 30 * time.Second
	maxI  = time.Hour
)

// runConcurrently calls r.Run n times from n goroutines and returns when all
// calls have returned.
func runConcurrently(r *Runner, n int) {
	var wg sync.WaitGroup
	for range n {
		wg.Go(r.Run)
	}
	wg.Wait()
}

func TestCoalesceBeforeLoop(t *testing.T) {
	h := newHarness(t, minI, retry, maxI)
	runConcurrently(h.r, 100)
	h.start()
	h.syncReturns(0, true, nil)
	// Nothing is pending: the next thing due is the periodic sync.
	h.expectWait(maxI)
}

func TestCoalesceWhileWaiting(t *testing.T) {
	h := newHarness(t, minI, retry, maxI)
	h.r.Run()
	h.start()
	h.syncReturns(0, true, nil)
	h.expectWait(maxI)

	runConcurrently(h.r, 100)
	h.expectWait(minI) // pending, held back by MinInterval
	h.clk.Step(minI)
	h.syncReturns(minI, false, nil)
	h.expectWait(maxI - minI)
}

func TestMinInterval(t *testing.T) {
	h := newHarness(t, minI, retry, maxI)
	h.r.Run()
	h.start()
	h.syncReturns(0, true, nil)
	h.expectWait(maxI)

	h.r.Run()
	h.expectWait(minI)
	h.clk.Step(minI / 2)
	h.clk.Step(minI / 2)
	h.syncReturns(minI, false, nil) // not at t0+5s
	h.expectWait(maxI - minI)

	// A request long after the last sync runs at once.
	h.clk.Step(3 * minI)
	h.r.Run()
	h.syncReturns(4*minI, false, nil)
	h.expectWait(maxI - 4*minI)
}

func TestRetryAfterError(t *testing.T) {
	h := newHarness(t, minI, retry, maxI)
	h.r.Run()
	h.start()
	h.syncReturns(0, true, errSync)
	h.expectWait(retry)
	h.clk.Step(retry)
	h.syncReturns(retry, true, nil) // full after a failure
	h.expectWait(maxI)              // periodic clock restarts at that full sync

	// Fail again, then ask before the retry is due: the sync comes sooner
	// but not before MinInterval, and it is still full.
	h.clk.Step(minI)
	h.r.Run()
	h.syncReturns(retry+minI, false, errSync)
	h.expectWait(retry)
	h.r.Run()
	h.expectWait(minI)
	h.clk.Step(minI)
	h.syncReturns(retry+2*minI, true, nil)
	h.expectWait(maxI)
}

func TestRetryZeroRespectsMinInterval(t *testing.T) {
	h := newHarness(t, minI, 0, maxI)
	h.r.Run()
	h.start()
	h.syncReturns(0, true, errSync)
	h.expectWait(minI)
	h.clk.Step(minI)
	h.syncReturns(minI, true, nil)
	h.expectWait(maxI)
}

func TestPeriodicFullSync(t *testing.T) {
	h := newHarness(t, minI, retry, maxI)
	h.start() // no Run: the first sync is the periodic one
	h.expectWait(maxI)
	h.clk.Step(maxI)
	h.syncReturns(maxI, true, nil)
	h.expectWait(maxI)

	// A partial sync does not postpone the next full one.
	h.r.Run()
	h.expectWait(minI)
	h.clk.Step(minI)
	h.syncReturns(maxI+minI, false, nil)
	h.expectWait(maxI - minI)
	h.clk.Step(maxI - minI)
	h.syncReturns(2*maxI, true, nil)
	h.expectWait(maxI)
}

func TestNoMaxIntervalWaitsForRun(t *testing.T) {
	h := newHarness(t, minI, retry, 0)
	h.start()
	h.expectWait(-1)
	h.r.Run()
	h.syncReturns(0, true, nil)
	h.expectWait(-1)
}

func TestRunDuringSync(t *testing.T) {
	h := newHarness(t, 0, retry, maxI)
	h.r.Run()
	h.start()
	c := h.expectSync(0, true)
	runConcurrently(h.r, 5)
	c.reply <- nil
	h.syncReturns(0, false, nil) // exactly one more
	h.expectWait(maxI)
}

func TestRunDuringSyncWithMinInterval(t *testing.T) {
	h := newHarness(t, minI, retry, maxI)
	h.r.Run()
	h.start()
	c := h.expectSync(0, true)
	runConcurrently(h.r, 5)
	c.reply <- nil
	h.expectWait(minI)
	h.clk.Step(minI)
	h.syncReturns(minI, false, nil)
	h.expectWait(maxI - minI)
}

func TestSetIntervals(t *testing.T) {
	h := newHarness(t, minI, retry, maxI)
	h.start()
	h.expectWait(maxI)

	// The wait in progress is recomputed with the new intervals.
	h.r.SetIntervals(2*time.Second, 5*time.Second, time.Minute)
	h.expectWait(time.Minute)
	h.clk.Step(time.Minute)
	h.syncReturns(time.Minute, true, errSync)
	h.expectWait(5 * time.Second)
	h.clk.Step(5 * time.Second)
	h.syncReturns(time.Minute+5*time.Second, true, nil)
	h.expectWait(time.Minute)
	h.r.Run()
	h.expectWait(2 * time.Second)
	h.clk.Step(2 * time.Second)
	h.syncReturns(time.Minute+7*time.Second, false, nil)
	h.expectWait(time.Minute - 2*time.Second)

	// Zero (and negative) values remove the bounds.
	h.r.SetIntervals(0, -time.Second, 0)
	h.expectWait(-1)
	h.r.Run()
	h.syncReturns(time.Minute+7*time.Second, false, nil)
	h.expectWait(-1)
}

func TestSetIntervalsBeforeLoop(t *testing.T) {
	h := newHarness(t, minI, retry, maxI)
	h.r.SetIntervals(minI, retry, time.Minute)
	h.start()
	h.expectWait(time.Minute)
}

func TestCancelWhileWaiting(t *testing.T) {
	h := newHarness(t, minI, retry, maxI)
	h.r.Run()
	h.start()
	h.syncReturns(0, true, nil)
	h.expectWait(maxI)
	h.cancel()
	h.expectDone()
}

func TestCancelDuringSync(t *testing.T) {
	h := newHarness(t, 0, retry, maxI)
	h.r.Run()
	h.start()
	c := h.expectSync(0, true)
	h.r.Run() // would cause another sync, but Loop is stopping
	h.cancel()
	if c.ctx.Err() == nil {
		t.Fatal("sync context not cancelled with Loop's context")
	}
	c.reply <- c.ctx.Err()
	h.expectDone()
}

func TestCancelBeforeLoop(t *testing.T) {
	h := newHarness(t, minI, retry, maxI)
	h.r.Run()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	h.r.Loop(ctx) // returns without syncing: h.calls has no reader
}

// TestRealClock covers the default clock: a requested first sync runs at
// once, and Loop returns when the sync cancels its context.
func TestRealClock(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var calls []bool
	r := New("real", func(_ context.Context, full bool) error {
		calls = append(calls, full)
		cancel()
		return nil
	}, Options{MinInterval: time.Hour, MaxInterval: time.Hour})
	r.Run()
	r.Loop(ctx)
	if len(calls) != 1 || !calls[0] {
		t.Fatalf("syncs = %v, want one full sync", calls)
	}
}

func TestNewNilFuncPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("New with a nil SyncFunc did not panic")
		}
	}()
	New("nil", nil, Options{})
}
