package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/nodenet/nodenet/datapath/iptables"
)

// ruleTracer walks a packet through a Ruleset from ChainPolicy. The
// iptables Tracer does not know "-m set" or "-m conntrack", so this one
// interprets exactly the vocabulary Rules writes and fails on anything
// else. Verdict is "DROP", "ACCEPT", or "RETURN" when ChainPolicy returns
// to the built-in chain (the policy lets the packet go on).
type ruleTracer struct {
	chains map[string][]iptables.Rule
	sets   map[string]IPSet
	local  []netip.Addr // for -m addrtype --src-type LOCAL
}

type tracePacket struct {
	src, dst netip.Addr
	proto    string // lower case
	dport    int
	state    string // conntrack state, "NEW" when empty
}

type traceResult struct {
	verdict   string
	evaluated int      // rules whose matches were evaluated
	path      []string // chains entered
}

func newRuleTracer(rs Ruleset, local ...netip.Addr) *ruleTracer {
	t := &ruleTracer{chains: map[string][]iptables.Rule{}, sets: map[string]IPSet{}, local: local}
	for _, c := range rs.Filter {
		t.chains[c.Name] = c.Rules
	}
	for _, s := range rs.Sets {
		t.sets[s.Name] = s
	}
	return t
}

func (t *ruleTracer) trace(p tracePacket) (traceResult, error) {
	if p.state == "" {
		p.state = "NEW"
	}
	var r traceResult
	v, err := t.walk(ChainPolicy, p, &r, 0)
	if v == "" {
		v = "RETURN"
	}
	r.verdict = v
	return r, err
}

// walk returns a terminal verdict, or "" when the chain returns.
func (t *ruleTracer) walk(chain string, p tracePacket, r *traceResult, depth int) (string, error) {
	rules, ok := t.chains[chain]
	if !ok || depth > 10 {
		return "", fmt.Errorf("chain %s missing or loop", chain)
	}
	r.path = append(r.path, chain)
	for i, rule := range rules {
		r.evaluated++
		matched, verb, target, err := t.match(string(rule), p)
		if err != nil {
			return "", fmt.Errorf("%s rule %d %q: %w", chain, i+1, rule, err)
		}
		if !matched {
			continue
		}
		switch target {
		case "RETURN":
			return "", nil
		case "DROP", "ACCEPT":
			return target, nil
		case "NFLOG":
			continue
		}
		v, err := t.walk(target, p, r, depth+1)
		if err != nil || v != "" {
			return v, err
		}
		if verb == "-g" {
			return "", nil
		}
	}
	return "", nil
}

// match evaluates one rule's matches and returns its jump.
func (t *ruleTracer) match(rule string, p tracePacket) (matched bool, verb, target string, err error) {
	args := splitArgs(rule)
	matched = true
	for i := 0; i < len(args); i++ {
		opt := args[i]
		next := func() string {
			i++
			if i >= len(args) {
				err = fmt.Errorf("%s without value", opt)
				return ""
			}
			return args[i]
		}
		switch opt {
		case "-m":
			switch m := next(); m {
			case "conntrack", "set", "addrtype", "comment", "limit", "multiport", "tcp", "udp", "sctp":
			default:
				return false, "", "", fmt.Errorf("unknown module %q", m)
			}
		case "-p":
			matched = matched && next() == p.proto
		case "-s", "-d":
			pf, perr := netip.ParsePrefix(next())
			if perr != nil {
				return false, "", "", perr
			}
			a := p.src
			if opt == "-d" {
				a = p.dst
			}
			matched = matched && pf.Contains(a)
		case "--ctstate":
			matched = matched && slices.Contains(strings.Split(next(), ","), p.state)
		case "--src-type":
			matched = matched && next() == "LOCAL" && slices.Contains(t.local, p.src)
		case "--match-set":
			name, dir := next(), next()
			s, ok := t.sets[name]
			if !ok {
				return false, "", "", fmt.Errorf("set %s not in the ruleset", name)
			}
			a := p.src
			if dir == "dst" {
				a = p.dst
			}
			matched = matched && setHas(s, a)
		case "--dport", "--dports":
			in := false
			for _, r := range strings.Split(next(), ",") {
				lo, hi, _ := strings.Cut(r, ":")
				l, _ := strconv.Atoi(lo)
				h := l
				if hi != "" {
					h, _ = strconv.Atoi(hi)
				}
				in = in || (l <= p.dport && p.dport <= h)
			}
			matched = matched && in
		case "--comment", "--limit", "--limit-burst", "--nflog-group", "--nflog-prefix":
			next()
		case "-j", "-g":
			verb, target = opt, next()
		default:
			return false, "", "", fmt.Errorf("unknown option %q", opt)
		}
	}
	if target == "" && err == nil {
		err = fmt.Errorf("rule without target")
	}
	return matched, verb, target, err
}

// setHas is ipset's lookup: exact for hash:ip; for hash:net the most
// specific entry holding a decides, and a nomatch entry means no match.
func setHas(s IPSet, a netip.Addr) bool {
	best, bestBits, nomatch := false, -1, false
	for _, m := range s.Members {
		entry, flag, _ := strings.Cut(m, " ")
		if s.Type == "hash:ip" {
			if entry == a.String() {
				return true
			}
			continue
		}
		pf := netip.MustParsePrefix(entry)
		if pf.Contains(a) && pf.Bits() > bestBits {
			best, bestBits, nomatch = true, pf.Bits(), flag == "nomatch"
		}
	}
	return best && !nomatch
}

// splitArgs splits on spaces, keeping "double quoted" strings whole.
func splitArgs(s string) []string {
	var out []string
	var cur strings.Builder
	quoted, have := false, false
	for _, c := range s {
		switch {
		case c == '"':
			quoted, have = !quoted, true
		case c == ' ' && !quoted:
			if have {
				out = append(out, cur.String())
			}
			cur.Reset()
			have = false
		default:
			cur.WriteRune(c)
			have = true
		}
	}
	if have {
		out = append(out, cur.String())
	}
	return out
}
