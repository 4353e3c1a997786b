package proxy

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/nodenet/nodenet/datapath/iptables"
)

// CompileOptions configure Compile for one family.
type CompileOptions struct {
	Family iptables.Family
	// ClusterCIDRs are the pod CIDRs: traffic to a ClusterIP from outside
	// them (the node itself, other hosts) is masqueraded. Without any,
	// such traffic is not (kube-proxy without a cluster CIDR).
	ClusterCIDRs []netip.Prefix
	// NodeIPs are the addresses that accept node ports (kube-proxy's
	// nodePortAddresses); empty means every local address except
	// loopback (-m addrtype --dst-type LOCAL).
	NodeIPs []netip.Addr
	// MasqueradeAll masquerades all traffic to ClusterIPs.
	MasqueradeAll bool
	// MasqMark is the packet mark asking for masquerade, "value/mask";
	// empty means DefaultMasqMark.
	MasqMark string
}

// DefaultMasqMark is kube-proxy's default mark bit (14).
const DefaultMasqMark = "0x4000/0x4000"

// Validate reports every problem of o.
func (o CompileOptions) Validate() error {
	var errs []error
	if o.Family != iptables.IPv4 && o.Family != iptables.IPv6 {
		errs = append(errs, fmt.Errorf("family: invalid %s", o.Family))
	}
	if _, _, err := o.mark(); err != nil {
		errs = append(errs, fmt.Errorf("masqMark: %w", err))
	}
	return errors.Join(errs...)
}

// mark parses MasqMark; the mask defaults to the value.
func (o CompileOptions) mark() (val, mask uint32, err error) {
	s := o.MasqMark
	if s == "" {
		s = DefaultMasqMark
	}
	v, m, hasMask := strings.Cut(s, "/")
	x, err1 := strconv.ParseUint(v, 0, 32)
	y, err2 := strconv.ParseUint(m, 0, 32)
	if !hasMask {
		y, err2 = x, nil
	}
	switch {
	case err1 != nil || err2 != nil:
		return 0, 0, fmt.Errorf("%q is not value/mask", s)
	case x == 0 || x&^y != 0:
		return 0, 0, fmt.Errorf("%q: the value must be non-zero and inside the mask", s)
	}
	return uint32(x), uint32(y), nil
}

// Ruleset is the proxy's chains for one family, sorted by name.
type Ruleset struct{ NAT, Filter []iptables.Chain }

// Chains returns all chains, for iptables.Manager.Sync.
func (r Ruleset) Chains() []iptables.Chain { return append(slices.Clone(r.NAT), r.Filter...) }

// PortRules are the compiled pieces of one service port: its chains and
// its entries in the shared dispatch trees and fixed chains.
type PortRules struct {
	nat []iptables.Chain
	// Leaf rules of the dispatch trees.
	natDst, filterDst []entry
	natNP, filterNP   map[Protocol][]entry
	// hairpin holds the local endpoint addresses a selection chain can
	// DNAT to: their traffic back to themselves is masqueraded.
	hairpin map[netip.Addr]bool
	usesMNP bool
}

// compiler accumulates one port's or one whole Compile's pieces.
type compiler struct {
	o       CompileOptions
	v6      bool
	cidrs   []netip.Prefix
	nodeIPs []netip.Addr
	PortRules
}

// Compiler compiles service ports one at a time and assembles the pieces,
// so that a caller can keep the pieces of unchanged ports between syncs:
// at 10,000 services, compiling them all again took longer than writing
// one changed chain to the kernel. Not safe for concurrent use.
type Compiler struct{ base compiler }

// NewCompiler validates o.
func NewCompiler(o CompileOptions) (*Compiler, error) {
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("compile service rules: %w", err)
	}
	c := compiler{o: o, v6: o.Family == iptables.IPv6}
	for _, p := range o.ClusterCIDRs {
		if p.IsValid() && p.Addr().Is6() == c.v6 && !slices.Contains(c.cidrs, p.Masked()) {
			c.cidrs = append(c.cidrs, p.Masked())
		}
	}
	slices.SortFunc(c.cidrs, comparePrefix)
	for _, a := range o.NodeIPs {
		if a.IsValid() && a.Unmap().Is6() == c.v6 && !slices.Contains(c.nodeIPs, a.Unmap()) {
			c.nodeIPs = append(c.nodeIPs, a.Unmap())
		}
	}
	slices.SortFunc(c.nodeIPs, netip.Addr.Compare)
	return &Compiler{base: c}, nil
}

// fresh is a compiler with the settings and empty accumulators.
func (k *Compiler) fresh() *compiler {
	c := k.base
	c.PortRules = PortRules{natNP: map[Protocol][]entry{}, filterNP: map[Protocol][]entry{}, hairpin: map[netip.Addr]bool{}}
	return &c
}

// Port compiles one service port. A port without a ClusterIP of the family
// (a hand-made model; Build never makes one) compiles to nothing.
func (k *Compiler) Port(sp *ServicePort) PortRules {
	c := k.fresh()
	if sp.ClusterIP.IsValid() && sp.ClusterIP.Is6() == c.v6 {
		c.servicePort(sp)
	}
	return c.PortRules
}

// Assemble joins the pieces of every service port into the Ruleset. The
// order of parts does not matter.
func (k *Compiler) Assemble(parts []PortRules) Ruleset {
	c := k.fresh()
	for i := range parts {
		p := &parts[i]
		c.nat = append(c.nat, p.nat...)
		c.natDst = append(c.natDst, p.natDst...)
		c.filterDst = append(c.filterDst, p.filterDst...)
		for proto, es := range p.natNP {
			c.natNP[proto] = append(c.natNP[proto], es...)
		}
		for proto, es := range p.filterNP {
			c.filterNP[proto] = append(c.filterNP[proto], es...)
		}
		for ip := range p.hairpin {
			c.hairpin[ip] = true
		}
		c.usesMNP = c.usesMNP || p.usesMNP
	}
	return c.finish()
}

// Compile turns the service ports of one family into chains: the
// per-service chains, the dispatch trees and the fixed chains (see
// README.md). The output depends only on the input: same ports, same
// chains, byte for byte.
func Compile(ports []ServicePort, o CompileOptions) (Ruleset, error) {
	k, err := NewCompiler(o)
	if err != nil {
		return Ruleset{}, err
	}
	parts := make([]PortRules, len(ports))
	for i := range ports {
		parts[i] = k.Port(&ports[i])
	}
	return k.Assemble(parts), nil
}

// servicePort adds the chains and leaf rules of one service port.
func (c *compiler) servicePort(sp *ServicePort) {
	u := Categorize(sp.Endpoints)
	reachable := sp.externallyReachable()
	if len(u.Cluster) == 0 {
		// No usable endpoint anywhere: no nat chains; the packets keep
		// their destination and are rejected in filter at once.
		c.verdicts(sp, "REJECT", "has no endpoints", true, reachable)
		return
	}
	internalChain, internalEps := sp.chainSVC(), u.Cluster
	if sp.InternalLocal {
		internalChain, internalEps = sp.chainSVL(), u.Local
	}
	externalEps := u.Cluster
	if sp.ExternalLocal {
		externalEps = u.Local
	}
	// The selection chains DNAT themselves: no chain per endpoint. With
	// iptables-nft every restore costs time in proportion to the chains in
	// the table, and endpoints outnumber services ten to one.
	if !sp.InternalLocal || reachable {
		c.nat = append(c.nat, c.selection(sp, sp.chainSVC(), u.Cluster, internalChain == sp.chainSVC()))
	}
	if sp.InternalLocal || sp.ExternalLocal {
		c.nat = append(c.nat, c.selection(sp, sp.chainSVL(), u.Local, internalChain == sp.chainSVL()))
	}

	// Leaf rules: they depend on the spec and on whether endpoints exist,
	// never on which, so endpoint churn rewrites only the chains above.
	c.natDst = append(c.natDst, c.dstEntry(sp, sp.ClusterIP, "cluster IP", "-j "+internalChain))
	if len(internalEps) == 0 {
		c.filterDst = append(c.filterDst, c.dstEntry(sp, sp.ClusterIP, "has no local endpoints", "-j DROP"))
	}
	if !reachable {
		return
	}
	c.nat = append(c.nat, c.externalChain(sp))
	extDrop := len(externalEps) == 0
	for _, ip := range sp.ExternalIPs {
		c.natDst = append(c.natDst, c.dstEntry(sp, ip, "external IP", "-j "+sp.chainEXT()))
		if extDrop {
			c.filterDst = append(c.filterDst, c.dstEntry(sp, ip, "has no local endpoints", "-j DROP"))
		}
	}
	lbTarget := sp.chainEXT()
	if len(sp.SourceRanges) > 0 && len(sp.LoadBalancerIPs) > 0 {
		lbTarget = sp.chainFW()
		c.nat = append(c.nat, c.firewallChain(sp))
	}
	for _, ip := range sp.LoadBalancerIPs {
		c.natDst = append(c.natDst, c.dstEntry(sp, ip, "loadbalancer IP", "-j "+lbTarget))
		switch {
		case extDrop:
			c.filterDst = append(c.filterDst, c.dstEntry(sp, ip, "has no local endpoints", "-j DROP"))
		case lbTarget == sp.chainFW():
			// Allowed sources were DNATed in nat; what still carries the
			// LB IP as destination was not allowed.
			c.filterDst = append(c.filterDst, c.dstEntry(sp, ip, "traffic not accepted by "+sp.chainFW(), "-j DROP"))
		}
	}
	if sp.NodePort != 0 {
		c.natNP[sp.Protocol] = append(c.natNP[sp.Protocol], c.nodePortEntry(sp, "node port", "-j "+sp.chainEXT()))
		if extDrop {
			c.filterNP[sp.Protocol] = append(c.filterNP[sp.Protocol], c.nodePortEntry(sp, "has no local endpoints", "-j DROP"))
		}
	}
}

// verdicts adds filter rules with target for the service port's cluster IP
// (internal) and external destinations and node port (external).
func (c *compiler) verdicts(sp *ServicePort, target, comment string, internal, external bool) {
	t := "-j " + target
	if target == "REJECT" {
		// TCP gets a reset: ICMP errors are rate-limited per destination
		// (net.ipv4.icmp_ratelimit), so a client retrying would wait for
		// its SYN retransmit instead of failing at once.
		switch {
		case sp.Protocol == TCP:
			t += " --reject-with tcp-reset"
		case c.v6:
			t += " --reject-with icmp6-port-unreachable"
		default:
			t += " --reject-with icmp-port-unreachable"
		}
	}
	if internal {
		c.filterDst = append(c.filterDst, c.dstEntry(sp, sp.ClusterIP, comment, t))
	}
	if !external {
		return
	}
	for _, ip := range slices.Concat(sp.ExternalIPs, sp.LoadBalancerIPs) {
		c.filterDst = append(c.filterDst, c.dstEntry(sp, ip, comment, t))
	}
	if sp.NodePort != 0 {
		c.filterNP[sp.Protocol] = append(c.filterNP[sp.Protocol], c.nodePortEntry(sp, comment, t))
	}
}

// dstEntry is a leaf rule for (ip, protocol, port).
func (c *compiler) dstEntry(sp *ServicePort, ip netip.Addr, what, target string) entry {
	comment := sp.String() + " " + what
	p := sp.Protocol.lower()
	r := "-d " + hostPrefix(ip) + " -p " + p + " -m comment --comment " + quote(comment) +
		" -m " + p + " --dport " + strconv.Itoa(sp.Port) + " " + target
	return entry{key: ip.AsSlice(), rule: iptables.Rule(r)}
}

// nodePortEntry is a leaf rule for (protocol, node port).
func (c *compiler) nodePortEntry(sp *ServicePort, what, target string) entry {
	p := sp.Protocol.lower()
	r := "-p " + p + " -m comment --comment " + quote(sp.String()+" "+what) +
		" -m " + p + " --dport " + strconv.Itoa(sp.NodePort) + " " + target
	return entry{key: portKey(sp.NodePort), rule: iptables.Rule(r)}
}

// selection is an SVC or SVL chain: masquerade of ClusterIP traffic when
// this is the internal chain, affinity, then a uniformly random endpoint.
// Rule i of n matches with probability 1/(n-i), the last always.
func (c *compiler) selection(sp *ServicePort, name string, eps []Endpoint, internal bool) iptables.Chain {
	ch := iptables.Chain{Table: iptables.TableNAT, Name: name}
	if len(eps) == 0 {
		return ch // falls through; filter drops what nat did not DNAT
	}
	if internal {
		p := sp.Protocol.lower()
		match := "-d " + hostPrefix(sp.ClusterIP) + " -p " + p + " -m comment --comment " +
			quote(sp.String()+" cluster IP") + " -m " + p + " --dport " + strconv.Itoa(sp.Port)
		switch {
		case c.o.MasqueradeAll:
			ch.Rules = append(ch.Rules, iptables.Rule(match+" -j "+ChainMark))
		case len(c.cidrs) == 1:
			ch.Rules = append(ch.Rules, iptables.Rule("! -s "+c.cidrs[0].String()+" "+match+" -j "+ChainMark))
		case len(c.cidrs) > 1:
			c.usesMNP = true
			ch.Rules = append(ch.Rules, iptables.Rule(match+" -j "+ChainMarkNonPod))
		}
	}
	p := sp.Protocol.lower()
	for _, e := range eps {
		if e.Local {
			c.hairpin[e.IP] = true
		}
	}
	if sp.Affinity {
		// --update refreshes the client's last-seen time on every new
		// connection, as kube-proxy's --set in the endpoint chain does.
		for _, e := range eps {
			ch.Rules = append(ch.Rules, iptables.Rule("-p "+p+" -m comment --comment "+quote(sp.String()+" -> "+hostPort(e))+
				" -m recent --update --seconds "+strconv.Itoa(sp.AffinityTimeout)+" --reap --name "+sp.affinityList(e)+
				" --mask "+c.fullMask()+" --rsource -j DNAT --to-destination "+hostPort(e)))
		}
	}
	for i, e := range eps {
		r := "-p " + p + " -m comment --comment " + quote(sp.String()+" -> "+hostPort(e))
		if n := len(eps) - i; n > 1 {
			r += " -m statistic --mode random --probability " + probability(n)
		}
		if sp.Affinity {
			r += " -m recent --set --name " + sp.affinityList(e) + " --mask " + c.fullMask() + " --rsource"
		}
		ch.Rules = append(ch.Rules, iptables.Rule(r+" -j DNAT --to-destination "+hostPort(e)))
	}
	return ch
}

// externalChain handles traffic to node ports, external and LB IPs. With
// the Cluster policy it is masqueraded (the reply must come back through
// this node). With Local it keeps its client address and goes to local
// endpoints only; but traffic from pods (any node's) and from this node
// takes the cluster-wide set, like kube-proxy's short-circuit: it is not
// "external", and a node without local endpoints must still serve it.
func (c *compiler) externalChain(sp *ServicePort) iptables.Chain {
	ch := iptables.Chain{Table: iptables.TableNAT, Name: sp.chainEXT()}
	svc := sp.String()
	add := func(s string) { ch.Rules = append(ch.Rules, iptables.Rule(s)) }
	if !sp.ExternalLocal {
		add("-m comment --comment " + quote("masquerade traffic for "+svc+" external destinations") + " -j " + ChainMark)
		add("-j " + sp.chainSVC())
		return ch
	}
	for _, p := range c.cidrs {
		add("-s " + p.String() + " -m comment --comment " + quote("pod traffic for "+svc+" external destinations") + " -j " + sp.chainSVC())
	}
	add("-m comment --comment " + quote("masquerade LOCAL traffic for "+svc+" external destinations") + " -m addrtype --src-type LOCAL -j " + ChainMark)
	add("-m comment --comment " + quote("route LOCAL traffic for "+svc+" external destinations") + " -m addrtype --src-type LOCAL -j " + sp.chainSVC())
	add("-j " + sp.chainSVL())
	return ch
}

// firewallChain lets only loadBalancerSourceRanges reach the external
// chain. When a range holds one of the node's addresses, the LB IPs are
// allowed as sources too: a VIP bound on the node loops back from itself.
func (c *compiler) firewallChain(sp *ServicePort) iptables.Chain {
	ch := iptables.Chain{Table: iptables.TableNAT, Name: sp.chainFW()}
	comment := " -m comment --comment " + quote(sp.String()+" loadbalancer IP")
	fromNode := false
	for _, r := range sp.SourceRanges {
		ch.Rules = append(ch.Rules, iptables.Rule("-s "+r.String()+comment+" -j "+sp.chainEXT()))
		for _, a := range c.nodeIPs {
			fromNode = fromNode || r.Contains(a)
		}
	}
	if fromNode {
		for _, ip := range sp.LoadBalancerIPs {
			ch.Rules = append(ch.Rules, iptables.Rule("-s "+hostPrefix(ip)+comment+" -j "+sp.chainEXT()))
		}
	}
	return ch
}

func (c *compiler) fullMask() string {
	if c.v6 {
		return "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
	}
	return "255.255.255.255"
}

// probability is 1/n as iptables-save prints it back: xt_statistic stores
// round(p * 2^31) and prints stored/2^31 with 11 decimals, so this string
// survives a restore/save round trip unchanged.
func probability(n int) string {
	q := math.Round(float64(1<<31) / float64(n))
	return strconv.FormatFloat(q/float64(1<<31), 'f', 11, 64)
}

// hostPrefix is a as a full-length prefix, as iptables-save prints it.
func hostPrefix(a netip.Addr) string { return netip.PrefixFrom(a, a.BitLen()).String() }

// hostPort is "ip:port", "[ip6]:port" for IPv6.
func hostPort(e Endpoint) string { return netip.AddrPortFrom(e.IP, uint16(e.Port)).String() }

// quote writes a comment the way iptables-save (1.8.9, legacy and nft)
// prints it: always in double quotes (our comments hold no '"' or '\').
func quote(s string) string { return `"` + s + `"` }
