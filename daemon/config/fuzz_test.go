package config

import (
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// FuzzParse checks that Parse never panics and that whatever it accepts is
// valid and survives a render/parse round trip unchanged.
func FuzzParse(f *testing.F) {
	example, err := os.ReadFile(examplePath)
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		string(example),
		"",
		"[node\n",
		"log = 5\n[[admin]]\nlisten = \"\"\n",
		"network = { mtu = 1400, cluster_cidrs = [\"fd00::/48\"] }\nkubernetes.qps = 0.5\nkubernetes.burst = 1\n",
		"[reconcile]\nmin_interval = \"5x\"\nmax_interval = 2024-01-01\nretry_interval = 5\n",
		"[node]\nname = \"a\"\naddresses = [\"1.2.3.4\", \"::1\", 7]\n[extra.sub]\na = 1\n",
		"[kubernetes]\nqps = inf\nburst = 9223372036854775807\nresync_period = \"-1s\"\n",
		"[admin]\nlisten = \"[fe80::1%eth0]:1\"\ncontrol_socket = \"/\\u0000\"\n",
		"\"\" = 1\n[\"\".\"\"]\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			if c != nil {
				t.Fatalf("Parse returned a config with error %v", err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse accepted a config that does not validate: %v", err)
		}
		out := c.TOML()
		again, err := Parse([]byte(out))
		if err != nil {
			t.Fatalf("Parse(TOML()) failed: %v\nrendered:\n%s", err, out)
		}
		if diff := cmp.Diff(c, again, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("round trip mismatch (-parsed +reparsed):\n%s\nrendered:\n%s", diff, out)
		}
		if d := Diff(c, again); len(d) != 0 {
			t.Fatalf("Diff after round trip = %v, want none", d)
		}
	})
}
