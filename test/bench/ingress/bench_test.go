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
			Requests: 327456, SocketErrors: 5, Non2xx3xx: 7}, false},
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
