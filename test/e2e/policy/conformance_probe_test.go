package policy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/nodenet/nodenet/test/harness"
)

const (
	// An allowed connection between pod namespaces completes in about a
	// millisecond. While the rules converge (a round that stops at the
	// first disagreement) one that takes longer than deniedTimeout only
	// means another round; a full round waits allowedTimeout for it, so
	// a loaded machine does not make a case fail.
	allowedTimeout = 2 * time.Second
	// deniedTimeout is how long a probe that must be blocked gets to
	// succeed: denied packets are dropped, so denial is a timeout, and a
	// wrongly allowed connection answers a thousand times faster.
	deniedTimeout = 300 * time.Millisecond
	// probeWorkers bounds the probes in flight. A TCP connect holds an OS
	// thread switched into the source pod's namespace until it completes.
	probeWorkers = 128
	// Source ports are taken in turn from this range, per source, and never
	// reused within a run: a 5-tuple that an earlier policy allowed would
	// otherwise ride its conntrack entry (UDP: 30s) past a new denial.
	firstSourcePort = 1024
	lastSourcePort  = 65000
)

// prober sends one probe per (source pod, destination pod, service) of a
// matrix round.
type prober struct {
	mu   sync.Mutex // guards pods: a recreated pod replaces its sandbox
	pods [nPods]*harness.Sandbox

	ports sourcePorts

	rounds, probes atomic.Int64 // for the summary
}

// sourcePorts hands out local ports per source namespace.
type sourcePorts struct {
	mu   sync.Mutex // guards next
	next map[string]int
}

func (s *sourcePorts) take(ns string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.next == nil {
		s.next = map[string]int{}
	}
	p := s.next[ns]
	if p < firstSourcePort || p > lastSourcePort {
		p = firstSourcePort
	}
	s.next[ns] = p + 1
	return p
}

func (p *prober) sandboxes() [nPods]*harness.Sandbox {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pods
}

func (p *prober) replace(i int, sb *harness.Sandbox) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pods[i] = sb
}

// probeJob is one probe of a round.
type probeJob struct{ i, j, k int }

// round probes the whole matrix against want, longest timeouts first so
// they overlap. With stopEarly it gives up at the first disagreement (the
// rules have not converged; the caller probes again). A probe that fails
// for a reason other than reachability (the harness itself) is an error.
func (p *prober) round(ctx context.Context, want *truth, stopEarly bool) (got matrix, mismatches int, err error) {
	p.rounds.Add(1)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var jobs []probeJob
	for i := range nPods {
		for j := range nPods {
			if i == j {
				got[i][j] = [nServices]bool{true, true, true, true}
				continue
			}
			for k := range nServices {
				jobs = append(jobs, probeJob{i, j, k})
			}
		}
	}
	slices.SortStableFunc(jobs, func(a, b probeJob) int {
		return boolInt(want.want(a.i, a.j, a.k)) - boolInt(want.want(b.i, b.j, b.k))
	})
	sbs := p.sandboxes()
	queue := make(chan probeJob)
	var (
		mu   sync.Mutex // guards got, mismatches, errs
		errs []error
		wg   sync.WaitGroup
	)
	for range probeWorkers {
		wg.Go(func() {
			for jb := range queue {
				w := want.want(jb.i, jb.j, jb.k)
				timeout := deniedTimeout
				if w && !stopEarly {
					timeout = allowedTimeout
				}
				reached, perr := p.probe(ctx, sbs[jb.i].NS, sbs[jb.j], confServices[jb.k], timeout)
				if ctx.Err() != nil {
					continue // stopped early: the outcome means nothing
				}
				mu.Lock()
				got[jb.i][jb.j][jb.k] = reached
				if perr != nil {
					errs = append(errs, fmt.Errorf("%s -> %s %s: %w", confPods[jb.i], confPods[jb.j], confServices[jb.k], perr))
				} else if reached != w {
					mismatches++
					if stopEarly {
						cancel()
					}
				}
				mu.Unlock()
			}
		})
	}
	for _, jb := range jobs {
		select {
		case queue <- jb:
		case <-ctx.Done():
		}
	}
	close(queue)
	wg.Wait()
	return got, mismatches, errors.Join(errs...)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// probe reports whether a connection from the namespace src reaches the pod
// dst on s within timeout: for TCP a completed handshake, for UDP an echo
// from dst. Dropped (timeout) or rejected (ICMP, RST) is "not reached";
// anything else is an error of the test itself.
func (p *prober) probe(ctx context.Context, src *harness.NS, dst *harness.Sandbox, s service, timeout time.Duration) (bool, error) {
	p.probes.Add(1)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	addr := net.JoinHostPort(dst.IPs[0].String(), strconv.Itoa(s.port))
	local := p.ports.take(src.Name)
	var conn net.Conn
	err := src.Do(func() error {
		var err error
		switch s.proto {
		case corev1.ProtocolTCP:
			conn, err = (&net.Dialer{LocalAddr: &net.TCPAddr{Port: local}}).DialContext(ctx, "tcp", addr)
		case corev1.ProtocolUDP:
			// Connecting a UDP socket sends nothing: the thread is free again at once.
			conn, err = (&net.Dialer{LocalAddr: &net.UDPAddr{Port: local}}).DialContext(ctx, "udp", addr)
		default:
			err = fmt.Errorf("cannot probe %s", s.proto)
		}
		return err
	})
	if err != nil {
		return false, notReached(err)
	}
	defer conn.Close()
	if s.proto == corev1.ProtocolTCP {
		return true, nil
	}
	return echo(ctx, conn, dst.Name)
}

// echo sends one datagram and waits for the workload's answer naming pod.
func echo(ctx context.Context, conn net.Conn, pod string) (bool, error) {
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(deadline)
	}
	if _, err := conn.Write([]byte("probe\n")); err != nil {
		return false, notReached(err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return false, notReached(err)
	}
	if name, _, _ := strings.Cut(line, " "); name != pod {
		return false, fmt.Errorf("answered by %q, want pod %s", strings.TrimSpace(line), pod)
	}
	return true, nil
}

// notReached is nil for errors that mean the packets did not get through
// (dropped: a timeout; rejected: refused or unreachable) and err otherwise.
func notReached(err error) error {
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled),
		errors.Is(err, os.ErrDeadlineExceeded),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return nil
	}
	return err
}
