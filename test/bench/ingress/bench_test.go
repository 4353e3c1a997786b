package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nodenet/nodenet/test/harness"
)

const wrkOutput = `Running 10s test @ https://10.250.0.10:443/
  2 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.57ms    1.10ms  32.12ms   91.20%
    Req/Sec    16.45k     1.02k   18.90k    71.00%
  Latency Distribution
     50%  812.00us
     75%    1.80ms
     90%    2.60ms
     99%    5.01ms
  327456 requests in 10.00s, 41.22MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec:  32745.61
Transfer/sec:      4.12MB
`

func TestParseWrk(t *testing.T) {
	for _, tc := range []struct {
		name string
		out  string
		want wrkResult
		err  bool
	}{
		{"full", wrkOutput, wrkResult{ReqPerSec: 32745.61, P50: 812 * time.Microsecond, P99: 5010 * time.Microsecond,
			Requests: 327456, SocketErrors: socketErrors{Read: 3, Timeout: 2}, Non2xx3xx: 7}, false},
		{"seconds and no errors", strings.NewReplacer("812.00us", "1.00s", "5.01ms", "2.50s",
			"  Socket errors: connect 0, read 3, write 0, timeout 2\n", "", "  Non-2xx or 3xx responses: 7\n", "").Replace(wrkOutput),
			wrkResult{ReqPerSec: 32745.61, P50: time.Second, P99: 2500 * time.Millisecond, Requests: 327456}, false},
		{"no latency distribution", strings.Replace(wrkOutput, "     99%    5.01ms\n", "", 1), wrkResult{}, true},
		{"no rate", strings.Replace(wrkOutput, "Requests/sec:  32745.61\n", "", 1), wrkResult{}, true},
		{"empty", "", wrkResult{}, true},
	} {
		got, err := parseWrk(tc.out)
		if (err != nil) != tc.err {
			t.Errorf("%s: error %v, want error %v", tc.name, err, tc.err)
			continue
		}
		if !tc.err && got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

func TestWrkScript(t *testing.T) {
	s := wrkScript([]route{{"a.test", "/"}, {"b.test", "/api/x"}}, true)
	for _, want := range []string{
		`wrk.format("GET", "/", {["Host"] = "a.test", ["Connection"] = "close"})`,
		`wrk.format("GET", "/api/x", {["Host"] = "b.test", ["Connection"] = "close"})`,
		"request = function()",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("script lacks %s:\n%s", want, s)
		}
	}
	if strings.Contains(wrkScript([]route{{"a.test", "/"}}, false), "Connection") {
		t.Error("keep-alive script closes connections")
	}
}

func testNginxConfig(dir string) nginxConfig {
	return nginxConfig{
		Dir: dir, HTTPPort: 8080, HTTPSPort: 8443,
		Cert: filepath.Join(dir, "tls.crt"), Key: filepath.Join(dir, "tls.key"),
		AccessLog: true, MaxBodySize: "1m", ProxyBuffering: true,
		Upstreams: map[string][]string{"bench-web": {"10.244.1.2:8080", "10.244.1.3:8080"}, "bench-api": {"10.244.1.4:8080"}},
		Routes: []nginxRoute{
			{Host: "bench.test", Prefix: "/", Upstream: "bench-web"},
			{Host: "bench.test", Prefix: "/api", Upstream: "bench-api"},
			{Host: "other.test", Prefix: "/", Upstream: "bench-api"},
		},
	}
}

func TestNginxConfigRender(t *testing.T) {
	conf, err := testNginxConfig("/p").render()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"worker_processes auto;",
		"pid /p/nginx.pid;",
		"access_log /p/access.log combined;",
		"upstream bench-web {\n        server 10.244.1.2:8080 max_fails=1 fail_timeout=30s;\n        server 10.244.1.3:8080",
		"keepalive 320;",
		`proxy_set_header Connection "";`,
		"listen 8443 ssl http2 default_server reuseport backlog=4096;",
		"server_name bench.test;",
		"location = /api {",
		"location /api/ {",
		"server_name other.test;",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("config lacks %q:\n%s", want, conf)
		}
	}
	bad := testNginxConfig("/p")
	bad.Routes = append(bad.Routes, nginxRoute{Host: "x.test", Prefix: "/", Upstream: "nowhere"})
	if _, err := bad.render(); err == nil {
		t.Error("a route to a missing upstream rendered")
	}
	bad = testNginxConfig("/p")
	bad.Routes[1].Prefix = "/api/"
	if _, err := bad.render(); err == nil {
		t.Error("a prefix with a trailing slash rendered")
	}
}

// TestNginxAcceptsConfig runs nginx -t on the rendered config (it parses
// and opens files; it binds nothing).
func TestNginxAcceptsConfig(t *testing.T) {
	if _, err := os.Stat(nginxBin); err != nil {
		t.Skip("nginx not installed (make bench-ingress installs it)")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: the config runs workers as root")
	}
	dir := t.TempDir()
	ca, err := harness.NewTestCA("bench-test")
	if err != nil {
		t.Fatal(err)
	}
	crt, key, err := ca.Issue("bench.test")
	if err != nil {
		t.Fatal(err)
	}
	cfg := testNginxConfig(dir)
	if err := os.WriteFile(cfg.Cert, crt, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg.Key, key, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o700); err != nil {
		t.Fatal(err)
	}
	conf, err := cfg.render()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(nginxBin, "-t", "-p", dir, "-c", path, "-e", filepath.Join(dir, "error.log")).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s\n%s", err, out, conf)
	}
}

func TestParseStat(t *testing.T) {
	for _, tc := range []struct {
		line string
		cpu  time.Duration
		ppid int
		err  bool
	}{
		{"4242 (nginx) S 4240 4242 4242 0 -1 4194624 500 0 0 0 150 50 0 0 20 0 1 0 100 1000 10 18446744073709551615", 2 * time.Second, 4240, false},
		{"77 (a b) c)) R 1 77 77 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 1 1 1 1", 70 * time.Millisecond, 1, false},
		{"77 (x) R 1 2", 0, 0, true},
		{"no parenthesis", 0, 0, true},
	} {
		cpu, ppid, err := parseStat(tc.line)
		if (err != nil) != tc.err || !tc.err && (cpu != tc.cpu || ppid != tc.ppid) {
			t.Errorf("%q: got %v, %d, %v; want %v, %d, error %v", tc.line, cpu, ppid, err, tc.cpu, tc.ppid, tc.err)
		}
	}
}

func TestReportMarksMisses(t *testing.T) {
	m := func(rate float64, p99 time.Duration, errs int64) measurement {
		return measurement{wrkResult: wrkResult{ReqPerSec: rate, P50: p99 / 2, P99: p99, Requests: 1000, Non2xx3xx: errs}, CPU: 50 * time.Millisecond}
	}
	var b strings.Builder
	printReport(&b, "header", []modeResult{
		{Mode: "http keep-alive", Nodenet: m(2000, time.Millisecond, 0), Nginx: m(1000, 2*time.Millisecond, 0)},
		{Mode: "https new-connection", Nodenet: m(500, 3*time.Millisecond, 0), Nginx: m(1000, 2*time.Millisecond, 0),
			NodenetErrors: 2, NginxErrors: 1},
	})
	out := b.String()
	for _, want := range []string{
		"http keep-alive        |      2000      1000   2.00  |",
		"https new-connection: req/s 0.500 of nginx's",
		"https new-connection: p99 1.500× nginx's",
		"https new-connection: nodenet had 2 errors",
		"|      2      1 |",
		"    50.0    50.0",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "http keep-alive: ") {
		t.Errorf("a met target reported as a miss:\n%s", out)
	}
	b.Reset()
	printReport(&b, "h", []modeResult{{Mode: "m", Nodenet: m(1000, time.Millisecond, 0), Nginx: m(1000, time.Millisecond, 0)}})
	if !strings.Contains(b.String(), "every target met") {
		t.Errorf("equal results are no miss:\n%s", b.String())
	}
}
