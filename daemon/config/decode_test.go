package config

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// parseProblems parses in, which must fail, and returns its problems.
func parseProblems(t *testing.T, in string) []Problem {
	t.Helper()
	c, err := Parse([]byte(in))
	if err == nil {
		t.Fatalf("Parse succeeded, want error; config:\n%s", c.TOML())
	}
	if c != nil {
		t.Errorf("Parse returned a config along with an error")
	}
	var errs *Errors
	if !errors.As(err, &errs) {
		t.Fatalf("Parse error is %T, want *Errors: %v", err, err)
	}
	return errs.Problems
}

func problemStrings(ps []Problem) []string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return s
}

func TestUnknownKeys(t *testing.T) {
	in := `foo = 1
mtu = 1400

[node]
Name = "worker"
  nmae = "worker"

[kubernetes]
resync-period = "1m"

[extra.sub]
a = 1

[log]
level = "info"
colour = true
`
	want := []Problem{
		{Key: "foo", Line: 1, Column: 1, Msg: "unknown key"},
		{Key: "mtu", Line: 2, Column: 1, Msg: "unknown key (did you mean network.mtu?)"},
		{Key: "node.Name", Line: 5, Column: 1, Msg: `unknown key (did you mean "name"?)`},
		{Key: "node.nmae", Line: 6, Column: 3, Msg: "unknown key"},
		{Key: "kubernetes.resync-period", Line: 9, Column: 1, Msg: `unknown key (did you mean "resync_period"?)`},
		{Key: "extra", Line: 11, Column: 1, Msg: "unknown key"},
		{Key: "log.colour", Line: 16, Column: 1, Msg: "unknown key"},
	}
	if diff := cmp.Diff(want, parseProblems(t, in)); diff != "" {
		t.Errorf("problems mismatch (-want +got):\n%s", diff)
	}
}

func TestUnknownKeyInInlineAndDottedTables(t *testing.T) {
	in := `log = { level = "info", verbose = true }
network.bogus = 1
`
	want := []string{
		"log.verbose: unknown key (line 1, column 25)",
		"network.bogus: unknown key (line 2, column 9)",
	}
	if diff := cmp.Diff(want, problemStrings(parseProblems(t, in))); diff != "" {
		t.Errorf("problems mismatch (-want +got):\n%s", diff)
	}
}

func TestTypeErrors(t *testing.T) {
	tests := []struct {
		in   string
		want string
	}{
		{"log = 5", "log: must be a table, got an integer (line 1, column 1)"},
		{"[[admin]]\nlisten = \"\"", "admin: must be a table, got an array of tables (line 1, column 1)"},
		{"[node]\nname = 7", "node.name: must be a string, got an integer (line 2, column 1)"},
		{"[node]\naddresses = \"192.0.2.1\"", "node.addresses: must be an array of strings, got a string (line 2, column 1)"},
		{"[network]\ncluster_cidrs = [\"10.0.0.0/8\", 1]", "network.cluster_cidrs: must be an array of strings, element 1 is an integer (line 2, column 1)"},
		{"[network]\nmtu = 1500.0", "network.mtu: must be an integer, got a float (line 2, column 1)"},
		{"[kubernetes]\nqps = \"fast\"", "kubernetes.qps: must be a number, got a string (line 2, column 1)"},
		{"[kubernetes]\nburst = true", "kubernetes.burst: must be an integer, got a boolean (line 2, column 1)"},
		{"[kubernetes]\nresync_period = 600", `kubernetes.resync_period: must be a duration string with a unit such as "30s" or "5m"; bare integers are rejected because their unit is ambiguous (line 2, column 1)`},
		{"[reconcile]\nmin_interval = \"5x\"", `reconcile.min_interval: invalid duration "5x": use a number with a unit such as "100ms", "30s" or "5m" (line 2, column 1)`},
		{"[reconcile]\nmax_interval = 2024-01-01", `reconcile.max_interval: must be a duration string such as "30s", got a datetime (line 2, column 1)`},
		{"[log]\nlevel = [\"info\"]", "log.level: must be a string, got an array (line 2, column 1)"},
		{"[node]\n[node.name]\nx = 1", "node.name: must be a string, got a table (line 2, column 1)"},
	}
	for _, tt := range tests {
		t.Run(tt.want[:strings.IndexByte(tt.want, ':')], func(t *testing.T) {
			if diff := cmp.Diff([]string{tt.want}, problemStrings(parseProblems(t, tt.in))); diff != "" {
				t.Errorf("Parse(%q) problems mismatch (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

// A key that failed to decode keeps its default; cross-field checks against
// that default would only repeat the problem, so they are dropped.
func TestTypeErrorSuppressesValidationOfSameKey(t *testing.T) {
	in := "[kubernetes]\nqps = 500\nburst = \"lots\"\n"
	want := []string{"kubernetes.burst: must be an integer, got a string (line 3, column 1)"}
	if diff := cmp.Diff(want, problemStrings(parseProblems(t, in))); diff != "" {
		t.Errorf("problems mismatch (-want +got):\n%s", diff)
	}
}

func TestSyntaxError(t *testing.T) {
	tests := []struct {
		in   string
		want Problem
	}{
		{"[node\nname = \"x\"\n", Problem{Line: 1, Column: 6, Msg: "invalid TOML: expected '.' or ']' to end table name, but got '\\n' instead"}},
		{"[log]\nlevel = info\n", Problem{Line: 2, Column: 12, Msg: "invalid TOML: expected a top-level item to end with a newline, comment, or EOF, but got 'o' instead"}},
		{"[node]\nname = \"a\"\nname = \"b\"\n", Problem{Line: 3, Column: 1, Msg: "invalid TOML: Key 'node.name' has already been defined."}},
	}
	for _, tt := range tests {
		got := parseProblems(t, tt.in)
		if diff := cmp.Diff([]Problem{tt.want}, got); diff != "" {
			t.Errorf("Parse(%q) mismatch (-want +got):\n%s", tt.in, diff)
		}
	}
}

func TestAllProblemsReported(t *testing.T) {
	// An unknown key, a type mismatch and two validation problems, in
	// different sections: all are reported, sorted by line.
	in := `[admin]
listen = "127.0.0.1:http"

[network]
mtu = "jumbo"
cluster_cidrs = ["10.244.0.1/16"]

[log]
format = "text"
colour = "always"
`
	want := []string{
		`admin.listen: port must be a number between 1 and 65535, got "http" (line 2, column 1)`,
		"network.mtu: must be an integer, got a string (line 5, column 1)",
		`network.cluster_cidrs[0]: "10.244.0.1/16" has host bits set; use 10.244.0.0/16 (line 6, column 1)`,
		"log.colour: unknown key (line 10, column 1)",
	}
	got := parseProblems(t, in)
	if diff := cmp.Diff(want, problemStrings(got)); diff != "" {
		t.Errorf("problems mismatch (-want +got):\n%s", diff)
	}
	_, err := Parse([]byte(in))
	if diff := cmp.Diff(strings.Join(want, "\n"), err.Error()); diff != "" {
		t.Errorf("Error() mismatch (-want +got):\n%s", diff)
	}
}

func TestValidationProblemWithoutLine(t *testing.T) {
	// burst is not in the file, so its problem has no position.
	in := "[kubernetes]\nqps = 500.0\n"
	want := []string{"kubernetes.burst: must be at least qps (500), got 100"}
	if diff := cmp.Diff(want, problemStrings(parseProblems(t, in))); diff != "" {
		t.Errorf("problems mismatch (-want +got):\n%s", diff)
	}
}

func TestParseDoesNotAliasDefaults(t *testing.T) {
	// Decoding a shorter list must not leave a stale tail or write into a
	// slice shared with another Config.
	c, err := Parse([]byte("[node]\naddresses = []\n[network]\ncluster_cidrs = [\"10.1.0.0/16\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"10.1.0.0/16"}, c.Network.ClusterCIDRs); diff != "" {
		t.Errorf("cluster_cidrs mismatch (-want +got):\n%s", diff)
	}
	if Defaults().Network.ClusterCIDRs[0] != "10.244.0.0/16" {
		t.Error("Parse modified the defaults")
	}
}

func TestManyProblemsAllReported(t *testing.T) {
	var b strings.Builder
	const n = maxProbes + 50
	for i := range n {
		fmt.Fprintf(&b, "k%03d = 1\n", i)
	}
	got := parseProblems(t, b.String())
	if len(got) != n {
		t.Fatalf("got %d problems, want %d", len(got), n)
	}
	// Positions stop at the probe budget; the problems themselves do not.
	var withLine int
	for _, p := range got {
		if p.Line > 0 {
			withLine++
		}
	}
	if withLine != maxProbes {
		t.Errorf("%d problems have a line, want %d (the probe budget)", withLine, maxProbes)
	}
}
