package main

import (
	"bufio"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// wrkResult is what one wrk run measured.
type wrkResult struct {
	ReqPerSec    float64
	P50, P99     time.Duration
	Requests     int64
	SocketErrors socketErrors
	Non2xx3xx    int64
}

// socketErrors are wrk's counts by kind.
type socketErrors struct {
	Connect, Read, Write, Timeout int64
}

func (e socketErrors) total() int64 { return e.Connect + e.Read + e.Write + e.Timeout }

var (
	reRate     = regexp.MustCompile(`^Requests/sec:\s+([0-9.]+)`)
	rePct      = regexp.MustCompile(`^(50|99)(?:\.000)?%\s+([0-9.]+)(us|ms|s|m|h)$`)
	reTotal    = regexp.MustCompile(`^(\d+) requests in `)
	reSockErrs = regexp.MustCompile(`^Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	reNon2xx   = regexp.MustCompile(`^Non-2xx or 3xx responses: (\d+)`)
)

// parseWrk reads wrk's report (run with --latency). It fails unless the
// rate and both percentiles are there.
func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	var haveRate, have50, have99 bool
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if m := reRate.FindStringSubmatch(line); m != nil {
			v, err := strconv.ParseFloat(m[1], 64)
			if err != nil {
				return r, fmt.Errorf("wrk rate %q: %w", m[1], err)
			}
			r.ReqPerSec, haveRate = v, true
		}
		if m := rePct.FindStringSubmatch(line); m != nil {
			d, err := wrkDuration(m[2], m[3])
			if err != nil {
				return r, err
			}
			if m[1] == "50" {
				r.P50, have50 = d, true
			} else {
				r.P99, have99 = d, true
			}
		}
		if m := reTotal.FindStringSubmatch(line); m != nil {
			r.Requests, _ = strconv.ParseInt(m[1], 10, 64)
		}
		if m := reSockErrs.FindStringSubmatch(line); m != nil {
			var n [4]int64
			for i, s := range m[1:] {
				n[i], _ = strconv.ParseInt(s, 10, 64)
			}
			r.SocketErrors = socketErrors{Connect: n[0], Read: n[1], Write: n[2], Timeout: n[3]}
		}
		if m := reNon2xx.FindStringSubmatch(line); m != nil {
			r.Non2xx3xx, _ = strconv.ParseInt(m[1], 10, 64)
		}
	}
	if !haveRate || !have50 || !have99 {
		return r, fmt.Errorf("wrk output lacks Requests/sec or the 50%%/99%% latency (run with --latency):\n%s", out)
	}
	return r, nil
}

// wrkDuration reads wrk's latency figures ("812.00us", "1.23ms", "2.00s").
func wrkDuration(num, unit string) (time.Duration, error) {
	v, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("wrk latency %s%s: %w", num, unit, err)
	}
	scale := map[string]float64{"us": 1e3, "ms": 1e6, "s": 1e9, "m": 60e9, "h": 3600e9}[unit]
	return time.Duration(v * scale), nil
}

// route is one host and path the benchmark requests.
type route struct {
	Host, Path string
}

// wrkScript is a wrk Lua script that cycles through the routes, each with
// its Host header; closeConn adds "Connection: close" so every request
// opens a new connection. Requests are formatted once per thread.
func wrkScript(routes []route, closeConn bool) string {
	var b strings.Builder
	b.WriteString("local reqs = {}\nlocal i = 0\n\ninit = function(args)\n")
	for _, r := range routes {
		fmt.Fprintf(&b, "  reqs[#reqs + 1] = wrk.format(\"GET\", %q, {[\"Host\"] = %q", r.Path, r.Host)
		if closeConn {
			b.WriteString(`, ["Connection"] = "close"`)
		}
		b.WriteString("})\n")
	}
	b.WriteString("end\n\nrequest = function()\n  i = i % #reqs + 1\n  return reqs[i]\nend\n")
	return b.String()
}
