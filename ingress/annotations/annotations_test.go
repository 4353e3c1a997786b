package annotations

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParse(t *testing.T) {
	def := Defaults()
	with := func(f func(c *Config)) Config {
		c := Defaults()
		f(&c)
		return c
	}
	tests := []struct {
		name     string
		ann      map[string]string
		want     Config
		problems []string
	}{
		{"none", nil, def, nil},
		{"foreign prefix ignored", map[string]string{"kubernetes.io/ingress.class": "nodenet", "example.com/x": "y"}, def, nil},
		{"rewrite", map[string]string{Prefix + "rewrite-target": "/$2", Prefix + "use-regex": "true"},
			with(func(c *Config) { c.RewriteTarget, c.UseRegex = "/$2", true }), nil},
		{"rewrite not a path", map[string]string{Prefix + "rewrite-target": "$1"}, def,
			[]string{Prefix + `rewrite-target: invalid value "$1": must be a path starting with /; ignored`}},
		{"redirects", map[string]string{Prefix + "ssl-redirect": "false", Prefix + "force-ssl-redirect": "true"},
			with(func(c *Config) { c.SSLRedirect, c.ForceSSLRedirect = false, true }), nil},
		{"bool invalid", map[string]string{Prefix + "ssl-redirect": "yes please"}, def,
			[]string{Prefix + `ssl-redirect: invalid value "yes please": must be "true" or "false"; ignored`}},
		{"canary weight", map[string]string{Prefix + "canary": "true", Prefix + "canary-weight": "30"},
			with(func(c *Config) { c.Canary, c.CanaryWeight = true, 30 }), nil},
		{"canary weight total", map[string]string{Prefix + "canary-weight": "3", Prefix + "canary-weight-total": "1000"},
			with(func(c *Config) { c.CanaryWeight, c.CanaryWeightTotal = 3, 1000 }), nil},
		{"canary weight too big", map[string]string{Prefix + "canary-weight": "130"},
			with(func(c *Config) { c.CanaryWeight = 100 }),
			[]string{Prefix + "canary-weight: 130 exceeds canary-weight-total 100; using 100"}},
		{"canary weight negative", map[string]string{Prefix + "canary-weight": "-1"}, def,
			[]string{Prefix + `canary-weight: invalid value "-1": must be a non-negative integer; ignored`}},
		{"canary header", map[string]string{Prefix + "canary-by-header": "X-Canary", Prefix + "canary-by-header-value": "blue"},
			with(func(c *Config) { c.CanaryByHeader, c.CanaryByHeaderValue = "X-Canary", "blue" }), nil},
		{"canary header bad", map[string]string{Prefix + "canary-by-header": "X Canary"}, def,
			[]string{Prefix + `canary-by-header: invalid value "X Canary": must be an HTTP header name; ignored`}},
		{"affinity", map[string]string{Prefix + "affinity": "cookie", Prefix + "session-cookie-name": "route"},
			with(func(c *Config) { c.Affinity, c.SessionCookieName = "cookie", "route" }), nil},
		{"affinity other", map[string]string{Prefix + "affinity": "ip"}, def,
			[]string{Prefix + `affinity: invalid value "ip": only "cookie" is supported; ignored`}},
		{"cookie name bad", map[string]string{Prefix + "session-cookie-name": "a;b"}, def,
			[]string{Prefix + `session-cookie-name: invalid value "a;b": must be a cookie name (letters, digits, - and _); ignored`}},
		{"timeouts", map[string]string{Prefix + "proxy-connect-timeout": "5", Prefix + "proxy-read-timeout": "2m", Prefix + "proxy-send-timeout": "500ms"},
			with(func(c *Config) {
				c.ConnectTimeout, c.ReadTimeout, c.SendTimeout = 5*time.Second, 2*time.Minute, 500*time.Millisecond
			}), nil},
		{"timeout bad", map[string]string{Prefix + "proxy-read-timeout": "0"}, def,
			[]string{Prefix + `proxy-read-timeout: invalid value "0": must be seconds (e.g. "60") or a duration (e.g. "1m") between 1ms and 24h; ignored`}},
		{"body size", map[string]string{Prefix + "proxy-body-size": "8m"}, with(func(c *Config) { c.BodySize = 8 << 20 }), nil},
		{"body size unlimited", map[string]string{Prefix + "proxy-body-size": "0"}, with(func(c *Config) { c.BodySize = 0 }), nil},
		{"body size bad", map[string]string{Prefix + "proxy-body-size": "lots"}, def,
			[]string{Prefix + `proxy-body-size: invalid value "lots": size must be a number with an optional unit k, m or g, e.g. "1m", got "lots"; ignored`}},
		{"backend protocol", map[string]string{Prefix + "backend-protocol": "grpc"}, with(func(c *Config) { c.BackendProtocol = GRPC }), nil},
		{"backend protocol bad", map[string]string{Prefix + "backend-protocol": "FCGI"}, def,
			[]string{Prefix + `backend-protocol: invalid value "FCGI": must be one of HTTP, HTTPS, GRPC, GRPCS, H2C; ignored`}},
		{"source ranges both names", map[string]string{Prefix + "whitelist-source-range": "10.0.0.0/8, 192.0.2.7", Prefix + "allowlist-source-range": "2001:db8::/32,10.0.0.0/8"},
			with(func(c *Config) {
				c.SourceRanges = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32"), netip.MustParsePrefix("2001:db8::/32")}
			}), nil},
		{"source range bad", map[string]string{Prefix + "whitelist-source-range": "10.0.0.0/8,nope"}, def,
			[]string{Prefix + `whitelist-source-range: invalid value "10.0.0.0/8,nope": "nope" is not a CIDR or IP address; ignored`}},
		{"snippets never", map[string]string{Prefix + "configuration-snippet": "return 200;", Prefix + "server-snippet": "x"}, def,
			[]string{Prefix + "configuration-snippet: unsupported: configuration snippets are never executed",
				Prefix + "server-snippet: unsupported: configuration snippets are never executed"}},
		{"unknown", map[string]string{Prefix + "limit-rps": "5"}, def, []string{Prefix + "limit-rps: unsupported by nodenet; ignored"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, problems := Parse(tt.ann)
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
				t.Errorf("Config mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.problems, problems); diff != "" {
				t.Errorf("problems mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSupportedHasNoSnippets(t *testing.T) {
	for _, n := range Supported() {
		if strings.Contains(n, "snippet") {
			t.Errorf("Supported() lists %q", n)
		}
	}
	if len(Supported()) < 18 {
		t.Errorf("Supported() = %v, want the documented list", Supported())
	}
}

// FuzzAnnotations: any annotation value parses without panicking, settings
// stay within their documented ranges, and every problem names its key.
func FuzzAnnotations(f *testing.F) {
	for _, n := range Supported() {
		f.Add(n, "true")
	}
	f.Add("proxy-body-size", "99999999999g")
	f.Add("whitelist-source-range", "10.0.0.0/8,::1,fe80::1%eth0")
	f.Add("canary-weight", "101")
	f.Add("configuration-snippet", "more_set_headers x")
	f.Fuzz(func(t *testing.T, name, value string) {
		c, problems := Parse(map[string]string{Prefix + name: value, Prefix + "canary-weight": value})
		if c.CanaryWeight < 0 || c.CanaryWeight > c.CanaryWeightTotal || c.CanaryWeightTotal < 1 {
			t.Fatalf("canary weight %d of %d out of range", c.CanaryWeight, c.CanaryWeightTotal)
		}
		if c.BodySize < -1 || c.ConnectTimeout < 0 || c.ReadTimeout < 0 || c.SendTimeout < 0 {
			t.Fatalf("negative limit in %+v", c)
		}
		if c.RewriteTarget != "" && c.RewriteTarget[0] != '/' {
			t.Fatalf("rewrite target %q", c.RewriteTarget)
		}
		for _, p := range problems {
			if !strings.HasPrefix(p, Prefix) {
				t.Fatalf("problem %q does not name its annotation", p)
			}
		}
		for _, p := range c.SourceRanges {
			if !p.IsValid() || p != p.Masked() {
				t.Fatalf("source range %v", p)
			}
		}
	})
}
