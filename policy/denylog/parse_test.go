package denylog

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// Hand-built wire format, as nfnetlink_log sends it.

func nlmsg(typ uint16, body []byte) []byte {
	b := make([]byte, unix.SizeofNlMsghdr, nlAlign(unix.SizeofNlMsghdr+len(body)))
	binary.NativeEndian.PutUint32(b[0:4], uint32(unix.SizeofNlMsghdr+len(body)))
	binary.NativeEndian.PutUint16(b[4:6], typ)
	b = append(b, body...)
	return b[:cap(b)]
}

// packetMsg is an NFULNL_MSG_PACKET message with the given attributes.
func packetMsg(attrs ...[]byte) []byte {
	body := []byte{unix.AF_INET, 0, 0, 100} // nfgenmsg, group 100
	for _, a := range attrs {
		body = append(body, a...)
	}
	return nlmsg(nfnlSubsysULOG<<8|nfulnlMsgPacket, body)
}

func prefixAttr(s string) []byte  { return nlattr(nfulaPrefix, append([]byte(s), 0)) }
func payloadAttr(b []byte) []byte { return nlattr(nfulaPayload, b) }

// hwHdrAttr is NFULA_PACKET_HDR, present in every real message.
func hwHdrAttr() []byte { return nlattr(1, []byte{0x08, 0x00, 2, 0}) }

func ports(sport, dport uint16) []byte {
	return binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, sport), dport)
}

// ipv4 is a header with ihlWords 32-bit words, then l4.
func ipv4(src, dst string, proto uint8, ihlWords int, fragOff uint16, l4 []byte) []byte {
	h := make([]byte, ihlWords*4)
	h[0] = 0x40 | byte(ihlWords)
	binary.BigEndian.PutUint16(h[2:4], uint16(len(h)+len(l4)))
	binary.BigEndian.PutUint16(h[6:8], fragOff)
	h[8], h[9] = 64, proto
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(h[12:16], s[:])
	copy(h[16:20], d[:])
	return append(h, l4...)
}

// ipv6 is a header with next header nh, then rest (extension headers and l4).
func ipv6(src, dst string, nh uint8, rest []byte) []byte {
	h := make([]byte, 40)
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:6], uint16(len(rest)))
	h[6], h[7] = nh, 64
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	copy(h[8:24], s[:])
	copy(h[24:40], d[:])
	return append(h, rest...)
}

// ext is an 8-byte-unit extension header (hop-by-hop, routing, dst opts).
func ext(nh uint8, units int) []byte {
	b := make([]byte, (units+1)*8)
	b[0], b[1] = nh, byte(units)
	return b
}

func fragHdr(nh uint8, offset uint16) []byte {
	b := make([]byte, 8)
	b[0] = nh
	binary.BigEndian.PutUint16(b[2:4], offset<<3)
	return b
}

func cat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

const pfx = "nodenet-deny ingress x/a"

func TestParse(t *testing.T) {
	a4, b4 := netip.MustParseAddr("10.244.1.2"), netip.MustParseAddr("10.244.2.3")
	a6, b6 := netip.MustParseAddr("fd00:244:1::2"), netip.MustParseAddr("fd00:244:2::3")
	tcp4 := ipv4("10.244.1.2", "10.244.2.3", unix.IPPROTO_TCP, 5, 0, ports(40000, 8080))
	tests := []struct {
		name string
		in   []byte
		want []Packet
		errs []string // substrings, one per error
	}{
		{"ipv4 tcp", packetMsg(hwHdrAttr(), prefixAttr(pfx), payloadAttr(tcp4)),
			[]Packet{{Prefix: pfx, Src: a4, Dst: b4, Proto: 6, SrcPort: 40000, DstPort: 8080}}, nil},
		{"ipv4 udp with options", packetMsg(prefixAttr(pfx), payloadAttr(ipv4("10.244.1.2", "10.244.2.3", unix.IPPROTO_UDP, 7, 0, ports(53, 5353)))),
			[]Packet{{Prefix: pfx, Src: a4, Dst: b4, Proto: 17, SrcPort: 53, DstPort: 5353}}, nil},
		{"ipv4 sctp", packetMsg(prefixAttr(pfx), payloadAttr(ipv4("10.244.1.2", "10.244.2.3", unix.IPPROTO_SCTP, 5, 0, ports(1, 2)))),
			[]Packet{{Prefix: pfx, Src: a4, Dst: b4, Proto: 132, SrcPort: 1, DstPort: 2}}, nil},
		{"ipv4 later fragment has no ports", packetMsg(prefixAttr(pfx), payloadAttr(ipv4("10.244.1.2", "10.244.2.3", unix.IPPROTO_UDP, 5, 185, ports(53, 53)))),
			[]Packet{{Prefix: pfx, Src: a4, Dst: b4, Proto: 17}}, nil},
		{"ipv4 first fragment (MF set) has ports", packetMsg(prefixAttr(pfx), payloadAttr(ipv4("10.244.1.2", "10.244.2.3", unix.IPPROTO_UDP, 5, 0x2000, ports(53, 53)))),
			[]Packet{{Prefix: pfx, Src: a4, Dst: b4, Proto: 17, SrcPort: 53, DstPort: 53}}, nil},
		{"ipv4 icmp", packetMsg(prefixAttr(pfx), payloadAttr(ipv4("10.244.1.2", "10.244.2.3", unix.IPPROTO_ICMP, 5, 0, []byte{8, 0, 0, 0}))),
			[]Packet{{Prefix: pfx, Src: a4, Dst: b4, Proto: 1}}, nil},
		{"ipv4 copy ends before the ports", packetMsg(prefixAttr(pfx), payloadAttr(tcp4[:22])),
			[]Packet{{Prefix: pfx, Src: a4, Dst: b4, Proto: 6}}, nil},
		{"ipv6 tcp", packetMsg(prefixAttr(pfx), payloadAttr(ipv6("fd00:244:1::2", "fd00:244:2::3", unix.IPPROTO_TCP, ports(40000, 80)))),
			[]Packet{{Prefix: pfx, Src: a6, Dst: b6, Proto: 6, SrcPort: 40000, DstPort: 80}}, nil},
		{"ipv6 hop-by-hop, dst opts, first fragment, udp", packetMsg(prefixAttr(pfx), payloadAttr(ipv6("fd00:244:1::2", "fd00:244:2::3", unix.IPPROTO_HOPOPTS,
			cat(ext(unix.IPPROTO_DSTOPTS, 0), ext(unix.IPPROTO_FRAGMENT, 1), fragHdr(unix.IPPROTO_UDP, 0), ports(5000, 81))))),
			[]Packet{{Prefix: pfx, Src: a6, Dst: b6, Proto: 17, SrcPort: 5000, DstPort: 81}}, nil},
		{"ipv6 later fragment", packetMsg(prefixAttr(pfx), payloadAttr(ipv6("fd00:244:1::2", "fd00:244:2::3", unix.IPPROTO_FRAGMENT,
			cat(fragHdr(unix.IPPROTO_UDP, 100), ports(5000, 81))))),
			[]Packet{{Prefix: pfx, Src: a6, Dst: b6, Proto: 17}}, nil},
		{"ipv6 extension header beyond the copy", packetMsg(prefixAttr(pfx), payloadAttr(ipv6("fd00:244:1::2", "fd00:244:2::3", unix.IPPROTO_ROUTING,
			ext(unix.IPPROTO_TCP, 3)[:16]))),
			[]Packet{{Prefix: pfx, Src: a6, Dst: b6, Proto: 6}}, nil},
		{"ipv6 icmpv6", packetMsg(prefixAttr(pfx), payloadAttr(ipv6("fd00:244:1::2", "fd00:244:2::3", unix.IPPROTO_ICMPV6, []byte{128, 0, 0, 0}))),
			[]Packet{{Prefix: pfx, Src: a6, Dst: b6, Proto: 58}}, nil},
		{"prefix without NUL, attribute flags masked", packetMsg(nlattr(nfulaPrefix, []byte(pfx)), nlattr(nfulaPayload|unix.NLA_F_NET_BYTEORDER, tcp4)),
			[]Packet{{Prefix: pfx, Src: a4, Dst: b4, Proto: 6, SrcPort: 40000, DstPort: 8080}}, nil},
		{"batch: two packets, an ack and DONE", cat(
			packetMsg(prefixAttr(pfx), payloadAttr(tcp4)),
			nlmsg(unix.NLMSG_ERROR, make([]byte, 20)),
			packetMsg(prefixAttr("other"), payloadAttr(tcp4)),
			nlmsg(unix.NLMSG_DONE, []byte{0, 0, 0, 0})),
			[]Packet{
				{Prefix: pfx, Src: a4, Dst: b4, Proto: 6, SrcPort: 40000, DstPort: 8080},
				{Prefix: "other", Src: a4, Dst: b4, Proto: 6, SrcPort: 40000, DstPort: 8080},
			}, nil},
		{"a bad message between good ones is skipped", cat(
			packetMsg(prefixAttr(pfx), payloadAttr(tcp4)),
			packetMsg(prefixAttr(pfx)),
			packetMsg(prefixAttr(pfx), payloadAttr(tcp4))),
			[]Packet{
				{Prefix: pfx, Src: a4, Dst: b4, Proto: 6, SrcPort: 40000, DstPort: 8080},
				{Prefix: pfx, Src: a4, Dst: b4, Proto: 6, SrcPort: 40000, DstPort: 8080},
			}, []string{"no payload attribute"}},

		{"no prefix", packetMsg(payloadAttr(tcp4)), nil, []string{"no prefix attribute"}},
		{"short nfgenmsg", nlmsg(nfnlSubsysULOG<<8|nfulnlMsgPacket, []byte{2, 0}), nil, []string{"nfgenmsg: truncated"}},
		{"attribute longer than the message", packetMsg(prefixAttr(pfx), []byte{200, 0, nfulaPayload, 0}), nil, []string{"attribute 9: length 200 of 4 bytes"}},
		{"attribute length below its header", packetMsg([]byte{2, 0, 9, 0}), nil, []string{"attribute 9: length 2 of 4 bytes"}},
		{"attribute header cut", packetMsg([]byte{8, 0}), nil, []string{"attribute header: truncated"}},
		{"empty payload", packetMsg(prefixAttr(pfx), payloadAttr(nil)), nil, []string{"payload: empty"}},
		{"ip version 5", packetMsg(prefixAttr(pfx), payloadAttr([]byte{0x50, 0, 0, 0})), nil, []string{"payload: IP version 5"}},
		{"short ipv4", packetMsg(prefixAttr(pfx), payloadAttr(tcp4[:19])), nil, []string{"payload: IPv4 header: truncated"}},
		{"ipv4 ihl too small", packetMsg(prefixAttr(pfx), payloadAttr(cat([]byte{0x44}, tcp4[1:]))), nil, []string{"payload: IPv4 header length 16 of 24 bytes"}},
		{"ipv4 ihl beyond the copy", packetMsg(prefixAttr(pfx), payloadAttr(cat([]byte{0x4f}, tcp4[1:]))), nil, []string{"payload: IPv4 header length 60 of 24 bytes"}},
		{"short ipv6", packetMsg(prefixAttr(pfx), payloadAttr(ipv6("::1", "::2", 6, nil)[:39])), nil, []string{"payload: IPv6 header: truncated"}},
		{"netlink error", nlmsg(unix.NLMSG_ERROR, binary.NativeEndian.AppendUint32(nil, uint32(0xffffffff-uint32(unix.ENOBUFS)+1))), nil, []string{"netlink error: no buffer space available"}},
		{"short netlink header", []byte{1, 2, 3}, nil, []string{"netlink header: truncated (3 bytes)"}},
		{"netlink length beyond datagram", cat(packetMsg(prefixAttr(pfx), payloadAttr(tcp4)), []byte{0xff, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}),
			[]Packet{{Prefix: pfx, Src: a4, Dst: b4, Proto: 6, SrcPort: 40000, DstPort: 8080}}, []string{"netlink message length 255 of 16 bytes"}},
		{"netlink length below header", []byte{4, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, nil, []string{"netlink message length 4 of 16 bytes"}},
		{"other message types are ignored", nlmsg(nfnlSubsysULOG<<8|nfulnlMsgConfig, []byte{0, 0, 0, 0}), nil, nil},
		{"empty datagram", nil, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, errs := Parse(tt.in)
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("packets (-want +got):\n%s", diff)
			}
			if len(errs) != len(tt.errs) {
				t.Fatalf("errors %v, want %d matching %q", errs, len(tt.errs), tt.errs)
			}
			for i, e := range errs {
				if !strings.Contains(e.Error(), tt.errs[i]) {
					t.Errorf("error %d = %q, want it to contain %q", i, e, tt.errs[i])
				}
			}
		})
	}
}

func TestProtoName(t *testing.T) {
	for proto, want := range map[uint8]string{6: "tcp", 17: "udp", 132: "sctp", 1: "icmp", 58: "icmpv6", 47: "47"} {
		if got := (Packet{Proto: proto}).ProtoName(); got != want {
			t.Errorf("ProtoName(%d) = %q, want %q", proto, got, want)
		}
	}
}

func TestAckFor(t *testing.T) {
	ack := func(seq uint32, errno int32) []byte {
		m := nlmsg(unix.NLMSG_ERROR, binary.NativeEndian.AppendUint32(make([]byte, 0, 20), uint32(errno)))
		binary.NativeEndian.PutUint32(m[8:12], seq)
		return m
	}
	if e, ok := ackFor(cat(ack(1, 0), ack(2, -int32(unix.EBUSY))), 2); !ok || e != unix.EBUSY {
		t.Errorf("ackFor(seq 2) = %v, %v; want EBUSY", e, ok)
	}
	if e, ok := ackFor(ack(1, 0), 1); !ok || e != 0 {
		t.Errorf("ackFor(seq 1) = %v, %v; want 0, true", e, ok)
	}
	if _, ok := ackFor(ack(1, 0), 3); ok {
		t.Error("ackFor found an ack for another sequence number")
	}
	if _, ok := ackFor([]byte{0xff, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 0); ok {
		t.Error("ackFor accepted a bad length")
	}
}
