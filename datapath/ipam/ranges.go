package ipam

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strings"
)

// Smallest ranges we accept. An IPv4 /30 has exactly one leasable address
// (network, gateway and broadcast take the other three); an IPv6 /126 has two
// (no broadcast in IPv6, but the network address is the subnet-router anycast).
const (
	maxBits4 = 30
	maxBits6 = 126
)

// validateRanges checks the node's pod ranges and returns them IPv4 first.
// Every problem is reported, not only the first.
func validateRanges(ranges []netip.Prefix) ([]netip.Prefix, error) {
	var errs []error
	var v4, v6 []netip.Prefix
	for i, p := range ranges {
		if err := checkRange(p); err != nil {
			errs = append(errs, fmt.Errorf("ranges[%d]: %w", i, err))
			continue
		}
		if p.Addr().Is4() {
			v4 = append(v4, p)
		} else {
			v6 = append(v6, p)
		}
	}
	if len(v4) > 1 {
		errs = append(errs, fmt.Errorf("more than one IPv4 range: %v", v4))
	}
	if len(v6) > 1 {
		errs = append(errs, fmt.Errorf("more than one IPv6 range: %v", v6))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("ipam: invalid pod ranges: %w", errors.Join(errs...))
	}
	return append(v4, v6...), nil
}

// checkRange validates one range on its own.
func checkRange(p netip.Prefix) error {
	switch {
	case !p.IsValid():
		return fmt.Errorf("invalid prefix %q", p.String())
	case p.Addr().Zone() != "":
		return fmt.Errorf("%s: zoned address", p)
	case p.Addr().Is4In6():
		return fmt.Errorf("%s: IPv4-mapped IPv6 prefix, use the IPv4 form", p)
	case p != p.Masked():
		return fmt.Errorf("%s is not canonical (host bits set; want %s)", p, p.Masked())
	case p.Addr().Is4() && p.Bits() > maxBits4:
		return fmt.Errorf("IPv4 range %s is smaller than /%d", p, maxBits4)
	case p.Addr().Is6() && p.Bits() > maxBits6:
		return fmt.Errorf("IPv6 range %s is smaller than /%d", p, maxBits6)
	}
	return nil
}

// gateway is the first usable address of p: it sits on the node's pod bridge.
func gateway(p netip.Prefix) netip.Addr { return p.Addr().Next() }

// lastAddr is the highest address in p (the broadcast address for IPv4).
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().As16()
	start := 0
	if p.Addr().Is4() {
		start = 96 // As16 holds IPv4 in the last four bytes
	}
	for bit := start + p.Bits(); bit < 128; bit++ {
		b[bit/8] |= 0x80 >> (bit % 8)
	}
	a := netip.AddrFrom16(b)
	if p.Addr().Is4() {
		a = a.Unmap()
	}
	return a
}

// leasableSpan is the inclusive span of addresses we may hand out from p: it
// skips the network address (IPv6: subnet-router anycast), the gateway and,
// for IPv4, the broadcast address.
func leasableSpan(p netip.Prefix) (first, last netip.Addr) {
	first = gateway(p).Next()
	last = lastAddr(p)
	if p.Addr().Is4() {
		last = last.Prev()
	}
	return first, last
}

// capacity is the number of leasable addresses in p, saturated at
// math.MaxUint64 for IPv6 ranges larger than a /64 (a /64 itself has
// 2^64-2 leasable addresses, which fits).
func capacity(p netip.Prefix) uint64 {
	host := p.Addr().BitLen() - p.Bits()
	reserved := uint64(2) // network, gateway
	if p.Addr().Is4() {
		reserved = 3 // and broadcast
	}
	switch {
	case host > 64:
		return math.MaxUint64
	case host == 64:
		return math.MaxUint64 - (reserved - 1)
	default:
		return 1<<host - reserved
	}
}

// dirName is the directory holding p's leases, the prefix with "/" as "_"
// ("10.244.1.0_24", "fd00:10:244:1::_64"). Colons are fine in Linux names.
func dirName(p netip.Prefix) string { return strings.Replace(p.String(), "/", "_", 1) }

// parseDirName is the inverse of dirName; it accepts only names dirName
// produces for a range checkRange accepts.
func parseDirName(name string) (netip.Prefix, bool) {
	i := strings.LastIndexByte(name, '_')
	if i < 0 {
		return netip.Prefix{}, false
	}
	p, err := netip.ParsePrefix(name[:i] + "/" + name[i+1:])
	if err != nil || checkRange(p) != nil || dirName(p) != name {
		return netip.Prefix{}, false
	}
	return p, true
}

// pool is the allocation state of one range, configured or stale.
type pool struct {
	prefix      netip.Prefix
	first, last netip.Addr // leasable span
	dir         string

	// cursor is the address handed out last; the next search starts after
	// it, so a freed address comes back only after the range has cycled.
	// Invalid when nothing has been handed out yet.
	cursor netip.Addr
	// inUse counts reserved addresses (leases in any pool's directory, plus
	// orphans) that are leasable in this range. Ranges may overlap when the
	// node's podCIDRs change, so it is not the same as files.
	inUse uint64
	// files counts lease files in this pool's directory.
	files int
}

func newPool(p netip.Prefix, dir string) *pool {
	first, last := leasableSpan(p)
	return &pool{prefix: p, first: first, last: last, dir: dir}
}

func (p *pool) leasable(a netip.Addr) bool {
	return p.prefix.Contains(a) && a.Compare(p.first) >= 0 && a.Compare(p.last) <= 0
}

// next finds the first address after the cursor, wrapping around, for which
// taken is false. It looks at no more than inUse+1 candidates: at most inUse
// of the leasable addresses are taken, so a /64 is never enumerated.
func (p *pool) next(taken func(netip.Addr) bool) (netip.Addr, bool) {
	if p.inUse >= capacity(p.prefix) {
		return netip.Addr{}, false
	}
	a := p.first
	if p.leasable(p.cursor) && p.cursor != p.last {
		a = p.cursor.Next()
	}
	for range p.inUse + 1 {
		if !taken(a) {
			return a, true
		}
		if a == p.last {
			a = p.first
		} else {
			a = a.Next()
		}
	}
	return netip.Addr{}, false
}
