package iptablestest

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/nodenet/nodenet/datapath/iptables"
	"github.com/nodenet/nodenet/datapath/iptables/internal/savefmt"
)

// Packet is what the Tracer matches on. Empty fields match only negated
// or absent options.
type Packet struct {
	Src, Dst          netip.Addr
	Proto             string // "tcp", "udp", "sctp", "icmp", ...
	SPort, DPort      uint16
	InIface, OutIface string
	Mark              uint32
}

// Step is one rule that matched, or the built-in chain's policy (Rule 0).
type Step struct {
	Chain string
	Rule  int // 1-based
	Text  string
}

func (s Step) String() string { return s.Chain + "#" + strconv.Itoa(s.Rule) }

// Result is where a packet lands.
type Result struct {
	// Verdict is the terminating target: ACCEPT, DROP, REJECT,
	// MASQUERADE, SNAT or DNAT; or the built-in chain's policy when no
	// rule terminated.
	Verdict string
	// ToDestination and ToSource are the DNAT and SNAT arguments.
	ToDestination, ToSource string
	// Mark is the packet mark after the walk.
	Mark uint32
	// Path lists the matched rules in order.
	Path []Step
	// Evaluated counts the rules whose matches were evaluated, matched or
	// not: the cost of the walk.
	Evaluated int
}

// Outcome is one possible walk of a packet through random matches, with
// its probability.
type Outcome struct {
	Result
	Probability float64
}

// Hops returns Path as "CHAIN#rule" strings, for compact assertions.
func (r Result) Hops() []string {
	out := make([]string, len(r.Path))
	for i, s := range r.Path {
		out[i] = s.String()
	}
	return out
}

// Tracer walks packets through one family of a Fake. It supports the
// matches and targets nodenet uses and fails on any other, so a test never
// passes by silently skipping a rule.
//
// Set Local and Random before tracing. "-m addrtype --src-type/--dst-type
// LOCAL" match the addresses in Local; "-m statistic --mode random" asks
// Random (Trace fails without it), TraceAll follows both branches; "-m
// recent --set" records the source in the --name list and matches,
// "--rcheck"/"--update" match a recorded source, which never expires. Trace
// keeps what --set recorded for later traces, TraceAll does not.
type Tracer struct {
	fake *Fake
	fam  iptables.Family

	// Local are the node's addresses, for -m addrtype LOCAL.
	Local []netip.Addr
	// Random decides a statistic match of probability p.
	Random func(p float64) bool

	mu     sync.Mutex // guards recent
	recent srcSets
}

// srcSets are the sources recorded per -m recent list.
type srcSets map[string]map[netip.Addr]bool

func (s srcSets) add(name string, a netip.Addr) {
	if s[name] == nil {
		s[name] = map[netip.Addr]bool{}
	}
	s[name][a] = true
}

// NewTracer returns a Tracer over f's ruleset for fam, read at each Trace.
func NewTracer(f *Fake, fam iptables.Family) *Tracer {
	return &Tracer{fake: f, fam: fam, recent: srcSets{}}
}

const maxDepth = 64

// Trace walks p from the built-in chain tbl/builtIn.
func (tr *Tracer) Trace(tbl iptables.Table, builtIn string, p Packet) (Result, error) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	set := srcSets{}
	res, err := tr.trace(tbl, builtIn, p, tr.Random, set)
	for name, srcs := range set {
		for a := range srcs {
			tr.recent.add(name, a)
		}
	}
	return res, err
}

// maxOutcomes bounds TraceAll's enumeration.
const maxOutcomes = 4096

// TraceAll walks p through every combination of random matches and
// returns each distinct walk with its probability (they sum to 1). Sources
// recorded by -m recent --set are not kept.
func (tr *Tracer) TraceAll(tbl iptables.Table, builtIn string, p Packet) ([]Outcome, error) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var out []Outcome
	pending := [][]bool{nil} // decision prefixes still to explore
	for len(pending) > 0 {
		if len(out) >= maxOutcomes {
			return nil, fmt.Errorf("trace: more than %d outcomes", maxOutcomes)
		}
		prefix := pending[len(pending)-1]
		pending = pending[:len(pending)-1]
		var taken []bool
		prob := 1.0
		decide := func(q float64) bool {
			d := len(taken) < len(prefix) && prefix[len(taken)]
			if len(taken) >= len(prefix) { // "no match" now, "match" later
				pending = append(pending, append(slices.Clone(taken), true))
			}
			taken = append(taken, d)
			prob *= map[bool]float64{true: q, false: 1 - q}[d]
			return d
		}
		res, err := tr.trace(tbl, builtIn, p, decide, srcSets{})
		if err != nil {
			return nil, err
		}
		if prob > 0 {
			out = append(out, Outcome{Result: res, Probability: prob})
		}
	}
	return out, nil
}

// trace runs one walk. Callers hold tr.mu.
func (tr *Tracer) trace(tbl iptables.Table, builtIn string, p Packet, random func(float64) bool, set srcSets) (Result, error) {
	tr.fake.mu.Lock()
	defer tr.fake.mu.Unlock()
	t := tr.fake.rulesets[tr.fam][tbl]
	if t == nil {
		t = newTable(tbl)
	}
	c := t.chains[builtIn]
	if c == nil || !c.builtin {
		return Result{}, fmt.Errorf("trace: %s has no built-in chain %s", tbl, builtIn)
	}
	w := &walker{t: t, pkt: p, tr: tr, random: random, set: set}
	terminal, err := w.walk(builtIn, 0)
	if err != nil {
		return Result{}, err
	}
	if !terminal {
		w.res.Verdict = c.policy
		w.res.Path = append(w.res.Path, Step{Chain: builtIn, Text: "policy " + c.policy})
	}
	w.res.Mark = w.pkt.Mark
	return w.res, nil
}

type walker struct {
	t      *table
	pkt    Packet
	res    Result
	tr     *Tracer
	random func(float64) bool
	set    srcSets // -m recent --set of this walk
}

// walk runs chain; terminal reports a verdict, else the packet returns to
// the caller (RETURN or end of chain).
func (w *walker) walk(name string, depth int) (terminal bool, err error) {
	if depth > maxDepth {
		return false, fmt.Errorf("trace: chains nested deeper than %d at %s", maxDepth, name)
	}
	c := w.t.chains[name]
	if c == nil {
		return false, fmt.Errorf("trace: no chain %s", name)
	}
	for i, args := range c.rules {
		r, err := parseRule(args)
		if err != nil {
			return false, fmt.Errorf("trace: %s rule %d (%s): %w", name, i+1, savefmt.Join(args), err)
		}
		w.res.Evaluated++
		ok, err := w.matches(r)
		if err != nil {
			return false, fmt.Errorf("trace: %s rule %d (%s): %w", name, i+1, savefmt.Join(args), err)
		}
		if !ok {
			continue
		}
		w.res.Path = append(w.res.Path, Step{Chain: name, Rule: i + 1, Text: savefmt.Join(args)})
		switch r.target {
		case "":
		case "RETURN":
			return false, nil
		case "ACCEPT", "DROP", "REJECT", "MASQUERADE":
			w.res.Verdict = r.target
			return true, nil
		case "DNAT", "SNAT":
			w.res.Verdict = r.target
			w.res.ToDestination, w.res.ToSource = r.opts["--to-destination"], r.opts["--to-source"]
			return true, nil
		case "LOG":
		case "MARK":
			if err := w.setMark(r.opts); err != nil {
				return false, fmt.Errorf("trace: %s rule %d: %w", name, i+1, err)
			}
		default:
			if w.t.chains[r.target] == nil {
				return false, fmt.Errorf("trace: %s rule %d: unsupported target %s", name, i+1, r.target)
			}
			terminal, err := w.walk(r.target, depth+1)
			if err != nil || terminal {
				return terminal, err
			}
			if r.isGoto { // -g: RETURN goes back to our caller
				return false, nil
			}
		}
	}
	return false, nil
}

func (w *walker) setMark(opts map[string]string) error {
	for opt, v := range opts {
		val, mask, err := parseMark(v)
		if err != nil {
			return err
		}
		switch opt {
		case "--set-xmark":
			w.pkt.Mark = (w.pkt.Mark &^ mask) ^ val
		case "--set-mark":
			w.pkt.Mark = (w.pkt.Mark &^ mask) | val
		case "--or-mark":
			w.pkt.Mark |= val
		case "--and-mark":
			w.pkt.Mark &= val
		case "--xor-mark":
			w.pkt.Mark ^= val
		default:
			return fmt.Errorf("unsupported MARK option %s", opt)
		}
	}
	return nil
}

// match is one (possibly negated) condition of a rule.
type match struct {
	opt, val string
	neg      bool
}

type rule struct {
	conds      []match
	recentName string
	target     string
	isGoto     bool
	opts       map[string]string // target options; flags map to ""
}

// modules are the -m matches the Tracer understands.
var modules = map[string]bool{
	"tcp": true, "udp": true, "sctp": true, "comment": true, "mark": true, "multiport": true,
	"statistic": true, "recent": true, "addrtype": true,
}

// flags are match options without a value.
var flags = map[string]bool{"--set": true, "--rcheck": true, "--update": true, "--reap": true, "--rsource": true}

func parseRule(args []string) (rule, error) {
	var r rule
	neg := false
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "!" {
			neg = true
			continue
		}
		if flags[a] {
			switch a {
			case "--set", "--rcheck", "--update":
				r.conds = append(r.conds, match{opt: a, neg: neg})
			}
			neg = false
			continue
		}
		if i+1 >= len(args) {
			return r, fmt.Errorf("option %s needs a value", a)
		}
		v := args[i+1]
		i++
		switch a {
		case "-m", "--match":
			if !modules[v] {
				return r, fmt.Errorf("unsupported match module %s", v)
			}
		case "--comment":
		case "--mode":
			if v != "random" {
				return r, fmt.Errorf("unsupported statistic mode %s", v)
			}
		case "--name":
			r.recentName = v
		case "--seconds":
		case "--mask":
			if p, err := netip.ParseAddr(v); err != nil || p.Next().IsValid() {
				return r, fmt.Errorf("unsupported recent mask %s (only all ones)", v)
			}
		case "--src-type", "--dst-type":
			if v != "LOCAL" {
				return r, fmt.Errorf("unsupported address type %s", v)
			}
			r.conds = append(r.conds, match{opt: a, val: v, neg: neg})
		case "--probability":
			if _, err := strconv.ParseFloat(v, 64); err != nil {
				return r, fmt.Errorf("bad probability %q", v)
			}
			r.conds = append(r.conds, match{opt: a, val: v, neg: neg})
		case "-s", "--source", "-d", "--destination", "-p", "--protocol", "-i", "--in-interface",
			"-o", "--out-interface", "--dport", "--destination-port", "--sport", "--source-port",
			"--dports", "--destination-ports", "--sports", "--source-ports", "--mark":
			r.conds = append(r.conds, match{opt: a, val: v, neg: neg})
		case "-j", "--jump", "-g", "--goto":
			r.target, r.isGoto = v, a == "-g" || a == "--goto"
			r.fixRecent()
			r.opts = map[string]string{}
			for j := i + 1; j < len(args); j++ {
				if j+1 < len(args) && !strings.HasPrefix(args[j+1], "--") {
					r.opts[args[j]] = args[j+1]
					j++
				} else {
					r.opts[args[j]] = ""
				}
			}
			return r, nil
		default:
			return r, fmt.Errorf("unsupported option %s", a)
		}
		neg = false
	}
	r.fixRecent()
	return r, nil
}

// fixRecent gives -m recent conditions their list name, which iptables-save
// prints after them; the default list is DEFAULT.
func (r *rule) fixRecent() {
	for i, m := range r.conds {
		switch m.opt {
		case "--set", "--rcheck", "--update":
			r.conds[i].val = cmp.Or(r.recentName, "DEFAULT")
		}
	}
}

func (w *walker) matches(r rule) (bool, error) {
	p := &w.pkt
	for _, m := range r.conds {
		var ok bool
		var err error
		switch m.opt {
		case "--probability":
			if w.random == nil {
				return false, fmt.Errorf("statistic match needs Tracer.Random (or use TraceAll)")
			}
			q, _ := strconv.ParseFloat(m.val, 64)
			ok = w.random(q)
		case "--src-type":
			ok = slices.Contains(w.tr.Local, p.Src)
		case "--dst-type":
			ok = slices.Contains(w.tr.Local, p.Dst)
		case "--set":
			w.set.add(m.val, p.Src)
			ok = true
		case "--rcheck", "--update":
			ok = w.set[m.val][p.Src] || w.tr.recent[m.val][p.Src]
		default:
			ok, err = m.eval(p)
		}
		if err != nil {
			return false, err
		}
		if ok == m.neg {
			return false, nil
		}
	}
	return true, nil
}

func (m match) eval(p *Packet) (bool, error) {
	switch m.opt {
	case "-s", "--source":
		return addrIn(p.Src, m.val)
	case "-d", "--destination":
		return addrIn(p.Dst, m.val)
	case "-p", "--protocol":
		return m.val == "all" || strings.EqualFold(m.val, p.Proto), nil
	case "-i", "--in-interface":
		return ifaceIs(p.InIface, m.val), nil
	case "-o", "--out-interface":
		return ifaceIs(p.OutIface, m.val), nil
	case "--dport", "--destination-port", "--dports", "--destination-ports":
		return portIn(p.DPort, m.val)
	case "--sport", "--source-port", "--sports", "--source-ports":
		return portIn(p.SPort, m.val)
	case "--mark":
		val, mask, err := parseMark(m.val)
		return p.Mark&mask == val, err
	}
	return false, fmt.Errorf("unsupported match %s", m.opt)
}

func addrIn(a netip.Addr, list string) (bool, error) {
	for _, s := range strings.Split(list, ",") {
		p, err := parsePrefix(s)
		if err != nil {
			return false, err
		}
		if a.IsValid() && p.Contains(a) {
			return true, nil
		}
	}
	return false, nil
}

// ifaceIs matches an interface name; a trailing "+" matches any suffix.
func ifaceIs(iface, pattern string) bool {
	if p, ok := strings.CutSuffix(pattern, "+"); ok {
		return strings.HasPrefix(iface, p)
	}
	return iface == pattern
}

// portIn matches "80", "1000:2000" or a multiport list "80,443,8000:9000".
func portIn(port uint16, list string) (bool, error) {
	for _, s := range strings.Split(list, ",") {
		lo, hi, isRange := strings.Cut(s, ":")
		if !isRange {
			hi = lo
		}
		l, err1 := strconv.ParseUint(lo, 10, 16)
		h, err2 := strconv.ParseUint(hi, 10, 16)
		if err1 != nil || err2 != nil {
			return false, fmt.Errorf("bad port %q", s)
		}
		if uint64(port) >= l && uint64(port) <= h {
			return true, nil
		}
	}
	return false, nil
}

// parseMark reads "value[/mask]"; the mask defaults to all ones.
func parseMark(s string) (val, mask uint32, err error) {
	v, m, hasMask := strings.Cut(s, "/")
	mask = 0xffffffff
	x, err := strconv.ParseUint(v, 0, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("bad mark %q", s)
	}
	if hasMask {
		y, err := strconv.ParseUint(m, 0, 32)
		if err != nil {
			return 0, 0, fmt.Errorf("bad mark mask %q", s)
		}
		mask = uint32(y)
	}
	return uint32(x), mask, nil
}
