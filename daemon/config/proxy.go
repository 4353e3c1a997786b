package config

import (
	"fmt"
	"strconv"
	"strings"
)

func (p Proxy) validate(s *section) {
	if len(p.NodePortAddresses) > 0 {
		cidrsAny(s, "node_port_addresses", p.NodePortAddresses)
	}
	if _, _, err := ParsePortRange(p.NodePortRange); err != nil {
		s.add("node_port_range", "%v", err)
	}
}

// cidrsAny checks a list of CIDRs, any number per family.
func cidrsAny(s *section, key string, list []string) {
	for i, c := range list {
		cidr(s, fmt.Sprintf("%s[%d]", key, i), c)
	}
}

// ParsePortRange parses "first-last" (inclusive), both 1-65535.
func ParsePortRange(r string) (first, last int, err error) {
	a, b, ok := strings.Cut(r, "-")
	if !ok {
		return 0, 0, fmt.Errorf("must be FIRST-LAST, e.g. 30000-32767, got %q", r)
	}
	first, err1 := strconv.Atoi(a)
	last, err2 := strconv.Atoi(b)
	if err1 != nil || err2 != nil || first < 1 || last > 65535 || first > last {
		return 0, 0, fmt.Errorf("must be FIRST-LAST with 1 <= FIRST <= LAST <= 65535, got %q", r)
	}
	return first, last, nil
}
