package policy

import (
	"strings"
	"testing"
)

// TestTruthTable checks the expectation builder and the diff the suite
// prints; it needs no cluster.
func TestTruthTable(t *testing.T) {
	want := allowAll().deny("*/*", "x/a", "tcp/*").allow("y/b,z/c", "x/a", "tcp/81")
	for _, c := range []struct {
		from, to, svc string
		ok            bool
	}{
		{"x/a", "x/a", "tcp/80", true}, // loopback
		{"x/b", "x/a", "tcp/80", false},
		{"x/b", "x/a", "udp/80", true},
		{"y/b", "x/a", "tcp/81", true},
		{"y/b", "x/a", "tcp/80", false},
		{"z/c", "x/a", "tcp/81", true},
		{"z/b", "x/a", "tcp/81", false},
		{"x/a", "x/b", "tcp/80", true},
	} {
		i, j, k := podIndex(c.from), podIndex(c.to), matching(c.svc, serviceNames())[0]
		if got := want.want(i, j, k); got != c.ok {
			t.Errorf("%s -> %s %s: want %v, got %v", c.from, c.to, c.svc, c.ok, got)
		}
	}

	got := allowAll().deny("*/*", "x/a", "tcp/*").allow("z/c", "x/a", "tcp/81").m
	got[podIndex("y/b")][podIndex("x/a")][1] = false // tcp/81 blocked, must get through
	got[podIndex("x/b")][podIndex("x/a")][0] = true  // tcp/80 through, must be blocked
	render, bad := renderDiff(want, &got)
	if bad != 2 {
		t.Errorf("diff counted %d mismatches, want 2:\n%s", bad, render)
	}
	for _, line := range []string{
		"tcp/80   x/a x/b x/c y/a y/b y/c z/a z/b z/c",
		"    x/b   +       .   .   .   .   .   .   . ",
		"    y/b   -   .   .   .       .   .   .   . ",
	} {
		if !strings.Contains(render, line+"\n") {
			t.Errorf("diff lacks line %q:\n%s", line, render)
		}
	}
	if want.equal(allowAll()) || !want.equal(want.clone()) {
		t.Error("equal is wrong")
	}
}
