package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nodenet/nodenet/test/bench/internal/benchkit"
	"github.com/nodenet/nodenet/test/harness"
)

// result is what one agent's run at one size measured.
type result struct {
	services    int
	cold        time.Duration // start → last Service's chain in the kernel
	coldNote    string        // set when the DNAT count lagged the chain
	timedOut    bool          // not programmed within opts.syncTimeout: cold is a lower bound, nothing else ran
	lat         []time.Duration
	latLost     int           // changes not measured: one was not programmed within changeTimeout
	queryCost   time.Duration // p50 of one endpoint-chain query during the latency phase
	cps         float64       // new connections/s to the target ClusterIP
	connErrs    int64
	stats       benchkit.ProcStats
	load        string             // /proc/loadavg's 1-minute average at the end of the run
	restoreFull time.Duration      // iptables-restore of the agent's nat table into an empty netns
	restoreOne  time.Duration      // iptables-restore --noflush of one unchanged chain, the ruleset in place
	diagErr     error              // why restoreFull or restoreOne is missing
	syncs       map[string]syncSum // the agent's syncs by kind (its own metrics), at the end of the run
	coldSyncs   map[string]syncSum // the same when the cold start was seen
}

type bench struct {
	opts    options
	cp      *harness.ControlPlane
	objs    *objects
	agents  []*agent
	scratch int // scratch namespaces made, for their names
}

// runAgent starts a on a fresh node with the objects as they are, times
// its cold start, runs the requested phases and removes the node.
func (b *bench) runAgent(ctx context.Context, a *agent, size int, latency, conns bool) (r result, err error) {
	r.services = size
	n, err := b.cp.AddNode(ctx, a.key+strconv.Itoa(size))
	if err != nil {
		return r, err
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		err = errors.Join(err, n.Remove(rctx))
	}()
	svc, ep := b.objs.last()
	start := time.Now()
	p, err := a.start(n)
	if err != nil {
		return r, err
	}
	if b.opts.profileDir != "" && a.cpuProfile != nil {
		// The cold start's CPU profile, saved in the background.
		go func() {
			prof, err := a.cpuProfile(n, b.opts.coldProfile)
			if err == nil {
				path := filepath.Join(b.opts.profileDir, fmt.Sprintf("cpu-%s-%d-cold.pb.gz", a.key, size))
				err = os.WriteFile(path, prof, 0o644)
			}
			if err != nil {
				fmt.Fprintf(stderr, "  %s CPU profile: %v\n", a.name, err)
			}
		}()
	}
	defer func() {
		if serr := p.Stop(30 * time.Second); serr != nil {
			err = errors.Join(err, fmt.Errorf("stop %s: %w", a.name, serr))
		}
		if err != nil {
			fmt.Fprintf(stderr, "==== %s log (tail)\n%s\n", a.name, p.Tail(30))
		}
	}()
	for q := time.Now(); !a.programmed(n.NS, svc, ep); q = time.Now() {
		if p.Exited() {
			return r, fmt.Errorf("%s exited: %v\n%s", a.name, p.ExitErr(), p.Tail(30))
		}
		if time.Since(start) > b.opts.syncTimeout {
			// A result, not an error: report it and go on without the
			// phases that need the rules.
			r.cold, r.timedOut = time.Since(start), true
			fmt.Fprintf(stderr, "  %s, %d services: not programmed after %s, giving up on this run\n", a.name, size, b.opts.syncTimeout)
			return r, b.finish(a, n, p, &r)
		}
		// At least 10 ms, and never more than half a core on polling.
		if err := sleep(ctx, max(10*time.Millisecond, time.Since(q))); err != nil {
			return r, err
		}
	}
	r.cold = time.Since(start)
	// Verify the whole ruleset, untimed unless it lags. iptables-nft-save
	// of a huge ruleset that changes meanwhile can crash: retry, and
	// report (not fail) if it never works.
	want, failures := b.objs.endpoints(), 0
	for {
		got, err := a.countDNAT(n.NS)
		if err != nil {
			if failures++; failures < 2 {
				continue
			}
			r.coldNote = fmt.Sprintf("whole-ruleset check failed twice, last: %.200s", err)
			break
		}
		if got == want {
			break
		}
		if got > want || time.Since(start) > b.opts.syncTimeout {
			return r, fmt.Errorf("%s: %d endpoints DNATed to, want %d", a.name, got, want)
		}
		r.cold = time.Since(start)
		r.coldNote = fmt.Sprintf("DNAT count lagged: %d of %d when the last chain appeared", got, want)
	}
	fmt.Fprintf(stderr, "  %s, %d services: cold start %.2fs\n", a.name, size, r.cold.Seconds())
	b.saveHeap(a, n, size, "cold")
	// The agent records its first sync once the whole sync returned, a
	// little after the rules are in.
	for a.syncs != nil && r.coldSyncs["full"].count == 0 && time.Since(start) < b.opts.syncTimeout {
		if r.coldSyncs, err = a.syncs(n); err != nil {
			return r, err
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return r, err
		}
	}
	if latency {
		if err := b.latency(ctx, a, n, &r); err != nil {
			return r, err
		}
	}
	if conns {
		if err := b.connections(ctx, n, &r); err != nil {
			return r, err
		}
	}
	if err := b.finish(a, n, p, &r); err != nil {
		return r, err
	}
	// Stopped, its rules stay: what applying them costs without the agent.
	// Diagnostics only: a failure is reported, not fatal.
	if latency && a.iptables {
		var derrs []error
		var derr error
		r.restoreFull, derr = b.restoreCost(ctx, n)
		derrs = append(derrs, derr)
		r.restoreOne, derr = restoreOneChain(ctx, a, n, fillerName(b.objs.count()/2), b.objs.lastChanged())
		if r.diagErr = errors.Join(append(derrs, derr)...); r.diagErr != nil {
			fmt.Fprintf(stderr, "  %s: restore diagnostics: %v\n", a.name, r.diagErr)
		}
	}
	return r, nil
}

// finish records the agent's CPU, memory and sync metrics, and stops it.
func (b *bench) finish(a *agent, n *harness.Node, p *harness.Proc, r *result) error {
	var err error
	if r.stats, err = benchkit.ReadProcStats(p.Pid()); err != nil {
		return err
	}
	b.saveHeap(a, n, r.services, "end")
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		r.load = strings.Fields(string(la))[0]
	}
	if a.syncs != nil {
		if r.syncs, err = a.syncs(n); err != nil && !r.timedOut {
			return err
		}
	}
	if err := p.Stop(30 * time.Second); err != nil {
		return fmt.Errorf("stop %s: %w", a.name, err)
	}
	return nil
}

// saveHeap writes a's heap profile to the -profile directory, if one was
// given; a failure is reported, not fatal (it is a diagnostic).
func (b *bench) saveHeap(a *agent, n *harness.Node, size int, when string) {
	if b.opts.profileDir == "" || a.heapProfile == nil {
		return
	}
	if status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", n.Daemon.Pid())); err == nil {
		for line := range strings.Lines(string(status)) {
			if strings.HasPrefix(line, "VmHWM") || strings.HasPrefix(line, "RssAnon") || strings.HasPrefix(line, "RssFile") {
				fmt.Fprintf(stderr, "  %s %s: %s", a.name, when, line)
			}
		}
	}
	prof, err := a.heapProfile(n)
	if err == nil {
		path := filepath.Join(b.opts.profileDir, fmt.Sprintf("heap-%s-%d-%s.pb.gz", a.key, size, when))
		if err = os.WriteFile(path, prof, 0o644); err == nil {
			fmt.Fprintf(stderr, "  %s heap profile: %s\n", a.name, path)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "  %s heap profile: %v\n", a.name, err)
	}
}

// changeTimeout bounds the wait for one endpoint change.
const changeTimeout = time.Minute

// latency changes one endpoint of a filler Service opts.changes times, one
// after the other, and times each from the API write returning to the new
// endpoint's chain being in the kernel, polling every millisecond.
func (b *bench) latency(ctx context.Context, a *agent, n *harness.Node, r *result) error {
	svc := fillerName(b.objs.count() / 2)
	var costs []time.Duration
	for i := range b.opts.changes {
		ip, wrote, err := b.objs.replaceEndpoint(ctx, svc)
		if err != nil {
			return err
		}
		for {
			q := time.Now()
			ok := a.programmed(n.NS, svc, ip)
			costs = append(costs, time.Since(q))
			if ok {
				break
			}
			if time.Since(wrote) > changeTimeout {
				// A result: the rest of the changes would only queue behind it.
				r.latLost = b.opts.changes - i
				fmt.Fprintf(stderr, "  %s: change %d (%s -> %s) not programmed after %s; %d changes not measured\n",
					a.name, i+1, svc, ip, changeTimeout, r.latLost)
				r.queryCost = benchkit.Percentile(costs, 0.5)
				return nil
			}
			if err := sleep(ctx, time.Millisecond); err != nil {
				return err
			}
		}
		r.lat = append(r.lat, time.Since(wrote))
	}
	r.queryCost = benchkit.Percentile(costs, 0.5)
	fmt.Fprintf(stderr, "  %s: endpoint change p50 %.1fms p99 %.1fms\n", a.name, ms(benchkit.Percentile(r.lat, 0.5)), ms(benchkit.Percentile(r.lat, 0.99)))
	return nil
}

// connections opens new TCP connections from the node namespace to the
// target ClusterIP as fast as opts.connWorkers workers can for
// opts.connDuration. Each is closed with a RST (linger 0): no TIME_WAIT,
// so the client never runs out of ports.
func (b *bench) connections(ctx context.Context, n *harness.Node, r *result) error {
	addr := net.JoinHostPort(b.objs.targetVIP, strconv.Itoa(servicePort))
	dial := func() error {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			return err
		}
		_ = c.(*net.TCPConn).SetLinger(0)
		return c.Close()
	}
	// The target must answer before timing (its rules are in already).
	if err := n.NS.Do(dial); err != nil {
		return fmt.Errorf("connect to the target %s from %s: %w", addr, n.Name, err)
	}
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex // guards errs
	var errs []error
	start := time.Now()
	deadline := start.Add(b.opts.connDuration)
	for range b.opts.connWorkers {
		wg.Go(func() {
			err := n.NS.Do(func() error {
				for time.Now().Before(deadline) && ctx.Err() == nil {
					if err := dial(); err != nil {
						failed.Add(1)
						continue
					}
					ok.Add(1)
				}
				return nil
			})
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(append(errs, ctx.Err())...); err != nil {
		return err
	}
	r.cps = float64(ok.Load()) / time.Since(start).Seconds()
	r.connErrs = failed.Load()
	fmt.Fprintf(stderr, "  %d services: %.0f connections/s (%d failed)\n", r.services, r.cps, r.connErrs)
	return nil
}

// sleep waits d unless ctx ends first.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
