package main

import (
	"strconv"
	"strings"
	"time"
)

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

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func round(d time.Duration) time.Duration {
	if d > time.Second {
		return d.Round(10 * time.Millisecond)
	}
	return d.Round(100 * time.Microsecond)
}
