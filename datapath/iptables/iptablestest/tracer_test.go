package iptablestest

import (
	"math"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/nodenet/nodenet/datapath/iptables"
)

// traceRules exercises every match and target the Tracer supports.
var traceRules = lines(
	"*nat",
	":NODENET-PREROUTING - [0:0]",
	":NODENET-SVC - [0:0]",
	":NODENET-MARK - [0:0]",
	":NODENET-GOTO - [0:0]",
	`-A PREROUTING -m comment --comment "nodenet hook" -j NODENET-PREROUTING`,
	"-A NODENET-PREROUTING -i lo -j RETURN",
	"-A NODENET-PREROUTING -d 10.96.0.10/32 -p udp -m udp --dport 53 -j NODENET-SVC",
	"-A NODENET-PREROUTING ! -s 10.244.0.0/16 -d 10.96.0.1/32 -p tcp -m tcp --dport 443 -j NODENET-MARK",
	"-A NODENET-PREROUTING -p tcp -m multiport --dports 8000:8100,9000 -g NODENET-GOTO",
	"-A NODENET-PREROUTING -i veth+ -p tcp -m tcp --sport 1:1023 -j DNAT --to-destination 10.0.0.9",
	"-A NODENET-SVC -m mark --mark 0x1/0x1 -j RETURN",
	"-A NODENET-SVC -p udp -j DNAT --to-destination 10.244.1.53:53",
	"-A NODENET-MARK -j MARK --set-xmark 0x4000/0x4000",
	"-A NODENET-MARK -m mark --mark 0x4000/0x4000 -p tcp -j DNAT --to-destination 192.168.1.1:6443",
	"-A NODENET-GOTO -p tcp -m tcp --dport 8080 -j RETURN",
	"-A NODENET-GOTO -j SNAT --to-source 10.0.0.1",
	"COMMIT",
	"*filter",
	":NODENET-FORWARD - [0:0]",
	"-A FORWARD -j NODENET-FORWARD",
	"-A NODENET-FORWARD -o eth0 -p tcp -m tcp --dport 22 -j REJECT --reject-with tcp-reset",
	"-A NODENET-FORWARD ! -o eth+ -j DROP",
	"-A NODENET-FORWARD -j ACCEPT",
	"COMMIT")

func TestTracer(t *testing.T) {
	f := NewFake()
	if err := f.Restore(t.Context(), iptables.IPv4, []byte(traceRules), true); err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr
	pod, ext := a("10.244.1.5"), a("192.0.2.7")
	tests := []struct {
		name    string
		table   iptables.Table
		chain   string
		pkt     Packet
		verdict string
		hops    []string
		to      string
		mark    uint32
	}{
		{"loopback returns early", iptables.TableNAT, "PREROUTING",
			Packet{Src: pod, Dst: a("10.96.0.10"), Proto: "udp", DPort: 53, InIface: "lo"},
			"ACCEPT", []string{"PREROUTING#1", "NODENET-PREROUTING#1", "PREROUTING#0"}, "", 0},
		{"DNS is DNATed", iptables.TableNAT, "PREROUTING",
			Packet{Src: pod, Dst: a("10.96.0.10"), Proto: "udp", DPort: 53, InIface: "veth1"},
			"DNAT", []string{"PREROUTING#1", "NODENET-PREROUTING#2", "NODENET-SVC#2"}, "10.244.1.53:53", 0},
		{"marked DNS returns from the service chain", iptables.TableNAT, "PREROUTING",
			Packet{Src: pod, Dst: a("10.96.0.10"), Proto: "udp", DPort: 53, Mark: 0x3},
			"ACCEPT", []string{"PREROUTING#1", "NODENET-PREROUTING#2", "NODENET-SVC#1", "PREROUTING#0"}, "", 0x3},
		{"TCP to the DNS VIP does not match udp", iptables.TableNAT, "PREROUTING",
			Packet{Src: pod, Dst: a("10.96.0.10"), Proto: "tcp", DPort: 53},
			"ACCEPT", []string{"PREROUTING#1", "PREROUTING#0"}, "", 0},
		{"negated source, MARK then mark match", iptables.TableNAT, "PREROUTING",
			Packet{Src: ext, Dst: a("10.96.0.1"), Proto: "tcp", DPort: 443, Mark: 0x1},
			"DNAT", []string{"PREROUTING#1", "NODENET-PREROUTING#3", "NODENET-MARK#1", "NODENET-MARK#2"}, "192.168.1.1:6443", 0x4001},
		{"negated source excludes pods", iptables.TableNAT, "PREROUTING",
			Packet{Src: pod, Dst: a("10.96.0.1"), Proto: "tcp", DPort: 443},
			"ACCEPT", []string{"PREROUTING#1", "PREROUTING#0"}, "", 0},
		{"goto: RETURN goes back past the caller", iptables.TableNAT, "PREROUTING",
			Packet{Src: ext, Dst: a("10.0.0.2"), Proto: "tcp", SPort: 80, DPort: 8080, InIface: "veth0"},
			"ACCEPT", []string{"PREROUTING#1", "NODENET-PREROUTING#4", "NODENET-GOTO#1", "PREROUTING#0"}, "", 0},
		{"multiport range then SNAT", iptables.TableNAT, "PREROUTING",
			Packet{Src: ext, Dst: a("10.0.0.2"), Proto: "tcp", DPort: 8050},
			"SNAT", []string{"PREROUTING#1", "NODENET-PREROUTING#4", "NODENET-GOTO#2"}, "10.0.0.1", 0},
		{"interface wildcard and source port range", iptables.TableNAT, "PREROUTING",
			Packet{Src: ext, Dst: a("10.0.0.2"), Proto: "tcp", SPort: 80, DPort: 22, InIface: "veth7"},
			"DNAT", []string{"PREROUTING#1", "NODENET-PREROUTING#5"}, "10.0.0.9", 0},
		{"REJECT", iptables.TableFilter, "FORWARD",
			Packet{Src: pod, Dst: ext, Proto: "tcp", DPort: 22, OutIface: "eth0"},
			"REJECT", []string{"FORWARD#1", "NODENET-FORWARD#1"}, "", 0},
		{"DROP on negated interface", iptables.TableFilter, "FORWARD",
			Packet{Src: pod, Dst: ext, Proto: "tcp", DPort: 22, OutIface: "cni0"},
			"DROP", []string{"FORWARD#1", "NODENET-FORWARD#2"}, "", 0},
		{"ACCEPT", iptables.TableFilter, "FORWARD",
			Packet{Src: pod, Dst: ext, Proto: "icmp", OutIface: "eth1"},
			"ACCEPT", []string{"FORWARD#1", "NODENET-FORWARD#3"}, "", 0},
		{"untouched table: policy", iptables.TableMangle, "OUTPUT",
			Packet{Src: pod, Dst: ext}, "ACCEPT", []string{"OUTPUT#0"}, "", 0},
	}
	tr := NewTracer(f, iptables.IPv4)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := tr.Trace(tt.table, tt.chain, tt.pkt)
			if err != nil {
				t.Fatal(err)
			}
			if res.Verdict != tt.verdict || !slices.Equal(res.Hops(), tt.hops) {
				t.Errorf("got %s via %v, want %s via %v", res.Verdict, res.Hops(), tt.verdict, tt.hops)
			}
			if to := res.ToDestination + res.ToSource; to != tt.to {
				t.Errorf("NAT to %q, want %q", to, tt.to)
			}
			if res.Mark != tt.mark {
				t.Errorf("mark = %#x, want %#x", res.Mark, tt.mark)
			}
		})
	}
}

func TestTracerErrors(t *testing.T) {
	for _, tt := range []struct{ rules, want string }{
		{"-m conntrack --ctstate NEW -j ACCEPT", "unsupported match module conntrack"},
		{"--tcp-flags SYN SYN -j ACCEPT", "unsupported option --tcp-flags"},
		{"-j LOGX", "couldn't load target"}, // rejected by the Fake already
		{"-j CT --notrack", "unsupported target CT"},
		{"-j NODENET-LOOP", "nested deeper"},
	} {
		t.Run(tt.want, func(t *testing.T) {
			f := NewFake()
			payload := lines("*raw", ":NODENET-LOOP - [0:0]", "-A PREROUTING -j NODENET-LOOP", "-A NODENET-LOOP "+tt.rules, "COMMIT")
			err := f.Restore(t.Context(), iptables.IPv4, []byte(payload), true)
			if err == nil {
				_, err = NewTracer(f, iptables.IPv4).Trace(iptables.TableRaw, "PREROUTING", Packet{})
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
	if _, err := NewTracer(NewFake(), iptables.IPv4).Trace(iptables.TableNAT, "NODENET-X", Packet{}); err == nil {
		t.Error("trace from a user chain accepted")
	}
}

// extRules exercise statistic, recent, addrtype, port ranges and MARK
// --set-xmark with a zero mask (an XOR), as the Service proxy writes them.
var extRules = lines(
	"*nat",
	":NODENET-SVC - [0:0]",
	":NODENET-SEP1 - [0:0]",
	":NODENET-SEP2 - [0:0]",
	":NODENET-POST - [0:0]",
	"-A PREROUTING -d 10.96.0.1/32 -p tcp -m tcp --dport 80 -j NODENET-SVC",
	"-A PREROUTING ! -d 127.0.0.0/8 -p tcp -m addrtype --dst-type LOCAL -m tcp --dport 30000:30100 -j NODENET-SVC",
	"-A PREROUTING -m addrtype --src-type LOCAL -j DROP",
	"-A NODENET-SVC -m recent --rcheck --seconds 10800 --reap --name NODENET-SEP1 --mask 255.255.255.255 --rsource -j NODENET-SEP1",
	"-A NODENET-SVC -m recent --rcheck --seconds 10800 --reap --name NODENET-SEP2 --mask 255.255.255.255 --rsource -j NODENET-SEP2",
	"-A NODENET-SVC -m statistic --mode random --probability 0.25000000000 -j NODENET-SEP1",
	"-A NODENET-SVC -j NODENET-SEP2",
	"-A NODENET-SEP1 -p tcp -m recent --set --name NODENET-SEP1 --mask 255.255.255.255 --rsource -j DNAT --to-destination 10.244.1.1:8080",
	"-A NODENET-SEP2 -p tcp -m recent --set --name NODENET-SEP2 --mask 255.255.255.255 --rsource -j DNAT --to-destination 10.244.2.2:8080",
	"-A POSTROUTING -j NODENET-POST",
	"-A NODENET-POST -m mark ! --mark 0x4000/0x4000 -j RETURN",
	"-A NODENET-POST -j MARK --set-xmark 0x4000/0x0",
	"-A NODENET-POST -j MASQUERADE --random-fully",
	"COMMIT")

func TestTracerRandomAndRecent(t *testing.T) {
	f := NewFake()
	if err := f.Restore(t.Context(), iptables.IPv4, []byte(extRules), true); err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr
	tr := NewTracer(f, iptables.IPv4)
	tr.Local = []netip.Addr{a("192.168.0.10")}
	pkt := Packet{Src: a("10.244.3.3"), Dst: a("10.96.0.1"), Proto: "tcp", DPort: 80}

	if _, err := tr.Trace(iptables.TableNAT, "PREROUTING", pkt); err == nil || !strings.Contains(err.Error(), "Tracer.Random") {
		t.Errorf("statistic without Random: err = %v", err)
	}
	outs, err := tr.TraceAll(iptables.TableNAT, "PREROUTING", pkt)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, o := range outs {
		got[o.ToDestination] += o.Probability
	}
	if len(got) != 2 || math.Abs(got["10.244.1.1:8080"]-0.25) > 1e-9 || math.Abs(got["10.244.2.2:8080"]-0.75) > 1e-9 {
		t.Errorf("TraceAll = %v, want 10.244.1.1 at 0.25 and 10.244.2.2 at 0.75", got)
	}
	// Affinity: once SEP1 was chosen by Trace, later traces go there even
	// when the dice say otherwise; TraceAll did not record anything.
	tr.Random = func(float64) bool { return true }
	res, err := tr.Trace(iptables.TableNAT, "PREROUTING", pkt)
	if err != nil || res.ToDestination != "10.244.1.1:8080" {
		t.Fatalf("first trace: %v %v", res, err)
	}
	// PREROUTING#1, NODENET-SVC#1-3, NODENET-SEP1#1.
	if res.Evaluated != 5 {
		t.Errorf("evaluated = %d, want 5 (%v)", res.Evaluated, res.Hops())
	}
	tr.Random = func(float64) bool { return false }
	res, err = tr.Trace(iptables.TableNAT, "PREROUTING", pkt)
	if err != nil || res.ToDestination != "10.244.1.1:8080" || !slices.Contains(res.Hops(), "NODENET-SVC#1") {
		t.Errorf("sticky trace: %v via %v (%v)", res.ToDestination, res.Hops(), err)
	}
	// PREROUTING#1, NODENET-SVC#1 (matches), NODENET-SEP1#1.
	if res.Evaluated != 3 {
		t.Errorf("evaluated = %d, want 3 (%v)", res.Evaluated, res.Hops())
	}
	other := pkt
	other.Src = a("10.244.4.4")
	if res, err = tr.Trace(iptables.TableNAT, "PREROUTING", other); err != nil || res.ToDestination != "10.244.2.2:8080" {
		t.Errorf("other client: %v (%v)", res.ToDestination, err)
	}
}

func TestTracerAddrtypeRangesMark(t *testing.T) {
	f := NewFake()
	if err := f.Restore(t.Context(), iptables.IPv4, []byte(extRules), true); err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr
	tr := NewTracer(f, iptables.IPv4)
	tr.Local = []netip.Addr{a("192.168.0.10"), a("127.0.0.1")}
	tr.Random = func(float64) bool { return false }
	for _, tt := range []struct {
		name    string
		pkt     Packet
		verdict string
		to      string
	}{
		{"node port in range on a local address", Packet{Src: a("192.0.2.1"), Dst: a("192.168.0.10"), Proto: "tcp", DPort: 30050}, "DNAT", "10.244.2.2:8080"},
		{"node port out of range", Packet{Src: a("192.0.2.1"), Dst: a("192.168.0.10"), Proto: "tcp", DPort: 30101}, "ACCEPT", ""},
		{"not a local address", Packet{Src: a("192.0.2.1"), Dst: a("192.168.0.11"), Proto: "tcp", DPort: 30050}, "ACCEPT", ""},
		{"loopback excluded", Packet{Src: a("192.0.2.1"), Dst: a("127.0.0.1"), Proto: "tcp", DPort: 30050}, "ACCEPT", ""},
		{"local source", Packet{Src: a("192.168.0.10"), Dst: a("192.0.2.1"), Proto: "udp", DPort: 53}, "DROP", ""},
	} {
		res, err := tr.Trace(iptables.TableNAT, "PREROUTING", tt.pkt)
		if err != nil {
			t.Fatal(err)
		}
		if res.Verdict != tt.verdict || res.ToDestination != tt.to {
			t.Errorf("%s: %s %q via %v, want %s %q", tt.name, res.Verdict, res.ToDestination, res.Hops(), tt.verdict, tt.to)
		}
	}
	// Marked: the mark is cleared by the XOR, then MASQUERADE.
	res, err := tr.Trace(iptables.TableNAT, "POSTROUTING", Packet{Src: a("10.244.3.3"), Dst: a("10.244.1.1"), Mark: 0x4001})
	if err != nil || res.Verdict != "MASQUERADE" || res.Mark != 0x1 {
		t.Errorf("marked: %s mark %#x (%v)", res.Verdict, res.Mark, err)
	}
	res, err = tr.Trace(iptables.TableNAT, "POSTROUTING", Packet{Src: a("10.244.3.3"), Dst: a("10.244.1.1"), Mark: 0x1})
	if err != nil || res.Verdict != "ACCEPT" || res.Evaluated != 2 {
		t.Errorf("unmarked: %s after %d rules (%v)", res.Verdict, res.Evaluated, err)
	}
}

func TestTracerExtErrors(t *testing.T) {
	for _, tt := range []struct{ rules, want string }{
		{"-m statistic --mode nth --every 2 -j ACCEPT", "unsupported statistic mode nth"},
		{"-m addrtype --dst-type BROADCAST -j ACCEPT", "unsupported address type BROADCAST"},
		{"-m recent --rcheck --name X --mask 255.255.255.0 -j ACCEPT", "unsupported recent mask"},
		{"-m recent --rcheck --name X --rdest -j ACCEPT", "unsupported option --rdest"},
	} {
		t.Run(tt.want, func(t *testing.T) {
			f := NewFake()
			payload := lines("*raw", ":NODENET-X - [0:0]", "-A PREROUTING -j NODENET-X", "-A NODENET-X "+tt.rules, "COMMIT")
			if err := f.Restore(t.Context(), iptables.IPv4, []byte(payload), true); err != nil {
				t.Fatal(err)
			}
			_, err := NewTracer(f, iptables.IPv4).Trace(iptables.TableRaw, "PREROUTING", Packet{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
}
