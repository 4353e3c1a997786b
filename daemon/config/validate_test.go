package config

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestValidate(t *testing.T) {
	const dnsMsg = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters"
	tests := []struct {
		name   string
		change func(c *Config)
		want   []string // each problem's String(), or a prefix of it ending in "..."
	}{
		// node
		{"name empty", func(c *Config) { c.Node.Name = "" }, []string{"node.name: must not be empty (set it when the hostname is unavailable)"}},
		{"name not dns", func(c *Config) { c.Node.Name = "Worker_1" }, []string{`node.name: "Worker_1" is not a valid node name: ` + dnsMsg + "..."}},
		{"name dns subdomain", func(c *Config) { c.Node.Name = "worker-1.rack-2.example" }, nil},
		{"addresses dual stack", func(c *Config) { c.Node.Addresses = []string{"192.0.2.1", "2001:db8::1"} }, nil},
		{"address invalid", func(c *Config) { c.Node.Addresses = []string{"192.0.2.300"} }, []string{`node.addresses[0]: "192.0.2.300" is not an IP address`}},
		{"address with zone", func(c *Config) { c.Node.Addresses = []string{"fe80::1%eth0"} }, []string{`node.addresses[0]: "fe80::1%eth0" must not have a zone: node addresses are reachable from other nodes`}},
		{"address 4in6", func(c *Config) { c.Node.Addresses = []string{"::ffff:192.0.2.1"} }, []string{`node.addresses[0]: "::ffff:192.0.2.1" is IPv4-mapped; write it as 192.0.2.1`}},
		{"address duplicate", func(c *Config) { c.Node.Addresses = []string{"2001:db8::1", "2001:db8:0::1"} }, []string{"node.addresses[1]: 2001:db8:0::1 duplicates addresses[0]"}},
		{"address two per family", func(c *Config) { c.Node.Addresses = []string{"192.0.2.1", "2001:db8::1", "192.0.2.2"} }, []string{"node.addresses[2]: 192.0.2.2 is a second IPv4 address after addresses[0]; at most one per family"}},

		// kubernetes
		{"kubeconfig empty", func(c *Config) { c.Kubernetes.Kubeconfig = "" }, []string{"kubernetes.kubeconfig: must not be empty"}},
		{"kubeconfig relative", func(c *Config) { c.Kubernetes.Kubeconfig = "kubeconfig" }, []string{`kubernetes.kubeconfig: must be an absolute path, got "kubeconfig"`}},
		{"qps zero", func(c *Config) { c.Kubernetes.QPS = 0 }, []string{"kubernetes.qps: must be a finite number greater than 0, got 0"}},
		{"qps negative", func(c *Config) { c.Kubernetes.QPS = -1 }, []string{"kubernetes.qps: must be a finite number greater than 0, got -1"}},
		{"qps NaN", func(c *Config) { c.Kubernetes.QPS = math.NaN() }, []string{"kubernetes.qps: must be a finite number greater than 0, got NaN"}},
		{"qps Inf", func(c *Config) { c.Kubernetes.QPS = math.Inf(1) }, []string{"kubernetes.qps: must be a finite number greater than 0, got +Inf"}},
		{"qps fractional", func(c *Config) { c.Kubernetes.QPS = 0.5 }, nil},
		{"burst zero", func(c *Config) { c.Kubernetes.Burst = 0 }, []string{"kubernetes.burst: must be at least 1, got 0"}},
		{"burst below qps", func(c *Config) { c.Kubernetes.Burst = 49 }, []string{"kubernetes.burst: must be at least qps (50), got 49"}},
		{"burst equals qps", func(c *Config) { c.Kubernetes.Burst = 50 }, nil},
		{"resync zero disables", func(c *Config) { c.Kubernetes.ResyncPeriod = 0 }, nil},
		{"resync negative", func(c *Config) { c.Kubernetes.ResyncPeriod = -time.Second }, []string{"kubernetes.resync_period: must not be negative (0 disables resync), got -1s"}},

		// network
		{"cluster cidrs empty", func(c *Config) { c.Network.ClusterCIDRs = nil }, []string{"network.cluster_cidrs: must list at least one CIDR"}},
		{"service cidrs empty", func(c *Config) { c.Network.ServiceCIDRs = []string{} }, []string{"network.service_cidrs: must list at least one CIDR"}},
		{"cidr invalid", func(c *Config) { c.Network.ClusterCIDRs = []string{"10.244.0.0"} }, []string{`network.cluster_cidrs[0]: "10.244.0.0" is not a CIDR`}},
		{"cidr host bits", func(c *Config) { c.Network.ServiceCIDRs = []string{"10.96.0.1/12"} }, []string{`network.service_cidrs[0]: "10.96.0.1/12" has host bits set; use 10.96.0.0/12`}},
		{"cidr 4in6", func(c *Config) { c.Network.ClusterCIDRs = []string{"::ffff:10.0.0.0/104"} }, []string{`network.cluster_cidrs[0]: "::ffff:10.0.0.0/104" is IPv4-mapped; use an IPv4 CIDR`}},
		{"cidr two per family", func(c *Config) { c.Network.ClusterCIDRs = []string{"10.244.0.0/16", "10.245.0.0/16"} }, []string{"network.cluster_cidrs[1]: 10.245.0.0/16 is a second IPv4 CIDR after cluster_cidrs[0]; at most one per family"}},
		{"cidrs dual stack", func(c *Config) {
			c.Network.ClusterCIDRs = []string{"fd00:10::/56", "10.244.0.0/16"}
			c.Network.ServiceCIDRs = []string{"10.96.0.0/12", "fd00:20::/112"}
		}, nil},
		{"service overlaps cluster", func(c *Config) { c.Network.ServiceCIDRs = []string{"10.244.128.0/20"} }, []string{"network.service_cidrs[0]: 10.244.128.0/20 overlaps cluster_cidrs[0] 10.244.0.0/16"}},
		{"service contains cluster", func(c *Config) { c.Network.ServiceCIDRs = []string{"10.0.0.0/8"} }, []string{"network.service_cidrs[0]: 10.0.0.0/8 overlaps cluster_cidrs[0] 10.244.0.0/16"}},
		{"backend vxlan", func(c *Config) { c.Network.Backend = "vxlan" }, nil},
		{"backend unknown", func(c *Config) { c.Network.Backend = "bgp" }, []string{`network.backend: must be one of host-gw, vxlan, got "bgp"`}},
		{"vni zero", func(c *Config) { c.Network.VXLANVNI = 0 }, []string{"network.vxlan_vni: must be between 1 and 16777215, got 0"}},
		{"vni too large", func(c *Config) { c.Network.VXLANVNI = 1 << 24 }, []string{"network.vxlan_vni: must be between 1 and 16777215, got 16777216"}},
		{"vxlan port", func(c *Config) { c.Network.VXLANPort = 70000 }, []string{"network.vxlan_port: must be between 1 and 65535, got 70000"}},

		// cni
		{"cni conf dir relative", func(c *Config) { c.CNI.ConfDir = "net.d" }, []string{`cni.conf_dir: must be an absolute path, got "net.d"`}},
		{"cni state dir empty", func(c *Config) { c.CNI.StateDir = "" }, []string{`cni.state_dir: must be an absolute path, got ""`}},
		{"cni conf file with dir", func(c *Config) { c.CNI.ConfFile = "a/b.conflist" }, []string{`cni.conf_file: must be a file name without a directory, got "a/b.conflist"`}},
		{"cni conf file suffix", func(c *Config) { c.CNI.ConfFile = "10-nodenet.conf" }, []string{`cni.conf_file: must end in .conflist (runtimes read it as a plugin list), got "10-nodenet.conf"`}},
		{"cni network name", func(c *Config) { c.CNI.NetworkName = "a b" }, []string{`cni.network_name: must be a non-empty name without slashes or spaces, got "a b"`}},
		{"cni bridge too long", func(c *Config) { c.CNI.Bridge = "a-very-long-bridge" }, []string{`cni.bridge: must be a Linux interface name (1-15 characters, no '/', ':' or spaces), got "a-very-long-bridge"`}},
		{"cni pod cidrs dual", func(c *Config) { c.CNI.PodCIDRs = []string{"10.244.3.0/24", "fd00:1::/64"} }, nil},
		{"cni pod cidr bad", func(c *Config) { c.CNI.PodCIDRs = []string{"10.244.3.1/24"} }, []string{`cni.pod_cidrs[0]: "10.244.3.1/24" has host bits set; use 10.244.3.0/24`}},
		{"cni leak grace short", func(c *Config) { c.CNI.LeakGrace = 500 * time.Millisecond }, []string{"cni.leak_grace: must be at least 1s, got 500ms"}},
		{"proxy node port addresses", func(c *Config) { c.Proxy.NodePortAddresses = []string{"10.0.0.0/8", "192.168.0.0/16"} }, nil},
		{"proxy node port address bad", func(c *Config) { c.Proxy.NodePortAddresses = []string{"10.0.0.1/8"} }, []string{`proxy.node_port_addresses[0]: "10.0.0.1/8" has host bits set; use 10.0.0.0/8`}},
		{"proxy range", func(c *Config) { c.Proxy.NodePortRange = "32767-30000" }, []string{`proxy.node_port_range: must be FIRST-LAST with 1 <= FIRST <= LAST <= 65535, got "32767-30000"`}},
		{"proxy range form", func(c *Config) { c.Proxy.NodePortRange = "30000" }, []string{`proxy.node_port_range: must be FIRST-LAST, e.g. 30000-32767, got "30000"`}},
		{"cni chain ok", func(c *Config) { c.CNI.Chain = []string{`{"type":"portmap","capabilities":{"portMappings":true}}`} }, nil},
		{"cni chain not json", func(c *Config) { c.CNI.Chain = []string{`portmap`} }, []string{"cni.chain[0]: is not a JSON object: ..."}},
		{"cni chain no type", func(c *Config) { c.CNI.Chain = []string{`{"name":"x"}`} }, []string{`cni.chain[0]: has no "type" naming the plugin`}},

		// ingress
		{"ingress listeners off", func(c *Config) { c.Ingress.HTTPListen, c.Ingress.HTTPSListen = "", "" }, nil},
		{"ingress http listen bad", func(c *Config) { c.Ingress.HTTPListen = "80" }, []string{`ingress.http_listen: "80" is not host:port: ...`}},
		{"ingress https listen port", func(c *Config) { c.Ingress.HTTPSListen = ":https" }, []string{`ingress.https_listen: port must be a number between 1 and 65535, got "https"`}},
		{"ingress listeners equal", func(c *Config) { c.Ingress.HTTPSListen = ":80" }, []string{`ingress.https_listen: must differ from http_listen, both are ":80"`}},
		{"ingress lb", func(c *Config) { c.Ingress.LoadBalancing = "ewma" }, []string{`ingress.load_balancing: must be one of round-robin, least-requests, got "ewma"`}},
		{"ingress cert without key", func(c *Config) { c.Ingress.DefaultCertificate = "/x.crt" }, []string{"ingress.default_key: default_certificate and default_key must be set together (or both empty for a self-signed certificate)"}},
		{"ingress timeouts", func(c *Config) { c.Ingress.ReadHeaderTimeout, c.Ingress.IdleTimeout, c.Ingress.EjectionTime = 0, -1, 0 }, []string{
			"ingress.ejection_time: must be > 0, got 0s", "ingress.idle_timeout: must be > 0, got -1ns", "ingress.read_header_timeout: must be > 0 (it stops slowloris clients), got 0s"}},
		{"ingress header bytes", func(c *Config) { c.Ingress.MaxHeaderBytes = 100 }, []string{"ingress.max_header_bytes: must be at least 4096, got 100"}},
		{"ingress body size", func(c *Config) { c.Ingress.MaxBodySize = "1t" }, []string{`ingress.max_body_size: size must be a number with an optional unit k, m or g, e.g. "1m", got "1t"`}},
		{"ingress body size unlimited", func(c *Config) { c.Ingress.MaxBodySize = "0" }, nil},
		{"ingress status address", func(c *Config) { c.Ingress.StatusAddresses = []string{"192.0.2.1", "lb.example"} }, []string{`ingress.status_addresses[1]: "lb.example" is not an IP address without zone`}},
		// policy
		{"policy log off", func(c *Config) { c.Policy.LogDenied = false }, nil},
		{"policy rates", func(c *Config) { c.Policy.LogRate = "10000/second" }, nil},
		{"policy rate per day", func(c *Config) { c.Policy.LogRate, c.Policy.LogBurst = "1/day", 4 }, nil},
		{"policy rate no unit", func(c *Config) { c.Policy.LogRate = "10" }, []string{`policy.log_rate: must be N/second, N/minute, N/hour or N/day, got "10"`}},
		{"policy rate short unit", func(c *Config) { c.Policy.LogRate = "10/min" }, []string{`policy.log_rate: must be N/second, N/minute, N/hour or N/day, got "10/min"`}},
		{"policy rate signed", func(c *Config) { c.Policy.LogRate = "+5/second" }, []string{`policy.log_rate: must be N/second, N/minute, N/hour or N/day, got "+5/second"`}},
		{"policy rate zero", func(c *Config) { c.Policy.LogRate = "0/hour" }, []string{`policy.log_rate: must be between 1 per unit and 10000/second, got "0/hour"`}},
		{"policy rate too fast", func(c *Config) { c.Policy.LogRate = "10001/second" }, []string{`policy.log_rate: must be between 1 per unit and 10000/second, got "10001/second"`}},
		{"policy burst zero", func(c *Config) { c.Policy.LogBurst = 0 }, []string{"policy.log_burst: must be between 1 and 10000, got 0"}},
		{"policy burst too big", func(c *Config) { c.Policy.LogBurst = 10001 }, []string{"policy.log_burst: must be between 1 and 10000, got 10001"}},
		{"policy burst overflows", func(c *Config) { c.Policy.LogRate = "1/day" }, []string{`policy.log_burst: 5 is too large for log_rate "1/day" (iptables' limit match overflows); raise the rate or lower the burst`}},
		{"policy group range", func(c *Config) { c.Policy.NFLOGGroup = 65536 }, []string{"policy.nflog_group: must be between 0 and 65535, got 65536"}},
		{"policy group zero", func(c *Config) { c.Policy.NFLOGGroup = 0 }, nil},

		{"mtu auto", func(c *Config) { c.Network.MTU = 0 }, nil},
		{"mtu ipv4 min", func(c *Config) { c.Network.MTU = 576 }, nil},
		{"mtu ipv4 max", func(c *Config) { c.Network.MTU = 9216 }, nil},
		{"mtu too small", func(c *Config) { c.Network.MTU = 575 }, []string{"network.mtu: must be 0 (auto-detect) or between 576 and 9216, got 575"}},
		{"mtu too large", func(c *Config) { c.Network.MTU = 9217 }, []string{"network.mtu: must be 0 (auto-detect) or between 576 and 9216, got 9217"}},
		{"mtu negative", func(c *Config) { c.Network.MTU = -1 }, []string{"network.mtu: must be 0 (auto-detect) or between 576 and 9216, got -1"}},
		{"mtu ipv6 too small", func(c *Config) {
			c.Network.ServiceCIDRs = []string{"fd00:20::/112"}
			c.Network.MTU = 1279
		}, []string{"network.mtu: must be 0 (auto-detect) or between 1280 and 9216 when an IPv6 CIDR is configured, got 1279"}},
		{"mtu ipv6 min", func(c *Config) {
			c.Network.ClusterCIDRs = []string{"fd00:10::/56"}
			c.Network.MTU = 1280
		}, nil},

		// reconcile
		{"min interval zero", func(c *Config) { c.Reconcile.MinInterval = 0 }, nil},
		{"min interval negative", func(c *Config) { c.Reconcile.MinInterval = -time.Millisecond }, []string{"reconcile.min_interval: must not be negative, got -1ms"}},
		{"min interval equals max", func(c *Config) { c.Reconcile.MinInterval = time.Minute }, nil},
		{"min interval above max", func(c *Config) { c.Reconcile.MinInterval = 2 * time.Minute }, []string{"reconcile.min_interval: must not exceed max_interval (1m0s), got 2m0s"}},
		{"retry zero", func(c *Config) { c.Reconcile.RetryInterval = 0 }, []string{"reconcile.retry_interval: must be greater than 0, got 0s"}},
		{"max zero", func(c *Config) { c.Reconcile.MaxInterval = 0 }, []string{"reconcile.max_interval: must be greater than 0, got 0s"}},

		// log
		{"level each", func(c *Config) { c.Log.Level = "debug" }, nil},
		{"level unknown", func(c *Config) { c.Log.Level = "INFO" }, []string{`log.level: must be one of debug, info, warn, error, got "INFO"`}},
		{"format json", func(c *Config) { c.Log.Format = "json" }, nil},
		{"format unknown", func(c *Config) { c.Log.Format = "logfmt" }, []string{`log.format: must be one of text, json, got "logfmt"`}},

		// admin
		{"listen disabled", func(c *Config) { c.Admin.Listen = "" }, nil},
		{"listen all addresses", func(c *Config) { c.Admin.Listen = ":9490" }, nil},
		{"listen localhost", func(c *Config) { c.Admin.Listen = "localhost:9490" }, nil},
		{"listen ipv6", func(c *Config) { c.Admin.Listen = "[::1]:9490" }, nil},
		{"listen no port", func(c *Config) { c.Admin.Listen = "127.0.0.1" }, []string{`admin.listen: "127.0.0.1" is not host:port: address 127.0.0.1: missing port in address`}},
		{"listen port zero", func(c *Config) { c.Admin.Listen = "127.0.0.1:0" }, []string{`admin.listen: port must be a number between 1 and 65535, got "0"`}},
		{"listen port too big", func(c *Config) { c.Admin.Listen = ":65536" }, []string{`admin.listen: port must be a number between 1 and 65535, got "65536"`}},
		{"listen host name", func(c *Config) { c.Admin.Listen = "metrics.example:9490" }, []string{`admin.listen: host must be empty (all addresses), "localhost" or an IP address, got "metrics.example"`}},
		{"control socket empty", func(c *Config) { c.Admin.ControlSocket = "" }, []string{"admin.control_socket: must not be empty"}},
		{"control socket relative", func(c *Config) { c.Admin.ControlSocket = "nodenet.sock" }, []string{`admin.control_socket: must be an absolute path, got "nodenet.sock"`}},
		{"control socket too long", func(c *Config) { c.Admin.ControlSocket = "/" + strings.Repeat("a", 107) }, []string{"admin.control_socket: is 108 bytes long; unix socket paths are limited to 107"}},
		{"control socket longest", func(c *Config) { c.Admin.ControlSocket = "/" + strings.Repeat("a", 106) }, nil},

		// several sections at once: every problem, sorted by key
		{"several", func(c *Config) {
			c.Log.Level = "loud"
			c.Admin.ControlSocket = "x"
			c.Kubernetes.QPS = 0
		}, []string{
			`admin.control_socket: must be an absolute path, got "x"`,
			"kubernetes.qps: must be a finite number greater than 0, got 0",
			`log.level: must be one of debug, info, warn, error, got "loud"`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Defaults()
			tt.change(&c)
			err := c.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			var errs *Errors
			if !errors.As(err, &errs) {
				t.Fatalf("Validate() = %v (%T), want *Errors", err, err)
			}
			got := problemStrings(errs.Problems)
			if len(got) == len(tt.want) {
				for i, w := range tt.want {
					if p, ok := strings.CutSuffix(w, "..."); ok && strings.HasPrefix(got[i], p) {
						got[i] = w
					}
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("problems mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestValidateNilWhenValid(t *testing.T) {
	c := Defaults()
	// A typed nil *Errors inside a non-nil error would make callers'
	// err != nil checks fire on a valid config.
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate() = %#v, want untyped nil", err)
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true}, {"100", 100, true}, {"8k", 8 << 10, true}, {"8K", 8 << 10, true},
		{"1m", 1 << 20, true}, {"2G", 2 << 30, true},
		{"", 0, false}, {"m", 0, false}, {"-1", 0, false}, {"+1", 0, false}, {"1.5m", 0, false},
		{"1mb", 0, false}, {"99999999999999999999", 0, false}, {"9999999999g", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}
