// Package runner runs one level-triggered sync function at a bounded
// frequency.
//
// Informer handlers call Run to say "something changed"; bursts of calls
// coalesce into one sync, two syncs start at least MinInterval apart, a failed
// sync is retried after RetryInterval, and a full sync runs at least every
// MaxInterval even when nothing asks for one. The sync function never runs
// concurrently with itself: every sync happens on the goroutine that called
// Loop.
package runner

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// SyncFunc brings the world in line with the desired state. full is true when
// the caller must not trust any state cached from earlier syncs: on the first
// sync, after a failed sync, and on the periodic (MaxInterval) sync.
type SyncFunc func(ctx context.Context, full bool) error

// Options configures a Runner. Zero or negative durations mean "no bound":
// MinInterval 0 lets syncs run back to back, RetryInterval 0 retries a failed
// sync as soon as MinInterval allows, MaxInterval 0 disables the periodic sync.
type Options struct {
	// MinInterval is the minimum time between the starts of two syncs;
	// bursts of Run() coalesce into one sync.
	MinInterval time.Duration
	// RetryInterval: after a failed sync, the next one runs this long after
	// the failure (or sooner if Run() is called, still respecting
	// MinInterval).
	RetryInterval time.Duration
	// MaxInterval: a full sync runs at least this often, measured from the
	// start of the last full sync. Syncs that were not full do not postpone
	// it.
	MaxInterval time.Duration
	// Clock is the time source; nil means the real clock.
	Clock clock.WithTicker
	// Logger receives one debug line per sync and a warning per failed sync;
	// nil means slog.Default(). Every line carries runner=<name>.
	Logger *slog.Logger
}

// Runner is a coalescing, bounded-frequency runner of one SyncFunc.
type Runner struct {
	name  string
	fn    SyncFunc
	clock clock.WithTicker
	log   *slog.Logger

	// kick holds at most one pending Run request; Run never blocks on it.
	kick chan struct{}
	// reconf holds at most one "intervals changed" notice for Loop.
	reconf chan struct{}

	// mu guards intervals, which SetIntervals changes while Loop reads it.
	mu        sync.Mutex
	intervals intervals

	// waitHook, when set (tests only), is called by Loop just before it
	// blocks, with the time it will wait, or -1 when it waits only for Run,
	// SetIntervals or ctx. It is set before Loop starts and never changes.
	waitHook func(d time.Duration)
}

type intervals struct {
	min, retry, max time.Duration
}

// New returns a Runner that calls fn; name labels its log lines. Nothing runs
// until Loop is called. fn must not be nil.
func New(name string, fn SyncFunc, opts Options) *Runner {
	if fn == nil {
		panic("runner.New: nil SyncFunc for " + name)
	}
	clk := opts.Clock
	if clk == nil {
		clk = clock.RealClock{}
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Runner{
		name:      name,
		fn:        fn,
		clock:     clk,
		log:       log.With("runner", name),
		kick:      make(chan struct{}, 1),
		reconf:    make(chan struct{}, 1),
		intervals: newIntervals(opts.MinInterval, opts.RetryInterval, opts.MaxInterval),
	}
}

func newIntervals(minI, retry, maxI time.Duration) intervals {
	return intervals{min: max(minI, 0), retry: max(retry, 0), max: max(maxI, 0)}
}

// Run requests a sync. It never blocks and is safe from any goroutine,
// including informer event handlers. Any number of calls before a sync starts
// are served by that one sync; a call made while a sync is in progress causes
// exactly one more sync after it.
func (r *Runner) Run() {
	select {
	case r.kick <- struct{}{}:
	default: // a request is already pending; this one joins it
	}
}

// SetIntervals changes the intervals (for example on a config reload). The
// change takes effect for the next wait, including the one Loop is in now.
// Zero or negative values mean what they mean in Options.
func (r *Runner) SetIntervals(minInterval, retryInterval, maxInterval time.Duration) {
	r.mu.Lock()
	r.intervals = newIntervals(minInterval, retryInterval, maxInterval)
	r.mu.Unlock()
	select {
	case r.reconf <- struct{}{}:
	default:
	}
}

func (r *Runner) currentIntervals() intervals {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.intervals
}

// loopState is owned by the Loop goroutine alone, so it needs no lock.
type loopState struct {
	pending   bool      // Run was called since the last sync started
	started   bool      // at least one sync has started
	lastStart time.Time // start of the last sync, for MinInterval
	fullBase  time.Time // start of the last full sync (or of Loop), for MaxInterval
	needFull  bool      // the next sync must be full: first one, or after a failure
	retryAt   time.Time // zero unless the last sync failed
}

// next returns when the next sync is due, and false when nothing is due
// until Run or SetIntervals is called.
func (s *loopState) next(now time.Time, iv intervals) (time.Time, bool) {
	var due time.Time
	ok := false
	consider := func(t time.Time) {
		if !ok || t.Before(due) {
			due, ok = t, true
		}
	}
	if s.pending {
		consider(now)
	}
	if !s.retryAt.IsZero() {
		consider(s.retryAt)
	}
	if iv.max > 0 {
		consider(s.fullBase.Add(iv.max))
	}
	if ok && s.started {
		if earliest := s.lastStart.Add(iv.min); due.Before(earliest) {
			due = earliest
		}
	}
	return due, ok
}

// Loop runs syncs until ctx is done, and returns after the sync in progress
// (if any) has returned. The first sync runs as soon as Loop starts if Run was
// called before, otherwise when Run is first called or after MaxInterval,
// whichever comes first. Call Loop once per Runner.
func (r *Runner) Loop(ctx context.Context) {
	st := loopState{fullBase: r.clock.Now(), needFull: true}
	for ctx.Err() == nil {
		select {
		case <-r.kick:
			st.pending = true
		default:
		}
		select {
		case <-r.reconf: // about to read the intervals anyway
		default:
		}
		iv := r.currentIntervals()
		now := r.clock.Now()
		due, ok := st.next(now, iv)
		if ok && !due.After(now) {
			r.sync(ctx, &st, iv)
			continue
		}
		r.wait(ctx, &st, due, ok, now)
	}
}

// wait blocks until the due time, a Run, a SetIntervals or the end of ctx.
// It holds a timer only while it blocks.
func (r *Runner) wait(ctx context.Context, st *loopState, due time.Time, ok bool, now time.Time) {
	var timerC <-chan time.Time
	d := time.Duration(-1)
	if ok {
		d = due.Sub(now)
		t := r.clock.NewTimer(d)
		defer t.Stop()
		timerC = t.C()
	}
	if r.waitHook != nil {
		r.waitHook(d)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
			if st.pending {
				// Already due as soon as MinInterval allows; another
				// request changes nothing, so keep waiting.
				continue
			}
			st.pending = true
			return
		case <-r.reconf:
			return
		case <-timerC:
			return
		}
	}
}

// sync runs fn once and records the outcome for the scheduling of the next.
func (r *Runner) sync(ctx context.Context, st *loopState, iv intervals) {
	// A request made before this point is served by this sync; one made from
	// here on leaves a token in kick and so causes exactly one more sync.
	select {
	case <-r.kick:
	default:
	}
	st.pending = false

	start := r.clock.Now()
	full := st.needFull || (iv.max > 0 && !start.Before(st.fullBase.Add(iv.max)))
	st.started, st.lastStart = true, start
	if full {
		st.fullBase = start
	}

	err := r.fn(ctx, full)
	elapsed := r.clock.Since(start)
	if err != nil {
		st.needFull = true
		st.retryAt = r.clock.Now().Add(iv.retry)
		if ctx.Err() != nil {
			// Shutting down: the failure is expected and nothing will retry.
			r.log.Debug("sync interrupted", "full", full, "elapsed", elapsed, "err", err)
			return
		}
		r.log.Warn("sync failed", "full", full, "elapsed", elapsed, "retryIn", iv.retry, "err", err)
		return
	}
	st.needFull = false
	st.retryAt = time.Time{}
	r.log.Debug("sync done", "full", full, "elapsed", elapsed)
}
