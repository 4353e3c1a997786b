package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nodenet/nodenet/test/harness"
)

// The probe: a fresh TCP connect from the client pod every probeEvery,
// each given dialTimeout. A SYN a policy drops is retransmitted only after
// 1 s, so a connect that fails within dialTimeout was denied when it
// started, one that succeeds was allowed.
const (
	probeEvery  = 2 * time.Millisecond
	dialTimeout = 100 * time.Millisecond
	confirm     = 5 // probes in a row that must agree before a flip counts
)

// dialOnce connects from src to addr and closes with a RST (linger 0: no
// TIME_WAIT, the client never runs out of ports).
func dialOnce(src *harness.NS, addr string, timeout time.Duration) error {
	return src.Do(func() error {
		c, err := net.DialTimeout("tcp", addr, timeout)
		if err != nil {
			return err
		}
		_ = c.(*net.TCPConn).SetLinger(0)
		return c.Close()
	})
}

type outcome struct {
	start time.Time
	ok    bool
}

// waitFlip probes addr from src until the outcome is want (true: the
// connect succeeds) for good, and returns the start of the first probe of
// that final run of wanted outcomes less since: how long after since the
// change was enforced, within probeEvery. It gives up after limit.
func waitFlip(ctx context.Context, src *harness.NS, addr string, want bool, since time.Time, limit time.Duration) (time.Duration, error) {
	results := make(chan outcome, 1024)
	var inflight sync.WaitGroup
	var all []outcome
	defer func() {
		inflight.Wait()
		close(results)
	}()
	tick := time.NewTicker(probeEvery)
	defer tick.Stop()
	streak := 0
	for {
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case r := <-results:
			all = append(all, r)
			if r.ok != want {
				streak = 0
				continue
			}
			if streak++; streak < confirm {
				continue
			}
			// Every probe started before these has to be in too.
			if d, ok := settle(&inflight, results, &all, want, since); ok {
				return d, nil
			}
			streak = 0
		case <-tick.C:
			if time.Since(since) > limit {
				return 0, fmt.Errorf("not enforced within %s (connect to %s should %s)", limit, addr, map[bool]string{true: "succeed", false: "fail"}[want])
			}
			inflight.Add(1)
			go func() {
				defer inflight.Done()
				start := time.Now()
				results <- outcome{start, dialOnce(src, addr, dialTimeout) == nil}
			}()
		}
	}
}

// settle waits for the probes in flight, then looks for the first start
// after the last unwanted outcome; it needs confirm wanted ones there.
func settle(inflight *sync.WaitGroup, results chan outcome, all *[]outcome, want bool, since time.Time) (time.Duration, bool) {
	done := make(chan struct{})
	go func() { inflight.Wait(); close(done) }()
	for waiting := true; waiting; {
		select {
		case r := <-results:
			*all = append(*all, r)
		case <-done:
			waiting = false
		}
	}
	for len(results) > 0 {
		*all = append(*all, <-results)
	}
	s := slices.Clone(*all)
	slices.SortFunc(s, func(a, b outcome) int { return a.start.Compare(b.start) })
	last := -1
	for i, r := range s {
		if r.ok != want {
			last = i
		}
	}
	if len(s)-last-1 < confirm {
		return 0, false
	}
	return max(0, s[last+1].start.Sub(since)), true
}

// connRate opens new connections from src to addr with workers in
// parallel for d and returns the rate and the failures.
func connRate(ctx context.Context, src *harness.NS, addr string, workers int, d time.Duration) (float64, int64, error) {
	if err := dialOnce(src, addr, 2*time.Second); err != nil {
		return 0, 0, fmt.Errorf("connect to %s before timing: %w", addr, err)
	}
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, workers)
	start := time.Now()
	deadline := start.Add(d)
	for w := range workers {
		wg.Go(func() {
			errs[w] = src.Do(func() error {
				for time.Now().Before(deadline) && ctx.Err() == nil {
					c, err := net.DialTimeout("tcp", addr, 2*time.Second)
					if err != nil {
						failed.Add(1)
						continue
					}
					_ = c.(*net.TCPConn).SetLinger(0)
					_ = c.Close()
					ok.Add(1)
				}
				return nil
			})
		})
	}
	wg.Wait()
	if err := errors.Join(append(errs, ctx.Err())...); err != nil {
		return 0, 0, err
	}
	return float64(ok.Load()) / time.Since(start).Seconds(), failed.Load(), nil
}
