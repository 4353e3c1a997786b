package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/nodenet/nodenet/test/bench/internal/benchkit"
	"github.com/nodenet/nodenet/test/harness"
)

// impl is one CNI implementation under test and the node it runs on.
type impl struct {
	name   string
	node   *harness.Node
	plugin string // the binary the runtime would execute
	conf   []byte // single-plugin network config, the plugin's stdin
	cidr   netip.Prefix
}

// pod is one sandbox: a fresh network namespace and a container id.
type pod struct {
	ns *harness.NS
	id string
}

// roundResult is what one round measured for one implementation.
type roundResult struct {
	addP50, addP99, delP50, delP99 time.Duration
	addSeqTput                     float64 // ADDs/s, sequential
	addParTput, delParTput         float64 // per second, with opts.workers concurrent
}

// report is every round of both implementations plus the breakdown.
type report struct {
	nodenet, ref                 []roundResult
	floors                       []floor              // invocations that do no pod work
	syncs                        map[string]syncDelta // daemon syncs during the sequential phases, by labels
	daemonAdd, daemonDel         histDelta            // nodenet's own view, sequential phases
	nnAddMean, nnDelMean         time.Duration        // plugin-side means over the same requests
	nnAddTotal, nnDelTotal       time.Duration
	nnAddRequests, nnDelRequests int
}

type bench struct {
	opts         options
	pool         *podPool
	nodenet, ref *impl
}

func (b *bench) run(ctx context.Context) (*report, error) {
	rep := &report{}
	for _, im := range []*impl{b.nodenet, b.ref} {
		if err := b.warmup(ctx, im); err != nil {
			return nil, fmt.Errorf("%s warm-up: %w", im.name, err)
		}
	}
	statusConf, err := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "nodenet", "type": "nodenet", "socket": b.nodenet.node.Socket})
	if err != nil {
		return nil, err
	}
	for _, f := range []floor{
		{what: "ip netns exec <node> /bin/true (common to both)", im: b.nodenet, bin: "/bin/true"},
		{what: "bridge plugin, VERSION (exec, no work)", im: b.ref, bin: b.ref.plugin, cmd: "VERSION", conf: b.ref.conf},
		{what: "nodenet plugin, VERSION (exec, no daemon call)", im: b.nodenet, bin: b.nodenet.plugin, cmd: "VERSION", conf: b.nodenet.conf},
		{what: "nodenet plugin, STATUS (exec + one socket round trip)", im: b.nodenet, bin: b.nodenet.plugin, cmd: "STATUS", conf: statusConf},
	} {
		if f.p50, err = b.floor(ctx, f); err != nil {
			return nil, err
		}
		rep.floors = append(rep.floors, f)
	}
	for round := range b.opts.rounds {
		order := []*impl{b.nodenet, b.ref}
		if round%2 == 1 {
			slices.Reverse(order)
		}
		for _, im := range order {
			fmt.Fprintf(stderr, "round %d/%d: %s\n", round+1, b.opts.rounds, im.name)
			r, err := b.round(ctx, im, rep)
			if err != nil {
				return nil, fmt.Errorf("round %d, %s: %w", round+1, im.name, err)
			}
			if im == b.nodenet {
				rep.nodenet = append(rep.nodenet, r)
			} else {
				rep.ref = append(rep.ref, r)
			}
		}
	}
	if rep.nnAddRequests > 0 {
		rep.nnAddMean = rep.nnAddTotal / time.Duration(rep.nnAddRequests)
		rep.nnDelMean = rep.nnDelTotal / time.Duration(rep.nnDelRequests)
	}
	return rep, nil
}

// warmup runs untimed ADD/DEL pairs: the first ADD of the reference creates
// its bridge, and both get their binaries into the page cache.
func (b *bench) warmup(ctx context.Context, im *impl) error {
	if b.opts.warmup == 0 {
		return nil
	}
	pods, err := b.pool.create(ctx, b.opts.warmup, b.opts.workers)
	if err != nil {
		return err
	}
	if _, _, err := b.sequential(ctx, im, pods); err != nil {
		return err
	}
	return b.pool.delete(pods)
}

// floor is an invocation that does no pod work: what running a program,
// or the plugin alone, inside the node namespace costs.
type floor struct {
	what string
	im   *impl
	bin  string
	cmd  string // CNI_COMMAND
	conf []byte
	p50  time.Duration
}

func (b *bench) floor(ctx context.Context, f floor) (time.Duration, error) {
	ds := make([]time.Duration, b.opts.floorRun)
	for i := range ds {
		c := f.im.node.NS.Command(ctx, f.bin)
		c.Env = []string{"CNI_COMMAND=" + f.cmd, "CNI_PATH=" + f.im.node.CNIBinDir, "PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
		c.Stdin = bytes.NewReader(f.conf)
		start := time.Now()
		out, err := c.CombinedOutput()
		ds[i] = time.Since(start)
		if err != nil {
			return 0, fmt.Errorf("%s: %v: %s", f.what, err, out)
		}
	}
	return benchkit.Percentile(ds, 0.5), nil
}

// round measures one implementation: the sequential phase, then the
// parallel one, each on fresh pod namespaces.
func (b *bench) round(ctx context.Context, im *impl, rep *report) (roundResult, error) {
	var r roundResult
	pods, err := b.pool.create(ctx, b.opts.pods, b.opts.workers)
	if err != nil {
		return r, err
	}
	if err := sleep(ctx, b.opts.settle); err != nil {
		return r, err
	}
	var before string
	if im == b.nodenet {
		if before, err = metrics(im.node); err != nil {
			return r, err
		}
	}
	adds, dels, err := b.sequential(ctx, im, pods)
	if err != nil {
		return r, err
	}
	// Back to back, so the sum of the invocations is the loop's wall time.
	r.addSeqTput = float64(len(pods)) / sumDurations(adds).Seconds()
	r.addP50, r.addP99 = benchkit.Percentile(adds, 0.5), benchkit.Percentile(adds, 0.99)
	r.delP50, r.delP99 = benchkit.Percentile(dels, 0.5), benchkit.Percentile(dels, 0.99)
	if im == b.nodenet {
		after, err := metrics(im.node)
		if err != nil {
			return r, err
		}
		if err := rep.addDaemon(before, after); err != nil {
			return r, err
		}
		rep.nnAddTotal += sumDurations(adds)
		rep.nnDelTotal += sumDurations(dels)
		rep.nnAddRequests += len(adds)
		rep.nnDelRequests += len(dels)
	}
	if err := b.pool.delete(pods); err != nil {
		return r, err
	}

	if pods, err = b.pool.create(ctx, b.opts.pods, b.opts.workers); err != nil {
		return r, err
	}
	if err := sleep(ctx, b.opts.settle); err != nil {
		return r, err
	}
	ips := make([]netip.Addr, len(pods))
	wall, err := parallel(len(pods), b.opts.workers, func(i int) error {
		var err error
		ips[i], _, err = im.add(ctx, pods[i])
		return err
	})
	if err != nil {
		return r, fmt.Errorf("parallel ADD: %w", err)
	}
	if err := im.checkDistinct(ips); err != nil {
		return r, fmt.Errorf("parallel ADD: %w", err)
	}
	r.addParTput = float64(len(pods)) / wall.Seconds()
	wall, err = parallel(len(pods), b.opts.workers, func(i int) error {
		_, err := im.invoke(ctx, "DEL", pods[i])
		return err
	})
	if err != nil {
		return r, fmt.Errorf("parallel DEL: %w", err)
	}
	r.delParTput = float64(len(pods)) / wall.Seconds()
	return r, b.pool.delete(pods)
}

// sequential runs ADD on every pod one after the other, checks the
// addresses, then DEL on every pod; it returns each invocation's time.
func (b *bench) sequential(ctx context.Context, im *impl, pods []pod) (adds, dels []time.Duration, err error) {
	ips := make([]netip.Addr, len(pods))
	for i, p := range pods {
		ip, d, err := im.add(ctx, p)
		if err != nil {
			return nil, nil, fmt.Errorf("ADD %d: %w", i, err)
		}
		ips[i] = ip
		adds = append(adds, d)
	}
	if err := im.checkDistinct(ips); err != nil {
		return nil, nil, fmt.Errorf("sequential ADD: %w", err)
	}
	for i, p := range pods {
		d, err := im.invoke(ctx, "DEL", p)
		if err != nil {
			return nil, nil, fmt.Errorf("DEL %d: %w", i, err)
		}
		dels = append(dels, d)
	}
	return adds, dels, nil
}

// invoke executes the plugin inside the node namespace as a runtime would,
// and returns how long the process took.
func (im *impl) invoke(ctx context.Context, cmd string, p pod) (time.Duration, error) {
	_, d, err := im.exec(ctx, cmd, p)
	return d, err
}

func (im *impl) exec(ctx context.Context, cmd string, p pod) ([]byte, time.Duration, error) {
	c := im.node.NS.Command(ctx, im.plugin)
	c.Env = []string{"CNI_COMMAND=" + cmd, "CNI_CONTAINERID=" + p.id, "CNI_NETNS=/var/run/netns/" + p.ns.Name,
		"CNI_IFNAME=eth0", "CNI_PATH=" + im.node.CNIBinDir, "PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	c.Stdin = bytes.NewReader(im.conf)
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	start := time.Now()
	err := c.Run()
	d := time.Since(start)
	if err != nil {
		return nil, d, fmt.Errorf("%s %s in %s: %v: stdout %q stderr %q", im.name, cmd, p.ns.Name, err, stdout.String(), stderr.String())
	}
	return stdout.Bytes(), d, nil
}

// add runs ADD and returns the pod's address from the result.
func (im *impl) add(ctx context.Context, p pod) (netip.Addr, time.Duration, error) {
	out, d, err := im.exec(ctx, "ADD", p)
	if err != nil {
		return netip.Addr{}, d, err
	}
	var res struct {
		IPs []struct {
			Address string `json:"address"`
		} `json:"ips"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return netip.Addr{}, d, fmt.Errorf("%s ADD result %q: %w", im.name, out, err)
	}
	if len(res.IPs) != 1 {
		return netip.Addr{}, d, fmt.Errorf("%s ADD result has %d addresses: %s", im.name, len(res.IPs), out)
	}
	pfx, err := netip.ParsePrefix(res.IPs[0].Address)
	if err != nil {
		return netip.Addr{}, d, fmt.Errorf("%s ADD result address: %w", im.name, err)
	}
	return pfx.Addr(), d, nil
}

// checkDistinct fails unless every address is in the node's podCIDR and
// held by one pod only: a benchmark of a broken plugin is worthless.
func (im *impl) checkDistinct(ips []netip.Addr) error {
	seen := make(map[netip.Addr]int, len(ips))
	var errs []error
	for i, ip := range ips {
		if !im.cidr.Contains(ip) {
			errs = append(errs, fmt.Errorf("pod %d got %s, outside %s", i, ip, im.cidr))
		}
		if j, dup := seen[ip]; dup {
			errs = append(errs, fmt.Errorf("pods %d and %d both got %s", j, i, ip))
		}
		seen[ip] = i
	}
	return errors.Join(errs...)
}

func median(vs []float64) float64 {
	s := slices.Clone(vs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// sleep waits d unless ctx ends first.
func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func sumDurations(ds []time.Duration) time.Duration {
	var t time.Duration
	for _, d := range ds {
		t += d
	}
	return t
}
