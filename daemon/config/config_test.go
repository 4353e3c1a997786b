package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/google/go-cmp/cmp"
)

const examplePath = "../../config.example.toml"

// TestMain pins the hostname so defaults do not depend on the test machine.
func TestMain(m *testing.M) {
	hostname = func() (string, error) { return "Node-A.Example", nil }
	os.Exit(m.Run())
}

func TestDefaults(t *testing.T) {
	want := Config{
		Node: Node{Name: "node-a.example", Addresses: []string{}},
		Kubernetes: Kubernetes{
			Kubeconfig:   "/etc/nodenet/kubeconfig",
			QPS:          50,
			Burst:        100,
			ResyncPeriod: 10 * time.Minute,
		},
		Network: Network{
			ClusterCIDRs: []string{"10.244.0.0/16"},
			ServiceCIDRs: []string{"10.96.0.0/12"},
			Backend:      "host-gw",
			VXLANVNI:     1,
			VXLANPort:    8472,
		},
		CNI: CNI{
			ConfDir:     "/etc/cni/net.d",
			ConfFile:    "10-nodenet.conflist",
			NetworkName: "nodenet",
			Bridge:      "nodenet0",
			StateDir:    "/var/lib/nodenet",
			PodCIDRs:    []string{},
			Chain:       []string{},
			LeakGrace:   time.Minute,
		},
		Proxy: Proxy{NodePortAddresses: []string{}, NodePortRange: "30000-32767"},
		Reconcile: Reconcile{
			MinInterval:   100 * time.Millisecond,
			RetryInterval: time.Second,
			MaxInterval:   time.Minute,
		},
		Log:   Log{Level: "info", Format: "text"},
		Admin: Admin{Listen: "127.0.0.1:9490", ControlSocket: "/run/nodenet/nodenet.sock"},
		Ingress: Ingress{
			Enabled:           true,
			HTTPListen:        ":80",
			HTTPSListen:       ":443",
			LoadBalancing:     "round-robin",
			AccessLog:         true,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       time.Minute,
			MaxHeaderBytes:    1 << 20,
			MaxBodySize:       "1m",
			EjectionTime:      30 * time.Second,
			StatusAddresses:   []string{},
		},
		Policy: Policy{LogDenied: true, LogRate: "10/minute", LogBurst: 5, NFLOGGroup: 100},
	}
	got := Defaults()
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Defaults() mismatch (-want +got):\n%s", diff)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("Defaults().Validate() = %v, want nil", err)
	}
	// Slices are fresh per call: changing one Defaults must not leak.
	got.Network.ClusterCIDRs[0] = "changed"
	if Defaults().Network.ClusterCIDRs[0] != "10.244.0.0/16" {
		t.Error("Defaults() shares slices between calls")
	}
}

func TestDefaultsWithoutHostname(t *testing.T) {
	saved := hostname
	t.Cleanup(func() { hostname = saved })
	hostname = func() (string, error) { return "", errors.New("no uts namespace") }

	_, err := Parse(nil)
	want := "node.name: must not be empty (set it when the hostname is unavailable)"
	if err == nil || err.Error() != want {
		t.Errorf("Parse(empty) without hostname = %v, want %q", err, want)
	}
	c, err := Parse([]byte("[node]\nname = \"worker-1\"\n"))
	if err != nil || c.Node.Name != "worker-1" {
		t.Errorf("Parse(name set) = %v, %v; want worker-1", c, err)
	}
}

func TestExampleIsDefaults(t *testing.T) {
	data, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse(data)
	if err != nil {
		t.Fatalf("Parse(%s):\n%v", examplePath, err)
	}
	// node.name is commented out in the example, so it is the hostname here
	// too and the whole config must match.
	if diff := cmp.Diff(Defaults(), *c); diff != "" {
		t.Errorf("example differs from Defaults() (-defaults +example):\n%s", diff)
	}
}

// TestExampleDocumentsEveryKey fails when a key is added to Config without
// documenting it in config.example.toml.
func TestExampleDocumentsEveryKey(t *testing.T) {
	data, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	md, err := toml.Decode(string(data), &m)
	if err != nil {
		t.Fatal(err)
	}
	// Keys whose default depends on the machine are commented out.
	commented := map[string]bool{"node.name": true}
	for _, key := range leafKeys() {
		if commented[key] {
			name := key[strings.LastIndexByte(key, '.')+1:]
			if !regexp.MustCompile(`(?m)^# ` + name + ` = `).Match(data) {
				t.Errorf("%s: not documented as a commented-out line in %s", key, examplePath)
			}
			continue
		}
		if !md.IsDefined(strings.Split(key, ".")...) {
			t.Errorf("%s: missing from %s", key, examplePath)
		}
	}
	// A floor, not a pin: sections grow, but a reflection walk that
	// silently finds fewer keys must fail.
	if len(leafKeys()) < 30 {
		t.Errorf("leafKeys() = %d keys, want at least 30: %v", len(leafKeys()), leafKeys())
	}
}

func TestParseOverridesEveryKey(t *testing.T) {
	in := `
[node]
name = "worker-7"
addresses = ["192.0.2.7", "2001:db8::7"]

[kubernetes]
kubeconfig = "/var/lib/nodenet/kubeconfig"
qps = 20
burst = 40
resync_period = "0s"

[network]
cluster_cidrs = ["10.1.0.0/16", "fd00:10::/56"]
service_cidrs = ["10.2.0.0/16", "fd00:20::/112"]
mtu = 1450
backend = "vxlan"
vxlan_vni = 42
vxlan_port = 4789

[cni]
conf_dir = "/etc/cni/alt"
conf_file = "20-nn.conflist"
network_name = "pods"
bridge = "br-pods"
state_dir = "/var/lib/nn"
pod_cidrs = ["10.1.7.0/24"]
chain = ['{"type":"portmap"}']
leak_grace = "10s"

[proxy]
node_port_addresses = ["10.250.0.0/24", "fd00::/64"]
node_port_range = "20000-20999"
masquerade_all = true

[reconcile]
min_interval = "0s"
retry_interval = "500ms"
max_interval = "5m"

[log]
level = "debug"
format = "json"

[admin]
listen = ""
control_socket = "/run/nn.sock"
pprof = true

[ingress]
enabled = false
http_listen = "127.0.0.1:8080"
https_listen = "[::1]:8443"
load_balancing = "least-requests"
default_certificate = "/etc/nodenet/tls.crt"
default_key = "/etc/nodenet/tls.key"
access_log = false
read_header_timeout = "5s"
idle_timeout = "2m"
max_header_bytes = 65536
max_body_size = "8m"
ejection_time = "10s"
status_addresses = ["192.0.2.10", "2001:db8::10"]

[policy]
log_denied = false
log_rate = "2/second"
log_burst = 20
nflog_group = 7
`
	want := Config{
		Node:       Node{Name: "worker-7", Addresses: []string{"192.0.2.7", "2001:db8::7"}},
		Kubernetes: Kubernetes{Kubeconfig: "/var/lib/nodenet/kubeconfig", QPS: 20, Burst: 40},
		Network: Network{
			ClusterCIDRs: []string{"10.1.0.0/16", "fd00:10::/56"},
			ServiceCIDRs: []string{"10.2.0.0/16", "fd00:20::/112"},
			MTU:          1450,
			Backend:      "vxlan",
			VXLANVNI:     42,
			VXLANPort:    4789,
		},
		CNI: CNI{ConfDir: "/etc/cni/alt", ConfFile: "20-nn.conflist", NetworkName: "pods", Bridge: "br-pods",
			StateDir: "/var/lib/nn", PodCIDRs: []string{"10.1.7.0/24"}, Chain: []string{`{"type":"portmap"}`}, LeakGrace: 10 * time.Second},
		Proxy:     Proxy{NodePortAddresses: []string{"10.250.0.0/24", "fd00::/64"}, NodePortRange: "20000-20999", MasqueradeAll: true},
		Reconcile: Reconcile{RetryInterval: 500 * time.Millisecond, MaxInterval: 5 * time.Minute},
		Log:       Log{Level: "debug", Format: "json"},
		Admin:     Admin{ControlSocket: "/run/nn.sock", Pprof: true},
		Ingress: Ingress{HTTPListen: "127.0.0.1:8080", HTTPSListen: "[::1]:8443", LoadBalancing: "least-requests",
			DefaultCertificate: "/etc/nodenet/tls.crt", DefaultKey: "/etc/nodenet/tls.key",
			ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 65536,
			MaxBodySize: "8m", EjectionTime: 10 * time.Second, StatusAddresses: []string{"192.0.2.10", "2001:db8::10"}},
		Policy: Policy{LogRate: "2/second", LogBurst: 20, NFLOGGroup: 7},
	}
	got, err := Parse([]byte(in))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if diff := cmp.Diff(want, *got); diff != "" {
		t.Errorf("Parse mismatch (-want +got):\n%s", diff)
	}
	// Every leaf was overridden, so Diff against the defaults names them all.
	if diff := cmp.Diff(leafKeysSorted(), Diff(new(Defaults()), got)); diff != "" {
		t.Errorf("Diff(defaults, parsed) mismatch (-want +got):\n%s", diff)
	}
}

func TestParseKeepsDefaultsForMissingKeys(t *testing.T) {
	got, err := Parse([]byte("[log]\nlevel = \"warn\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := Defaults()
	want.Log.Level = "warn"
	if diff := cmp.Diff(want, *got); diff != "" {
		t.Errorf("mismatch (-want +got):\n%s", diff)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()

	missing := filepath.Join(dir, "missing.toml")
	if _, err := Load(missing); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("Load(missing) = %v, want a not-exist error naming the path", err)
	}

	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte("[log]\nlevel = \"loud\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(bad)
	var errs *Errors
	if !errors.As(err, &errs) || len(errs.Problems) != 1 || !strings.HasPrefix(err.Error(), "config "+bad+":\n") {
		t.Errorf("Load(bad) = %v, want *Errors with one problem, prefixed by the path", err)
	}

	good := filepath.Join(dir, "good.toml")
	if err := os.WriteFile(good, []byte("[network]\nmtu = 1400\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(good)
	if err != nil || c.Network.MTU != 1400 {
		t.Errorf("Load(good) = %+v, %v; want mtu 1400", c, err)
	}
}

func TestTOMLRoundTrip(t *testing.T) {
	c := Defaults()
	c.Node.Addresses = []string{"192.0.2.1"}
	c.Kubernetes.QPS = 12.5
	c.Kubernetes.Burst = 13
	c.Network.MTU = 9000
	c.Reconcile.MinInterval = 1500 * time.Millisecond
	c.Admin.Listen = ""
	out := c.TOML()
	for _, want := range []string{"[node]\n", `name = "node-a.example"`, `min_interval = "1.5s"`, `listen = ""`, "qps = 12.5"} {
		if !strings.Contains(out, want) {
			t.Errorf("TOML() lacks %q:\n%s", want, out)
		}
	}
	got, err := Parse([]byte(out))
	if err != nil {
		t.Fatalf("Parse(TOML()):\n%v\n%s", err, out)
	}
	if diff := cmp.Diff(c, *got); diff != "" {
		t.Errorf("round trip mismatch (-want +got):\n%s", diff)
	}
}

func TestDiff(t *testing.T) {
	tests := []struct {
		name   string
		change func(c *Config)
		want   []string
	}{
		{"equal", func(*Config) {}, nil},
		{"nil and empty slices are equal", func(c *Config) { c.Node.Addresses = nil }, nil},
		{"scalars", func(c *Config) {
			c.Network.MTU = 1400
			c.Log.Level = "debug"
		}, []string{"log.level", "network.mtu"}},
		{"duration", func(c *Config) { c.Reconcile.MaxInterval = time.Hour }, []string{"reconcile.max_interval"}},
		{"slice element", func(c *Config) { c.Network.ServiceCIDRs[0] = "10.97.0.0/16" }, []string{"network.service_cidrs"}},
		{"slice length", func(c *Config) {
			c.Network.ClusterCIDRs = append(c.Network.ClusterCIDRs, "fd00::/48")
		}, []string{"network.cluster_cidrs"}},
		{"sorted across sections", func(c *Config) {
			c.Node.Name = "other"
			c.Admin.Listen = ""
			c.Kubernetes.QPS = 1
		}, []string{"admin.listen", "kubernetes.qps", "node.name"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			old, cur := Defaults(), Defaults()
			tt.change(&cur)
			if diff := cmp.Diff(tt.want, Diff(&old, &cur)); diff != "" {
				t.Errorf("Diff mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.want, Diff(&cur, &old)); diff != "" {
				t.Errorf("reverse Diff mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDiffNil(t *testing.T) {
	c := Defaults()
	if got := Diff(nil, nil); got != nil {
		t.Errorf("Diff(nil, nil) = %v, want nil", got)
	}
	// Every default is non-zero except network.mtu and the empty lists.
	want := []string{}
	for _, k := range leafKeysSorted() {
		if k != "network.mtu" && k != "node.addresses" && k != "cni.pod_cidrs" && k != "cni.chain" && k != "proxy.node_port_addresses" && k != "proxy.masquerade_all" && k != "admin.pprof" &&
			k != "ingress.default_certificate" && k != "ingress.default_key" && k != "ingress.status_addresses" {
			want = append(want, k)
		}
	}
	if diff := cmp.Diff(want, Diff(nil, &c)); diff != "" {
		t.Errorf("Diff(nil, defaults) mismatch (-want +got):\n%s", diff)
	}
}

func TestProblemString(t *testing.T) {
	tests := []struct {
		p    Problem
		want string
	}{
		{Problem{Key: "network.mtu", Line: 12, Column: 1, Msg: "bad"}, "network.mtu: bad (line 12, column 1)"},
		{Problem{Key: "network.mtu", Line: 12, Msg: "bad"}, "network.mtu: bad (line 12)"},
		{Problem{Key: "network.mtu", Msg: "bad"}, "network.mtu: bad"},
		{Problem{Line: 3, Column: 7, Msg: "invalid TOML: x"}, "invalid TOML: x (line 3, column 7)"},
	}
	for _, tt := range tests {
		if got := tt.p.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
	errs := newErrors([]Problem{{Key: "b", Line: 2, Msg: "x"}, {Key: "c", Msg: "y"}, {Key: "a", Line: 2, Msg: "z"}})
	if got, want := errs.Error(), "c: y\na: z (line 2)\nb: x (line 2)"; got != want {
		t.Errorf("Errors.Error() = %q, want %q", got, want)
	}
}

func leafKeysSorted() []string {
	keys := leafKeys()
	slices.Sort(keys)
	return keys
}
