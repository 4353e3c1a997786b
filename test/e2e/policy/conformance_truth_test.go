package policy

import (
	"fmt"
	"path"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// The conformance world: namespaces x, y, z with pods a, b, c each, every
// pod serving TCP and UDP on ports 80 and 81 (upstream's netpol e2e model).
var (
	confNamespaces = []string{"x", "y", "z"}
	confPodNames   = []string{"a", "b", "c"}
	confPods       = []string{"x/a", "x/b", "x/c", "y/a", "y/b", "y/c", "z/a", "z/b", "z/c"}
	confServices   = []service{{corev1.ProtocolTCP, 80}, {corev1.ProtocolTCP, 81}, {corev1.ProtocolUDP, 80}, {corev1.ProtocolUDP, 81}}
)

const (
	nPods     = 9
	nServices = 4
)

// service is one protocol and port every conformance pod serves.
type service struct {
	proto corev1.Protocol
	port  int
}

func (s service) String() string {
	return strings.ToLower(string(s.proto)) + "/" + strconv.Itoa(s.port)
}

// matrix is one bit per (source pod, destination pod, service), indexed like
// confPods and confServices.
type matrix [nPods][nPods][nServices]bool

// truth is a case's expected reachability, written by hand from the case's
// policies (never computed by nodenet's own model, so the suite can
// disagree with it). Start from allowAll or denyAll, then set entries by
// pattern: pods as "ns/pod" and services as "proto/port", each side a
// comma-separated list of path.Match patterns ("x/*", "*/a", "x/a,y/b";
// "tcp/*", "*/81", "*/*").
type truth struct{ m matrix }

func allowAll() *truth { t := &truth{}; t.fill(true); return t }
func denyAll() *truth  { t := &truth{}; t.fill(false); return t }

func (t *truth) fill(v bool) {
	for i := range nPods {
		for j := range nPods {
			for k := range nServices {
				t.m[i][j][k] = v
			}
		}
	}
}

func (t *truth) clone() *truth { c := *t; return &c }

// allow and deny set every (from, to, on) entry the patterns match.
func (t *truth) allow(from, to, on string) *truth { return t.set(from, to, on, true) }
func (t *truth) deny(from, to, on string) *truth  { return t.set(from, to, on, false) }

// set panics on a pattern that matches nothing: a typo would otherwise
// silently weaken a case.
func (t *truth) set(from, to, on string, v bool) *truth {
	fs, ts, ss := matching(from, confPods), matching(to, confPods), matching(on, serviceNames())
	for _, i := range fs {
		for _, j := range ts {
			for _, k := range ss {
				t.m[i][j][k] = v
			}
		}
	}
	return t
}

// want is the expected outcome. A pod reaching its own address is always
// allowed: the packet never leaves the pod's namespace, so no policy can
// see it (upstream ignores loopback too); it is not probed.
func (t *truth) want(i, j, k int) bool { return i == j || t.m[i][j][k] }

func (t *truth) equal(o *truth) bool {
	for i := range nPods {
		for j := range nPods {
			for k := range nServices {
				if t.want(i, j, k) != o.want(i, j, k) {
					return false
				}
			}
		}
	}
	return true
}

func serviceNames() []string {
	var names []string
	for _, s := range confServices {
		names = append(names, s.String())
	}
	return names
}

// matching returns the indexes of names that match pattern, a
// comma-separated list of path.Match patterns.
func matching(pattern string, names []string) []int {
	var idx []int
	for i, n := range names {
		for _, p := range strings.Split(pattern, ",") {
			ok, err := path.Match(p, n)
			if err != nil {
				panic(fmt.Sprintf("truth pattern %q: %v", pattern, err))
			}
			if ok {
				idx = append(idx, i)
				break
			}
		}
	}
	if len(idx) == 0 {
		panic(fmt.Sprintf("truth pattern %q matches nothing in %v", pattern, names))
	}
	return idx
}

// renderDiff renders want against got, one 9x9 grid per service (rows: from,
// columns: to): "." reached as expected, "X" blocked as expected, "+"
// reached but must be blocked, "-" blocked but must be reached, " " on the
// diagonal (loopback, not probed). It also returns the number of
// mismatches.
func renderDiff(want *truth, got *matrix) (string, int) {
	var b strings.Builder
	bad := 0
	header := "         " + strings.Join(confPods, " ")
	for k, s := range confServices {
		fmt.Fprintf(&b, "%-9s%s\n", s.String(), header[9:])
		for i, from := range confPods {
			b.WriteString("    " + from + " ")
			for j := range confPods {
				mark := " "
				switch w, g := want.want(i, j, k), got[i][j][k]; {
				case i == j:
				case w && g:
					mark = "."
				case !w && !g:
					mark = "X"
				case g:
					mark, bad = "+", bad+1
				default:
					mark, bad = "-", bad+1
				}
				b.WriteString("  " + mark + " ")
			}
			b.WriteString("\n")
		}
	}
	return b.String(), bad
}
