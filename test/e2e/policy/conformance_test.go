package policy

import (
	"slices"
	"testing"
	"time"
)

// TestConformance is the NetworkPolicy conformance suite, modelled on the
// upstream e2e tests (kubernetes test/e2e/network/netpol): namespaces x, y,
// z labelled ns=<name>, pods a, b, c in each labelled pod=<name>, spread
// over two nodes, each serving TCP and UDP on ports 80 and 81. Every case
// changes policies (and labels, and pods) step by step, and after each
// step the full matrix — 9 sources x 9 destinations x {TCP, UDP} x {80, 81}
// — is probed with real packets until it agrees with the truth table the
// case wrote by hand. The pods are set up once; between cases every policy
// and added label goes and everything must reach everything again.
//
// SCTP is not probed: the test workloads do not serve it.
func TestConformance(t *testing.T) {
	suite.Require(t)
	start := time.Now()
	w := newConfWorld(t)
	setup := time.Since(start)
	w.check(t, "no policies: everything reaches everything", allowAll())

	cases := confCases()
	names := map[string]bool{}
	for _, c := range cases {
		if names[c.name] {
			t.Fatalf("two cases named %q", c.name)
		}
		names[c.name] = true
	}
	failed, ran := 0, 0
	for _, c := range cases {
		started := false // false when -run filtered the case out
		if !t.Run(c.name, func(t *testing.T) {
			started = true
			c.run(&step{confWorld: w, t: t})
		}) {
			failed++
		}
		if started {
			ran++
			w.reset(t)
		}
	}

	conv := slices.Clone(w.converged)
	slices.Sort(conv)
	t.Logf("%d of %d cases run (%d failed), %d checked steps, %d probe rounds, %d probes; setup %s, cases %s; until the matrix agreed: median %s, p90 %s, max %s",
		ran, len(cases), failed, len(conv), w.p.rounds.Load(), w.p.probes.Load(),
		setup.Round(time.Millisecond), time.Since(start.Add(setup)).Round(time.Millisecond),
		quantile(conv, 0.5), quantile(conv, 0.9), quantile(conv, 1))
}

func confCases() []confCase {
	return slices.Concat(ingressCases(), egressCases(), portCases(), liveCases())
}

func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(q*float64(len(sorted)-1))].Round(time.Millisecond)
}
