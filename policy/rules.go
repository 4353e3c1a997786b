package policy

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/nodenet/nodenet/datapath/iptables"
)

// RuleOptions configure Rules for one node and family.
type RuleOptions struct {
	Family iptables.Family
	Node   string
	// NodeIPs are the node's own addresses, always let through to its
	// pods (kubelet probes). Give every address the node may use as a
	// source towards pods (its InternalIP, the pod bridge's gateway
	// address). Empty means every local address (-m addrtype --src-type
	// LOCAL).
	NodeIPs []netip.Addr
	// LogDenied adds an NFLOG rule before each pod chain's DROP, limited
	// per chain to LogRate (iptables limit syntax, "" = "10/minute") with
	// LogBurst (0 = 5), sent to NFLOG group LogGroup with the prefix of
	// ParseLogPrefix.
	LogDenied bool
	LogRate   string
	LogBurst  int
	LogGroup  uint16
}

// Defaults of the log rule's limit.
const (
	DefaultLogRate  = "10/minute"
	DefaultLogBurst = 5
)

// Validate reports every problem of o.
func (o RuleOptions) Validate() error {
	var errs []error
	if o.Family != iptables.IPv4 && o.Family != iptables.IPv6 {
		errs = append(errs, fmt.Errorf("family: invalid %s", o.Family))
	}
	if o.Node == "" {
		errs = append(errs, errors.New("node: empty"))
	}
	// The rate goes into the restore payload as one word.
	if strings.ContainsAny(o.LogRate, " \t\n\"") {
		errs = append(errs, fmt.Errorf("log rate: invalid %q", o.LogRate))
	}
	if o.LogBurst < 0 {
		errs = append(errs, fmt.Errorf("log burst: negative %d", o.LogBurst))
	}
	return errors.Join(errs...)
}

// Ruleset is the policy's filter chains and ipsets for one node and
// family, each sorted by name. Every set a rule names is in Sets.
type Ruleset struct {
	Filter []iptables.Chain
	Sets   []IPSet
}

// IPSet is one ipset: Type "hash:ip" or "hash:net", Family "inet" or
// "inet6". Members are as `ipset add` takes them, sorted; a hash:net
// member may end in " nomatch" (an ipBlock except).
type IPSet struct {
	Name    string
	Type    string
	Family  string
	Members []string
}

// rulesCompiler accumulates one Rules call.
type rulesCompiler struct {
	m    *Model
	o    RuleOptions
	v6   bool
	fam  string // "4" or "6", the set-name suffix
	sets map[string]*IPSet
}

// Rules renders the chains and sets enforcing the model on node o.Node:
// egress of its pods and ingress to them. Output depends only on the
// model and o. o must be valid (Validate); a family other than IPv6 is
// taken as IPv4.
func (m *Model) Rules(o RuleOptions) Ruleset {
	c := &rulesCompiler{m: m, o: o, v6: o.Family == iptables.IPv6, fam: "4", sets: map[string]*IPSet{}}
	if c.v6 {
		c.fam = "6"
	}
	top := iptables.Chain{Table: iptables.TableFilter, Name: ChainPolicy, Rules: []iptables.Rule{
		// Replies and related packets (ICMP errors) of allowed connections.
		"-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
	}}
	nodeIPs := c.famIPs(o.NodeIPs)
	if len(nodeIPs) > 0 {
		c.addSet(nodeSet(c.fam), "hash:ip", ipStrings(nodeIPs))
		top.Rules = append(top.Rules, iptables.Rule("-m set --match-set "+nodeSet(c.fam)+" src -j RETURN"))
	} else {
		top.Rules = append(top.Rules, "-m addrtype --src-type LOCAL -j RETURN")
	}
	top.Rules = append(top.Rules,
		iptables.Rule("-m set --match-set "+egressSet(c.fam)+" src -j "+ChainEgress),
		iptables.Rule("-m set --match-set "+ingressSet(c.fam)+" dst -j "+ChainIngress))

	chains := []iptables.Chain{top}
	entries := map[direction][]dispatchEntry{}
	isolated := map[direction][]netip.Addr{}
	for _, p := range m.pods {
		ips := c.famIPs(p.IPs)
		if p.Node != o.Node || len(ips) == 0 {
			continue
		}
		for _, d := range []direction{egress, ingress} {
			if len(p.policies(d)) == 0 {
				continue
			}
			ch := c.podChain(p, d)
			chains = append(chains, ch)
			for _, ip := range ips {
				entries[d] = append(entries[d], dispatchEntry{ip, ch.Name})
			}
			isolated[d] = append(isolated[d], ips...)
		}
	}
	chains = append(chains, dispatch(ChainIngress, branchIngress, "-d", entries[ingress])...)
	chains = append(chains, dispatch(ChainEgress, branchEgress, "-s", entries[egress])...)
	c.addSet(ingressSet(c.fam), "hash:ip", ipStrings(isolated[ingress]))
	c.addSet(egressSet(c.fam), "hash:ip", ipStrings(isolated[egress]))
	slices.SortFunc(chains, func(a, b iptables.Chain) int { return cmp.Compare(a.Name, b.Name) })

	rs := Ruleset{Filter: chains}
	for _, name := range slices.Sorted(maps.Keys(c.sets)) {
		rs.Sets = append(rs.Sets, *c.sets[name])
	}
	return rs
}

// allow is one accepted (address set, protocol, ports) of a pod chain.
type allow struct {
	set      string          // "" any address
	proto    corev1.Protocol // "" every protocol (and port)
	allPorts bool
	ranges   [][2]int
	by       []string // policies
}

// podChain is the chain of one local pod in direction d: the union of
// the rules of the policies isolating it, then (log and) DROP. Allowed
// traffic RETURNs to ChainPolicy, which goes on to the other direction.
func (c *rulesCompiler) podChain(p *podInfo, d direction) iptables.Chain {
	allows := map[[2]string]*allow{}
	add := func(set string, proto corev1.Protocol, rng *[2]int, by string) {
		k := [2]string{set, string(proto)}
		a := allows[k]
		if a == nil {
			a = &allow{set: set, proto: proto}
			allows[k] = a
		}
		if rng == nil {
			a.allPorts = true
		} else {
			a.ranges = append(a.ranges, *rng)
		}
		if !slices.Contains(a.by, by) {
			a.by = append(a.by, by)
		}
	}
	for _, pol := range p.policies(d) {
		for _, r := range pol.rules(d) {
			targets := r.peers
			if r.allPeers {
				targets = []*peer{nil}
			}
			for _, t := range targets {
				if t != nil && !c.inFamily(t) {
					continue
				}
				// The peer's own set, created when a port uses it (an
				// egress named port uses per-number subsets instead).
				set := func() string {
					if t == nil {
						return ""
					}
					return c.peerSet(t)
				}
				if r.allPorts {
					add(set(), "", nil, pol.key)
				}
				for _, q := range r.ports {
					switch {
					case q.any:
						add(set(), q.proto, nil, pol.key)
					case q.name == "":
						add(set(), q.proto, &[2]int{q.lo, q.hi}, pol.key)
					case d == ingress:
						if n := p.resolve(q.name, q.proto); n > 0 {
							add(set(), q.proto, &[2]int{n, n}, pol.key)
						}
					case t == nil || !t.block:
						// Egress: per destination pod, one set per number.
						for _, ns := range c.namedSets(t, q.name, q.proto) {
							add(ns.set, q.proto, &[2]int{ns.port, ns.port}, pol.key)
						}
					}
				}
			}
		}
	}
	// An every-protocol allow of a set subsumes its per-protocol ones.
	for k, a := range allows {
		if all := allows[[2]string{k[0], ""}]; all != nil && k[1] != "" {
			for _, by := range a.by {
				if !slices.Contains(all.by, by) {
					all.by = append(all.by, by)
				}
			}
			delete(allows, k)
		}
	}
	ch := iptables.Chain{Table: iptables.TableFilter, Name: podChain(d, p.key)}
	dir := "src"
	if d == egress {
		dir = "dst"
	}
	for _, k := range slices.SortedFunc(maps.Keys(allows), func(a, b [2]string) int {
		return cmp.Or(cmp.Compare(a[0], b[0]), cmp.Compare(a[1], b[1]))
	}) {
		ch.Rules = append(ch.Rules, allows[k].render(dir)...)
	}
	if c.o.LogDenied {
		ch.Rules = append(ch.Rules, c.logRule(d, p.key))
	}
	ch.Rules = append(ch.Rules, "-j DROP")
	return ch
}

// logRule is the NFLOG rule of a pod chain; the limit is per rule, so
// per pod and direction.
func (c *rulesCompiler) logRule(d direction, key string) iptables.Rule {
	rate, burst := cmp.Or(c.o.LogRate, DefaultLogRate), cmp.Or(c.o.LogBurst, DefaultLogBurst)
	return iptables.Rule(fmt.Sprintf("-m limit --limit %s --limit-burst %d -j NFLOG --nflog-group %d --nflog-prefix %s",
		rate, burst, c.o.LogGroup, logPrefix(d, key)))
}

// render writes an allow as RETURN rules: one, or several when more than
// 15 multiport slots are needed (a range takes two).
func (a *allow) render(dir string) []iptables.Rule {
	slices.Sort(a.by)
	base := ""
	lower := strings.ToLower(string(a.proto))
	if a.proto != "" {
		base = "-p " + lower + " "
	}
	base += "-m comment --comment " + joinComment(a.by)
	if a.set != "" {
		base += " -m set --match-set " + a.set + " " + dir
	}
	if a.proto == "" || a.allPorts {
		return []iptables.Rule{iptables.Rule(base + " -j RETURN")}
	}
	ranges := mergeRanges(a.ranges)
	if len(ranges) == 1 {
		return []iptables.Rule{iptables.Rule(base + " -m " + lower + " --dport " + portRange(ranges[0], ":") + " -j RETURN")}
	}
	var out []iptables.Rule
	var chunk []string
	slots := 0
	flush := func() {
		out = append(out, iptables.Rule(base+" -m multiport --dports "+strings.Join(chunk, ",")+" -j RETURN"))
		chunk, slots = nil, 0
	}
	for _, r := range ranges {
		n := 1
		if r[0] != r[1] {
			n = 2
		}
		if slots+n > 15 {
			flush()
		}
		chunk = append(chunk, portRange(r, ":"))
		slots += n
	}
	flush()
	return out
}

// inFamily reports whether a peer can match addresses of this family: a
// pod peer always can (its set may be empty, so that pod churn changes
// set members, never rules); an ipBlock when it is of the family and not
// wholly excepted.
func (c *rulesCompiler) inFamily(pr *peer) bool {
	switch {
	case pr.empty:
		return false
	case !pr.block:
		return true
	case pr.prefix.Addr().Is6() != c.v6:
		return false
	}
	return true
}

// peerSet returns the set of a peer, creating it. The peer is inFamily.
func (c *rulesCompiler) peerSet(pr *peer) string {
	name := setName(pr.key, c.fam)
	if !pr.block {
		var ips []netip.Addr
		for _, p := range pr.members {
			ips = append(ips, c.famIPs(p.IPs)...)
		}
		c.addSet(name, "hash:ip", ipStrings(ips))
		return name
	}
	// hash:net cannot hold a /0: two halves instead. An except equal to
	// a half removes it (an entry cannot be both match and nomatch); with
	// both removed the set is empty and matches nothing, as it should.
	matches := []netip.Prefix{pr.prefix}
	if pr.prefix.Bits() == 0 {
		lo := netip.PrefixFrom(pr.prefix.Addr(), 1)
		hiAddr := netip.MustParseAddr("128.0.0.0")
		if c.v6 {
			hiAddr = netip.MustParseAddr("8000::")
		}
		matches = []netip.Prefix{lo, netip.PrefixFrom(hiAddr, 1)}
	}
	var members []string
	for _, e := range pr.except {
		if i := slices.Index(matches, e); i >= 0 {
			matches = slices.Delete(matches, i, i+1)
			continue
		}
		members = append(members, e.String()+" nomatch")
	}
	for _, p := range matches {
		members = append(members, p.String())
	}
	c.addSet(name, "hash:net", members)
	return name
}

// namedSet is the subset of a peer's pods whose named port has one number.
type namedSet struct {
	set  string
	port int
}

// namedSets splits the pods of pr (nil: every pod) by the number their
// port name/proto resolves to, one set per number, sorted by number.
func (c *rulesCompiler) namedSets(pr *peer, name string, proto corev1.Protocol) []namedSet {
	pods, base := c.m.pods, "all pods"
	if pr != nil {
		pods, base = pr.members, pr.key
	}
	byPort := map[int][]netip.Addr{}
	for _, p := range pods {
		if n := p.resolve(name, proto); n > 0 {
			byPort[n] = append(byPort[n], c.famIPs(p.IPs)...)
		}
	}
	var out []namedSet
	for _, n := range slices.Sorted(maps.Keys(byPort)) {
		if len(byPort[n]) == 0 {
			continue
		}
		s := setName("named "+base+" port "+name+"/"+string(proto)+"="+strconv.Itoa(n), c.fam)
		c.addSet(s, "hash:ip", ipStrings(byPort[n]))
		out = append(out, namedSet{s, n})
	}
	return out
}

func (c *rulesCompiler) addSet(name, typ string, members []string) {
	fam := "inet"
	if c.v6 {
		fam = "inet6"
	}
	slices.Sort(members)
	c.sets[name] = &IPSet{Name: name, Type: typ, Family: fam, Members: slices.Compact(members)}
}

// famIPs keeps the addresses of the compiler's family.
func (c *rulesCompiler) famIPs(ips []netip.Addr) []netip.Addr {
	var out []netip.Addr
	for _, ip := range ips {
		if ip = ip.Unmap(); ip.IsValid() && ip.Is6() == c.v6 {
			out = append(out, ip)
		}
	}
	return out
}

func mergeRanges(rs [][2]int) [][2]int {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b [2]int) int { return cmp.Or(cmp.Compare(a[0], b[0]), cmp.Compare(a[1], b[1])) })
	var out [][2]int
	for _, r := range rs {
		if n := len(out); n > 0 && r[0] <= out[n-1][1]+1 {
			out[n-1][1] = max(out[n-1][1], r[1])
			continue
		}
		out = append(out, r)
	}
	return out
}

func portRange(r [2]int, sep string) string {
	if r[0] == r[1] {
		return strconv.Itoa(r[0])
	}
	return strconv.Itoa(r[0]) + sep + strconv.Itoa(r[1])
}

func ipStrings(ips []netip.Addr) []string {
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}
	return out
}

// hostPrefix is a as a full-length prefix, as iptables-save prints it.
func hostPrefix(a netip.Addr) string { return netip.PrefixFrom(a, a.BitLen()).String() }

// String renders the ruleset: the sets as `ipset restore` input, then the
// chains as an `iptables-restore` filter table.
func (r Ruleset) String() string {
	var b strings.Builder
	for _, s := range r.Sets {
		fmt.Fprintf(&b, "create %s %s family %s\n", s.Name, s.Type, s.Family)
		for _, m := range s.Members {
			fmt.Fprintf(&b, "add %s %s\n", s.Name, m)
		}
	}
	b.WriteString("*filter\n")
	for _, ch := range r.Filter {
		fmt.Fprintf(&b, ":%s - [0:0]\n", ch.Name)
	}
	for _, ch := range r.Filter {
		for _, rule := range ch.Rules {
			fmt.Fprintf(&b, "-A %s %s\n", ch.Name, rule)
		}
	}
	b.WriteString("COMMIT\n")
	return b.String()
}
