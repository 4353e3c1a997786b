package denylog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"

	"golang.org/x/sys/unix"
)

// nfnetlink_log's wire constants (linux/netfilter/nfnetlink_log.h);
// golang.org/x/sys/unix has the netlink ones but not these.
const (
	nfnlSubsysULOG  = 4 // NFNL_SUBSYS_ULOG: message type = subsys<<8 | msg
	nfulnlMsgPacket = 0 // NFULNL_MSG_PACKET
	nfulnlMsgConfig = 1 // NFULNL_MSG_CONFIG

	nfulaPayload = 9  // NFULA_PAYLOAD: the packet from its network header
	nfulaPrefix  = 10 // NFULA_PREFIX: the rule's --nflog-prefix, NUL-terminated

	nfulaCfgCmd     = 1 // NFULA_CFG_CMD: struct nfulnl_msg_config_cmd
	nfulaCfgMode    = 2 // NFULA_CFG_MODE: struct nfulnl_msg_config_mode
	nfulaCfgQThresh = 5 // NFULA_CFG_QTHRESH: be32, packets per batch

	nfulnlCfgCmdBind = 1 // NFULNL_CFG_CMD_BIND
	nfulnlCopyPacket = 2 // NFULNL_COPY_PACKET

	nfgenmsgLen = 4 // struct nfgenmsg: family, version, res_id (be16)
	// nlaTypeMask strips NLA_F_NESTED and NLA_F_NET_BYTEORDER.
	nlaTypeMask = 0x3fff
)

// Packet is one logged packet: the rule's prefix and what its headers say.
// Ports are zero when the protocol has none or the copy did not reach them
// (a non-first fragment, a truncated copy).
type Packet struct {
	Prefix           string
	Src, Dst         netip.Addr
	Proto            uint8 // IP protocol number (IPv6: after extension headers)
	SrcPort, DstPort uint16
}

// ProtoName names the protocol as NetworkPolicy and iptables do.
func (p Packet) ProtoName() string {
	switch p.Proto {
	case unix.IPPROTO_TCP:
		return "tcp"
	case unix.IPPROTO_UDP:
		return "udp"
	case unix.IPPROTO_SCTP:
		return "sctp"
	case unix.IPPROTO_ICMP:
		return "icmp"
	case unix.IPPROTO_ICMPV6:
		return "icmpv6"
	}
	return strconv.Itoa(int(p.Proto))
}

var (
	errShort     = errors.New("truncated")
	errNoPrefix  = errors.New("no prefix attribute")
	errNoPayload = errors.New("no payload attribute")
)

// Parse decodes one datagram from the NFLOG socket. Each NFULNL_MSG_PACKET
// message becomes a Packet or, when it cannot be decoded, an error; other
// messages (acks, NLMSG_DONE of a batch) are skipped. Bad framing ends the
// datagram with one error, since nothing after it can be located.
func Parse(b []byte) ([]Packet, []error) {
	var pkts []Packet
	var errs []error
	for len(b) > 0 {
		if len(b) < unix.SizeofNlMsghdr {
			return pkts, append(errs, fmt.Errorf("netlink header: %w (%d bytes)", errShort, len(b)))
		}
		n := int(binary.NativeEndian.Uint32(b[0:4]))
		typ := binary.NativeEndian.Uint16(b[4:6])
		if n < unix.SizeofNlMsghdr || n > len(b) {
			return pkts, append(errs, fmt.Errorf("netlink message length %d of %d bytes", n, len(b)))
		}
		body := b[unix.SizeofNlMsghdr:n]
		b = b[min(nlAlign(n), len(b)):]
		switch {
		case typ == nfnlSubsysULOG<<8|nfulnlMsgPacket:
			p, err := ParseMessage(body)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			pkts = append(pkts, p)
		case typ == unix.NLMSG_ERROR:
			// An error (not an ack) here is the kernel refusing something
			// asynchronously; report it.
			if len(body) >= 4 {
				if errno := int32(binary.NativeEndian.Uint32(body[:4])); errno != 0 {
					errs = append(errs, fmt.Errorf("netlink error: %w", unix.Errno(-errno)))
				}
			}
		}
	}
	return pkts, errs
}

// ParseMessage decodes the body (after the nlmsghdr) of one
// NFULNL_MSG_PACKET message: nfgenmsg, then attributes.
func ParseMessage(b []byte) (Packet, error) {
	if len(b) < nfgenmsgLen {
		return Packet{}, fmt.Errorf("nfgenmsg: %w", errShort)
	}
	var p Packet
	var payload []byte
	havePrefix, havePayload := false, false
	for a := b[nfgenmsgLen:]; len(a) > 0; {
		if len(a) < unix.SizeofNlAttr {
			return Packet{}, fmt.Errorf("attribute header: %w", errShort)
		}
		n := int(binary.NativeEndian.Uint16(a[0:2]))
		typ := binary.NativeEndian.Uint16(a[2:4]) & nlaTypeMask
		if n < unix.SizeofNlAttr || n > len(a) {
			return Packet{}, fmt.Errorf("attribute %d: length %d of %d bytes", typ, n, len(a))
		}
		v := a[unix.SizeofNlAttr:n]
		a = a[min(nlAlign(n), len(a)):]
		switch typ {
		case nfulaPrefix:
			// NUL-terminated; tolerate a missing NUL.
			for i, c := range v {
				if c == 0 {
					v = v[:i]
					break
				}
			}
			p.Prefix, havePrefix = string(v), true
		case nfulaPayload:
			payload, havePayload = v, true
		}
	}
	switch {
	case !havePrefix:
		return Packet{}, errNoPrefix
	case !havePayload:
		return Packet{}, errNoPayload
	}
	if err := parsePayload(payload, &p); err != nil {
		return Packet{}, fmt.Errorf("payload: %w", err)
	}
	return p, nil
}

// parsePayload reads the network header (IPv4 or IPv6 by its version
// nibble) and the ports of TCP, UDP and SCTP (all start with source and
// destination port).
func parsePayload(b []byte, p *Packet) error {
	if len(b) < 1 {
		return fmt.Errorf("empty")
	}
	var l4 []byte
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 {
			return fmt.Errorf("IPv4 header: %w", errShort)
		}
		ihl := int(b[0]&0x0f) * 4
		if ihl < 20 || ihl > len(b) {
			return fmt.Errorf("IPv4 header length %d of %d bytes", ihl, len(b))
		}
		p.Src = netip.AddrFrom4([4]byte(b[12:16]))
		p.Dst = netip.AddrFrom4([4]byte(b[16:20]))
		p.Proto = b[9]
		// Only the first fragment carries the ports.
		if binary.BigEndian.Uint16(b[6:8])&0x1fff == 0 {
			l4 = b[ihl:]
		}
	case 6:
		if len(b) < 40 {
			return fmt.Errorf("IPv6 header: %w", errShort)
		}
		p.Src = netip.AddrFrom16([16]byte(b[8:24]))
		p.Dst = netip.AddrFrom16([16]byte(b[24:40]))
		p.Proto, l4 = skipIPv6Ext(b[6], b[40:])
	default:
		return fmt.Errorf("IP version %d", b[0]>>4)
	}
	switch p.Proto {
	case unix.IPPROTO_TCP, unix.IPPROTO_UDP, unix.IPPROTO_SCTP:
		if len(l4) >= 4 {
			p.SrcPort = binary.BigEndian.Uint16(l4[0:2])
			p.DstPort = binary.BigEndian.Uint16(l4[2:4])
		}
	}
	return nil
}

// skipIPv6Ext follows IPv6 extension headers from next header nh over b
// and returns the upper-layer protocol and its bytes (nil when they are
// not in the copy, or this is a non-first fragment).
func skipIPv6Ext(nh uint8, b []byte) (uint8, []byte) {
	// A packet has few extension headers; the bound only stops a forged
	// chain from looping long.
	for range 8 {
		var n int
		switch nh {
		case unix.IPPROTO_HOPOPTS, unix.IPPROTO_ROUTING, unix.IPPROTO_DSTOPTS:
			if len(b) < 2 {
				return nh, nil
			}
			n = (int(b[1]) + 1) * 8
		case unix.IPPROTO_AH:
			if len(b) < 2 {
				return nh, nil
			}
			n = (int(b[1]) + 2) * 4
		case unix.IPPROTO_FRAGMENT:
			if len(b) < 8 {
				return nh, nil
			}
			if binary.BigEndian.Uint16(b[2:4])>>3 != 0 {
				return b[0], nil
			}
			n = 8
		default:
			return nh, b
		}
		if n > len(b) {
			return b[0], nil
		}
		nh, b = b[0], b[n:]
	}
	return nh, nil
}

func nlAlign(n int) int { return (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }
