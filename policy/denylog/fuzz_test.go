package denylog

import (
	"bytes"
	"io"
	"log/slog"
	"testing"

	"golang.org/x/sys/unix"
)

// FuzzParse: no datagram makes Parse panic, every packet it returns has
// addresses of one family, and the reader's handling of whatever it
// returns does not panic either.
func FuzzParse(f *testing.F) {
	tcp4 := ipv4("10.244.1.2", "10.244.2.3", unix.IPPROTO_TCP, 5, 0, ports(40000, 8080))
	f.Add(packetMsg(hwHdrAttr(), prefixAttr(pfx), payloadAttr(tcp4)))
	f.Add(packetMsg(prefixAttr("nodenet-deny egress ns/abcdefghijklmnopqrstuvwxy #ABCDEFGHIJKLMNOP"),
		payloadAttr(ipv6("fd00::1", "fd00::2", unix.IPPROTO_HOPOPTS, cat(ext(unix.IPPROTO_FRAGMENT, 0), fragHdr(unix.IPPROTO_UDP, 0), ports(1, 2))))))
	f.Add(cat(packetMsg(prefixAttr(pfx), payloadAttr(tcp4)), nlmsg(unix.NLMSG_DONE, []byte{0, 0, 0, 0})))
	f.Add([]byte{})
	r := newReader(Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Resolve: func(h string) (string, bool) { return "ns/resolved", h == "ABCDEFGHIJKLMNOP" }})
	f.Fuzz(func(t *testing.T, b []byte) {
		in := bytes.Clone(b)
		pkts, _ := Parse(b)
		if !bytes.Equal(in, b) {
			t.Fatal("Parse modified its input")
		}
		for _, p := range pkts {
			if !p.Src.IsValid() || !p.Dst.IsValid() || p.Src.Is4() != p.Dst.Is4() {
				t.Fatalf("packet with addresses %v, %v", p.Src, p.Dst)
			}
			r.handle(p)
		}
	})
}
