package iptablestest

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

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
type Tracer struct {
	fake *Fake
	fam  iptables.Family
}

// NewTracer returns a Tracer over f's ruleset for fam, read at each Trace.
func NewTracer(f *Fake, fam iptables.Family) *Tracer { return &Tracer{fake: f, fam: fam} }

const maxDepth = 64

// Trace walks p from the built-in chain tbl/builtIn.
func (tr *Tracer) Trace(tbl iptables.Table, builtIn string, p Packet) (Result, error) {
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
	w := &walker{t: t, pkt: p}
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
	t   *table
	pkt Packet
	res Result
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
		ok, err := r.matches(&w.pkt)
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
	conds  []match
	target string
	isGoto bool
	opts   map[string]string // target options; flags map to ""
}

// modules are the -m matches the Tracer understands.
var modules = map[string]bool{"tcp": true, "udp": true, "sctp": true, "comment": true, "mark": true, "multiport": true}

func parseRule(args []string) (rule, error) {
	var r rule
	neg := false
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "!" {
			neg = true
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
		case "-s", "--source", "-d", "--destination", "-p", "--protocol", "-i", "--in-interface",
			"-o", "--out-interface", "--dport", "--destination-port", "--sport", "--source-port",
			"--dports", "--destination-ports", "--sports", "--source-ports", "--mark":
			r.conds = append(r.conds, match{opt: a, val: v, neg: neg})
		case "-j", "--jump", "-g", "--goto":
			r.target, r.isGoto = v, a == "-g" || a == "--goto"
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
	return r, nil
}

func (r rule) matches(p *Packet) (bool, error) {
	for _, m := range r.conds {
		ok, err := m.eval(p)
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
