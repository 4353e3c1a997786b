package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Policy configures NetworkPolicy enforcement.
type Policy struct {
	// LogDenied logs packets dropped by a NetworkPolicy (NFLOG, read back
	// by the daemon) and counts them per namespace.
	LogDenied bool `toml:"log_denied"`
	// LogRate and LogBurst limit the logging per isolated pod and
	// direction (iptables' limit match): "N/second|minute|hour|day".
	LogRate  string `toml:"log_rate"`
	LogBurst int    `toml:"log_burst"`
	// NFLOGGroup is the netlink log group the rules send to and the
	// daemon binds; no other program on the node may use it.
	NFLOGGroup int `toml:"nflog_group"`
}

func defaultPolicy() Policy {
	return Policy{LogDenied: true, LogRate: "10/minute", LogBurst: 5, NFLOGGroup: 100}
}

// maxLogBurst is iptables' limit on --limit-burst.
const maxLogBurst = 10000

func (p Policy) validate(s *section) {
	n, per, rateErr := ParseLogRate(p.LogRate)
	if rateErr != nil {
		s.add("log_rate", "%v", rateErr)
	}
	switch {
	case p.LogBurst < 1 || p.LogBurst > maxLogBurst:
		s.add("log_burst", "must be between 1 and %d, got %d", maxLogBurst, p.LogBurst)
	case rateErr == nil && limitAvg(n, per)*uint64(p.LogBurst) > math.MaxUint32:
		// The kernel keeps avg*burst in 32 bits and rejects the rule.
		s.add("log_burst", "%d is too large for log_rate %q (iptables' limit match overflows); raise the rate or lower the burst", p.LogBurst, p.LogRate)
	}
	if p.NFLOGGroup < 0 || p.NFLOGGroup > math.MaxUint16 {
		s.add("nflog_group", "must be between 0 and 65535, got %d", p.NFLOGGroup)
	}
}

// rateUnits are the units of iptables' limit match.
var rateUnits = map[string]time.Duration{"second": time.Second, "minute": time.Minute, "hour": time.Hour, "day": 24 * time.Hour}

// ParseLogRate parses "N/unit", unit one of second, minute, hour, day and
// 1 <= N, at most 10000 per second (iptables' limit match).
func ParseLogRate(r string) (n int, per time.Duration, err error) {
	num, unit, ok := strings.Cut(r, "/")
	per, known := rateUnits[unit]
	n, nerr := strconv.Atoi(num)
	if !ok || !known || nerr != nil || strings.ContainsAny(num, "+-") {
		return 0, 0, fmt.Errorf("must be N/second, N/minute, N/hour or N/day, got %q", r)
	}
	if n < 1 || limitAvg(n, per) < 1 {
		return 0, 0, fmt.Errorf("must be between 1 per unit and 10000/second, got %q", r)
	}
	return n, per, nil
}

// limitAvg is iptables' limit "avg": the time between two packets in
// 1/10000 s.
func limitAvg(n int, per time.Duration) uint64 {
	return uint64(10000*per/time.Second) / uint64(n)
}
