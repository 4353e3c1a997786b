package main

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// procStats are a process' CPU time (own, and of its waited-for children:
// iptables-restore, ipset) and peak resident memory.
type procStats struct {
	cpuSelf, cpuChildren float64 // seconds
	peakRSS              int64   // bytes
}

const clockTicks = 100 // USER_HZ on Linux

func readProcStats(pid int) (procStats, error) {
	var s procStats
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// Fields after the ")" closing the command name: state is field 3, so
	// utime (14), stime (15), cutime (16), cstime (17) are f[11..14].
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	if len(f) < 15 {
		return s, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	var t [4]float64
	for i := range t {
		v, err := strconv.ParseInt(f[11+i], 10, 64)
		if err != nil {
			return s, fmt.Errorf("/proc/%d/stat field %d: %w", pid, 14+i, err)
		}
		t[i] = float64(v) / clockTicks
	}
	s.cpuSelf, s.cpuChildren = t[0]+t[1], t[2]+t[3]
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return s, fmt.Errorf("/proc/%d/status VmHWM %q: %w", pid, v, err)
			}
			s.peakRSS = kb * 1024
		}
	}
	return s, nil
}

// sum is the count and total of a histogram or summary.
type sum struct{ count, seconds float64 }

func (s sum) mean() time.Duration {
	if s.count == 0 {
		return 0
	}
	return time.Duration(s.seconds / s.count * float64(time.Second))
}

// histogram adds up <name>_count and <name>_sum over the series whose
// labels contain match, from a Prometheus text page.
func histogram(page, name, match string) sum {
	var s sum
	for line := range strings.SplitSeq(page, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || !strings.Contains(rest, match) {
			continue
		}
		f := strings.Fields(rest)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			continue
		}
		switch {
		case strings.HasPrefix(rest, "_count"):
			s.count += v
		case strings.HasPrefix(rest, "_sum"):
			s.seconds += v
		}
	}
	return s
}

// gauge is the sum of a metric's series, as text.
func gauge(page, name string) string {
	total, found := 0.0, false
	for line := range strings.SplitSeq(page, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		f := strings.Fields(rest)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			total, found = total+v, true
		}
	}
	if !found {
		return "0" // a counter never incremented has no series
	}
	return strconv.FormatFloat(total, 'f', -1, 64)
}

// percentile is the nearest-rank percentile.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s))*p+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func round(d time.Duration) time.Duration {
	if d > time.Second {
		return d.Round(10 * time.Millisecond)
	}
	return d.Round(100 * time.Microsecond)
}
