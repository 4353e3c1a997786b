package config

import (
	"fmt"
	"math"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Validate checks every section and returns a *Errors listing every problem,
// or nil. Problems found here carry no line numbers; Parse adds them.
func (c *Config) Validate() error {
	if ps := c.problems(); len(ps) > 0 {
		return newErrors(ps)
	}
	return nil
}

func (c *Config) problems() []Problem {
	var ps []Problem
	c.Node.validate(&section{name: "node", out: &ps})
	c.Kubernetes.validate(&section{name: "kubernetes", out: &ps})
	c.Network.validate(&section{name: "network", out: &ps})
	c.CNI.validate(&section{name: "cni", out: &ps})
	c.Proxy.validate(&section{name: "proxy", out: &ps})
	c.Reconcile.validate(&section{name: "reconcile", out: &ps})
	c.Log.validate(&section{name: "log", out: &ps})
	c.Admin.validate(&section{name: "admin", out: &ps})
	c.Ingress.validate(&section{name: "ingress", out: &ps})
	c.Policy.validate(&section{name: "policy", out: &ps})
	return ps
}

// section collects the problems of one section under its key prefix.
type section struct {
	name string
	out  *[]Problem
}

func (s *section) add(key, format string, args ...any) {
	*s.out = append(*s.out, Problem{Key: s.name + "." + key, Msg: fmt.Sprintf(format, args...)})
}

func (n Node) validate(s *section) {
	switch {
	case n.Name == "":
		s.add("name", "must not be empty (set it when the hostname is unavailable)")
	default:
		if errs := validation.IsDNS1123Subdomain(n.Name); len(errs) > 0 {
			s.add("name", "%q is not a valid node name: %s", n.Name, strings.Join(errs, "; "))
		}
	}

	seen := map[netip.Addr]int{}
	family := map[bool]int{} // is IPv4 -> index of the first address of that family
	for i, a := range n.Addresses {
		key := fmt.Sprintf("addresses[%d]", i)
		ip, err := netip.ParseAddr(a)
		switch {
		case err != nil:
			s.add(key, "%q is not an IP address", a)
			continue
		case ip.Zone() != "":
			s.add(key, "%q must not have a zone: node addresses are reachable from other nodes", a)
			continue
		case ip.Is4In6():
			s.add(key, "%q is IPv4-mapped; write it as %s", a, ip.Unmap())
			continue
		}
		if j, dup := seen[ip]; dup {
			s.add(key, "%s duplicates addresses[%d]", a, j)
			continue
		}
		seen[ip] = i
		if j, dup := family[ip.Is4()]; dup {
			s.add(key, "%s is a second %s address after addresses[%d]; at most one per family", a, familyName(ip.Is4()), j)
			continue
		}
		family[ip.Is4()] = i
	}
}

func (k Kubernetes) validate(s *section) {
	switch {
	case k.Kubeconfig == "":
		s.add("kubeconfig", "must not be empty")
	case !filepath.IsAbs(k.Kubeconfig):
		s.add("kubeconfig", "must be an absolute path, got %q", k.Kubeconfig)
	}

	qpsOK := k.QPS > 0 && !math.IsInf(k.QPS, 1) // also rejects NaN
	if !qpsOK {
		s.add("qps", "must be a finite number greater than 0, got %v", k.QPS)
	}
	switch {
	case k.Burst < 1:
		s.add("burst", "must be at least 1, got %d", k.Burst)
	case qpsOK && float64(k.Burst) < k.QPS:
		// client-go's token bucket cannot sustain qps if burst is smaller.
		s.add("burst", "must be at least qps (%v), got %d", k.QPS, k.Burst)
	}

	if k.ResyncPeriod < 0 {
		s.add("resync_period", "must not be negative (0 disables resync), got %s", k.ResyncPeriod)
	}
}

func (n Network) validate(s *section) {
	cluster := cidrs(s, "cluster_cidrs", n.ClusterCIDRs)
	service := cidrs(s, "service_cidrs", n.ServiceCIDRs)
	for _, sp := range service {
		for _, cp := range cluster {
			if sp.p.Overlaps(cp.p) {
				s.add(fmt.Sprintf("service_cidrs[%d]", sp.i), "%s overlaps cluster_cidrs[%d] %s", sp.p, cp.i, cp.p)
			}
		}
	}

	is6 := func(c indexedPrefix) bool { return c.p.Addr().Is6() }
	ipv6 := slices.ContainsFunc(cluster, is6) || slices.ContainsFunc(service, is6)
	switch {
	case n.MTU == 0:
	case ipv6 && (n.MTU < 1280 || n.MTU > 9216):
		// RFC 8200: every IPv6 link must carry 1280-byte packets.
		s.add("mtu", "must be 0 (auto-detect) or between 1280 and 9216 when an IPv6 CIDR is configured, got %d", n.MTU)
	case n.MTU < 576 || n.MTU > 9216:
		s.add("mtu", "must be 0 (auto-detect) or between 576 and 9216, got %d", n.MTU)
	}
	if !slices.Contains(backends, n.Backend) {
		s.add("backend", "must be one of %s, got %q", strings.Join(backends, ", "), n.Backend)
	}
	if n.VXLANVNI < 1 || n.VXLANVNI > 1<<24-1 {
		s.add("vxlan_vni", "must be between 1 and 16777215, got %d", n.VXLANVNI)
	}
	if n.VXLANPort < 1 || n.VXLANPort > 65535 {
		s.add("vxlan_port", "must be between 1 and 65535, got %d", n.VXLANPort)
	}
}

var backends = []string{"host-gw", "vxlan"}

type indexedPrefix struct {
	i int
	p netip.Prefix
}

// cidrs checks a list of CIDRs (one per family, at least one, canonical)
// and returns the valid ones with their list index.
func cidrs(s *section, key string, list []string) []indexedPrefix {
	if len(list) == 0 {
		s.add(key, "must list at least one CIDR")
		return nil
	}
	var valid []indexedPrefix
	family := map[bool]int{}
	for i, c := range list {
		ikey := fmt.Sprintf("%s[%d]", key, i)
		p, ok := cidr(s, ikey, c)
		if !ok {
			continue
		}
		is4 := p.Addr().Is4()
		if j, dup := family[is4]; dup {
			s.add(ikey, "%s is a second %s CIDR after %s[%d]; at most one per family", c, familyName(is4), key, j)
			continue
		}
		family[is4] = i
		valid = append(valid, indexedPrefix{i, p})
	}
	return valid
}

// cidr checks one canonical CIDR, reporting a problem under key.
func cidr(s *section, key, c string) (netip.Prefix, bool) {
	p, err := netip.ParsePrefix(c)
	switch {
	case err != nil:
		s.add(key, "%q is not a CIDR", c)
	case p.Addr().Is4In6():
		s.add(key, "%q is IPv4-mapped; use an IPv4 CIDR", c)
	case p.Masked() != p:
		s.add(key, "%q has host bits set; use %s", c, p.Masked())
	default:
		return p, true
	}
	return netip.Prefix{}, false
}

func familyName(is4 bool) string {
	if is4 {
		return "IPv4"
	}
	return "IPv6"
}

func (r Reconcile) validate(s *section) {
	switch {
	case r.MinInterval < 0:
		s.add("min_interval", "must not be negative, got %s", r.MinInterval)
	case r.MaxInterval > 0 && r.MinInterval > r.MaxInterval:
		s.add("min_interval", "must not exceed max_interval (%s), got %s", r.MaxInterval, r.MinInterval)
	}
	if r.RetryInterval <= 0 {
		s.add("retry_interval", "must be greater than 0, got %s", r.RetryInterval)
	}
	if r.MaxInterval <= 0 {
		s.add("max_interval", "must be greater than 0, got %s", r.MaxInterval)
	}
}

// Log levels and formats, in the order the error message lists them.
var (
	logLevels  = []string{"debug", "info", "warn", "error"}
	logFormats = []string{"text", "json"}
)

func (l Log) validate(s *section) {
	if !slices.Contains(logLevels, l.Level) {
		s.add("level", "must be one of %s, got %q", strings.Join(logLevels, ", "), l.Level)
	}
	if !slices.Contains(logFormats, l.Format) {
		s.add("format", "must be one of %s, got %q", strings.Join(logFormats, ", "), l.Format)
	}
}

// maxSocketPath is the longest path a unix socket can be bound at: Linux's
// sun_path is 108 bytes including the terminating NUL.
const maxSocketPath = 107

func (a Admin) validate(s *section) {
	if a.Listen != "" {
		listenKey(s, "listen", a.Listen)
	}
	switch {
	case a.ControlSocket == "":
		s.add("control_socket", "must not be empty")
	case !filepath.IsAbs(a.ControlSocket):
		s.add("control_socket", "must be an absolute path, got %q", a.ControlSocket)
	case len(a.ControlSocket) > maxSocketPath:
		s.add("control_socket", "is %d bytes long; unix socket paths are limited to %d", len(a.ControlSocket), maxSocketPath)
	}
}

// listenKey checks the host:port at key.
func listenKey(s *section, key, listen string) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		s.add(key, "%q is not host:port: %v", listen, err)
		return
	}
	// Only numeric ports: service names depend on /etc/services.
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		s.add(key, "port must be a number between 1 and 65535, got %q", port)
	}
	// No host names other than localhost: resolving one at start-up would
	// make the daemon depend on DNS before it has a network.
	if host != "" && host != "localhost" {
		if _, err := netip.ParseAddr(host); err != nil {
			s.add(key, `host must be empty (all addresses), "localhost" or an IP address, got %q`, host)
		}
	}
}
