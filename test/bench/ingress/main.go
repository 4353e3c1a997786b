// Command ingress is `make bench-ingress`: nodenet's Ingress proxy against
// nginx (Debian's package, a typical production config) on the same host
// and path routes to the same backend pods, in one run:
//
//   - one node of the test cluster runs nodenet (ingress on :80/:443) and,
//     in the same network namespace, nginx (on :8080/:8443), so both reach
//     the pods the same way;
//   - the backends are pods on that node (HTTP echo servers answering a
//     few bytes); routes: bench.test "/" and "/api", other.test "/";
//   - wrk runs on a host on the underlay, cycling through the routes, in
//     keep-alive and new-connection ("Connection: close") modes, over HTTP
//     and HTTPS (the same ECDSA P-256 certificate for both proxies);
//   - each proxy gets a warm-up, then the measured run; rounds alternate
//     which proxy goes first and the best round of each counts.
//
// It prints req/s, p50 and p99 latency, errors and the proxy's CPU time
// per request, with nodenet/nginx ratios. Everything is removed at the end,
// also on error or Ctrl-C. wrk and nginx are installed when missing; the
// system's nginx service is never started.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/nodenet/nodenet/test/harness"
)

var stderr = os.Stderr // progress lines; the report goes to stdout

// options are the command line flags.
type options struct {
	duration    time.Duration
	warmup      time.Duration
	threads     int
	connections int
	rounds      int
	accessLog   bool
}

func main() {
	var o options
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "measured wrk run per proxy and mode")
	flag.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured wrk run before each measured one")
	flag.IntVar(&o.threads, "threads", 2, "wrk threads")
	flag.IntVar(&o.connections, "connections", 64, "wrk connections")
	flag.IntVar(&o.rounds, "rounds", 2, "measured runs per proxy and mode; the best counts")
	flag.BoolVar(&o.accessLog, "access-log", true, "both proxies write an access log line per request")
	quick := flag.Bool("quick", false, "a fast check: 2s runs, 1s warm-up, one round")
	flag.Parse()
	if *quick {
		o.duration, o.warmup, o.rounds = 2*time.Second, time.Second, 1
	}
	if o.duration < time.Second || o.threads < 1 || o.connections < o.threads || o.rounds < 1 {
		fmt.Fprintln(os.Stderr, "bench-ingress: -duration at least 1s, -threads and -rounds at least 1, -connections at least -threads")
		os.Exit(2)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench-ingress: needs root (it creates network namespaces and runs the proxies in them)")
		os.Exit(1)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	err := run(ctx, o)
	if lerr := harness.LeakCheck(); lerr != nil {
		err = errors.Join(err, fmt.Errorf("leak check: %w", lerr))
	}
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(os.Stderr, "bench-ingress: interrupted")
		}
		fmt.Fprintln(os.Stderr, "bench-ingress:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) (err error) {
	if err := ensureTools(ctx); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", harness.Prefix+"bench-ingress-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	bin, err := harness.NodenetBinary(work)
	if err != nil {
		return err
	}
	fmt.Fprintln(stderr, "starting the control plane ...")
	cp, err := harness.StartControlPlane(ctx, harness.Options{})
	if err != nil {
		return fmt.Errorf("control plane: %w", err)
	}
	defer func() {
		if serr := cp.Stop(); serr != nil {
			err = errors.Join(err, fmt.Errorf("teardown: %w", serr))
		}
	}()
	env, err := setup(ctx, cp, bin, work, o)
	if env != nil {
		defer func() {
			if cerr := env.close(); cerr != nil {
				err = errors.Join(err, cerr)
			}
		}()
	}
	if err != nil {
		return err
	}
	loadBefore := loadAverage()
	rows, err := env.measure(ctx)
	if err != nil {
		return err
	}
	wrkV, nginxV := toolVersions(ctx)
	header := fmt.Sprintf("make bench-ingress: nodenet vs %s, the same routes (2 hosts, 3 paths) to the same %d pods on one node\n"+
		"%s from a host on the underlay: %d threads, %d connections, %s per run after a %s warm-up, best of %d round(s); access log %v\n"+
		"%d CPUs; load average (1 min) %s before, %s after: anything else running skews the numbers",
		nginxV, len(env.pods), wrkV, o.threads, o.connections, o.duration, o.warmup, o.rounds, onOff(o.accessLog),
		runtime.NumCPU(), loadBefore, loadAverage())
	printReport(os.Stdout, header, rows)
	return nil
}

// loadAverage is the machine's 1-minute load average, as text.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(b) + " ?")[0]
}

func onOff(b bool) string {
	if b {
		return "on for both"
	}
	return "off for both"
}
