// Package annotations parses the ingress-nginx annotations nodenet supports
// (nginx.ingress.kubernetes.io/...) into typed settings. It is pure: every
// invalid value becomes a problem message (for a Warning Event on the
// Ingress) and the setting keeps its default. Annotations that inject
// configuration (snippets) or that nodenet does not implement are never
// acted on; they are reported as unsupported.
package annotations

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nodenet/nodenet/daemon/config"
)

// Prefix is the ingress-nginx annotation prefix.
const Prefix = "nginx.ingress.kubernetes.io/"

// Backend protocols of backend-protocol.
const (
	HTTP  = "HTTP"
	HTTPS = "HTTPS"
	GRPC  = "GRPC"  // HTTP/2 without TLS (h2c)
	GRPCS = "GRPCS" // HTTP/2 over TLS
	H2C   = "H2C"   // HTTP/2 without TLS for any HTTP/2 backend
)

// DefaultCookieName is ingress-nginx's default session-cookie-name.
const DefaultCookieName = "INGRESSCOOKIE"

// Config is the parsed annotations of one Ingress. Zero durations and a
// negative BodySize mean "use the default".
type Config struct {
	RewriteTarget    string
	UseRegex         bool
	SSLRedirect      bool // redirect HTTP to HTTPS when the host has TLS (default true)
	ForceSSLRedirect bool // redirect even without TLS for the host

	Canary              bool
	CanaryWeight        int // 0..CanaryWeightTotal
	CanaryWeightTotal   int // default 100
	CanaryByHeader      string
	CanaryByHeaderValue string

	Affinity          string // "" or "cookie"
	SessionCookieName string

	ConnectTimeout time.Duration
	ReadTimeout    time.Duration
	SendTimeout    time.Duration
	BodySize       int64 // bytes; 0 unlimited; -1 unset

	BackendProtocol string
	SourceRanges    []netip.Prefix
}

// Defaults is the Config of an Ingress without annotations.
func Defaults() Config {
	return Config{SSLRedirect: true, CanaryWeightTotal: 100, SessionCookieName: DefaultCookieName,
		BodySize: -1, BackendProtocol: HTTP}
}

// parser handles one supported annotation (name without the prefix).
type parser func(c *Config, v string) error

var parsers = map[string]parser{
	"rewrite-target": func(c *Config, v string) error {
		if !strings.HasPrefix(v, "/") {
			return fmt.Errorf("must be a path starting with /")
		}
		if strings.ContainsAny(v, " \t\r\n") {
			return fmt.Errorf("must not contain white space")
		}
		c.RewriteTarget = v
		return nil
	},
	"use-regex":          boolInto(func(c *Config) *bool { return &c.UseRegex }),
	"ssl-redirect":       boolInto(func(c *Config) *bool { return &c.SSLRedirect }),
	"force-ssl-redirect": boolInto(func(c *Config) *bool { return &c.ForceSSLRedirect }),
	"canary":             boolInto(func(c *Config) *bool { return &c.Canary }),
	"canary-weight": func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return fmt.Errorf("must be a non-negative integer")
		}
		c.CanaryWeight = n
		return nil
	},
	"canary-weight-total": func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return fmt.Errorf("must be a positive integer")
		}
		c.CanaryWeightTotal = n
		return nil
	},
	"canary-by-header": func(c *Config, v string) error {
		if !validHeaderName(v) {
			return fmt.Errorf("must be an HTTP header name")
		}
		c.CanaryByHeader = v
		return nil
	},
	"canary-by-header-value": func(c *Config, v string) error {
		if v == "" || strings.ContainsAny(v, "\r\n") {
			return fmt.Errorf("must be a non-empty single-line value")
		}
		c.CanaryByHeaderValue = v
		return nil
	},
	"affinity": func(c *Config, v string) error {
		if v != "cookie" {
			return fmt.Errorf(`only "cookie" is supported`)
		}
		c.Affinity = v
		return nil
	},
	"session-cookie-name": func(c *Config, v string) error {
		if !cookieName.MatchString(v) {
			return fmt.Errorf("must be a cookie name (letters, digits, - and _)")
		}
		c.SessionCookieName = v
		return nil
	},
	"proxy-connect-timeout": timeoutInto(func(c *Config) *time.Duration { return &c.ConnectTimeout }),
	"proxy-read-timeout":    timeoutInto(func(c *Config) *time.Duration { return &c.ReadTimeout }),
	"proxy-send-timeout":    timeoutInto(func(c *Config) *time.Duration { return &c.SendTimeout }),
	"proxy-body-size": func(c *Config, v string) error {
		n, err := config.ParseSize(v)
		if err != nil {
			return err
		}
		c.BodySize = n
		return nil
	},
	"backend-protocol": func(c *Config, v string) error {
		p := strings.ToUpper(v)
		if !slices.Contains([]string{HTTP, HTTPS, GRPC, GRPCS, H2C}, p) {
			return fmt.Errorf("must be one of HTTP, HTTPS, GRPC, GRPCS, H2C")
		}
		c.BackendProtocol = p
		return nil
	},
	"whitelist-source-range": sourceRanges,
	"allowlist-source-range": sourceRanges,
}

var cookieName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Supported lists the supported annotation names (without the prefix), sorted.
func Supported() []string {
	names := make([]string, 0, len(parsers))
	for n := range parsers {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Parse reads the annotations of one Ingress. Problems are sorted messages
// naming the annotation; a problem never stops the other annotations.
func Parse(ann map[string]string) (Config, []string) {
	c := Defaults()
	var problems []string
	for k, v := range ann {
		name, ok := strings.CutPrefix(k, Prefix)
		if !ok {
			continue
		}
		p := parsers[name]
		if p == nil {
			if strings.HasSuffix(name, "-snippet") || name == "snippet" {
				problems = append(problems, fmt.Sprintf("%s: unsupported: configuration snippets are never executed", k))
			} else {
				problems = append(problems, fmt.Sprintf("%s: unsupported by nodenet; ignored", k))
			}
			continue
		}
		if err := p(&c, strings.TrimSpace(v)); err != nil {
			problems = append(problems, fmt.Sprintf("%s: invalid value %q: %v; ignored", k, v, err))
		}
	}
	if c.CanaryWeight > c.CanaryWeightTotal {
		problems = append(problems, fmt.Sprintf("%scanary-weight: %d exceeds canary-weight-total %d; using %d",
			Prefix, c.CanaryWeight, c.CanaryWeightTotal, c.CanaryWeightTotal))
		c.CanaryWeight = c.CanaryWeightTotal
	}
	// Both range annotations may be set; keep the result deterministic.
	slices.SortFunc(c.SourceRanges, func(a, b netip.Prefix) int {
		if x := a.Addr().Compare(b.Addr()); x != 0 {
			return x
		}
		return a.Bits() - b.Bits()
	})
	c.SourceRanges = slices.Compact(c.SourceRanges)
	slices.Sort(problems)
	return c, problems
}

func boolInto(field func(*Config) *bool) parser {
	return func(c *Config, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf(`must be "true" or "false"`)
		}
		*field(c) = b
		return nil
	}
}

// timeoutInto parses ingress-nginx timeouts: whole seconds ("60"), or a Go
// duration ("1m", "500ms") for convenience.
func timeoutInto(field func(*Config) *time.Duration) parser {
	return func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if n, nerr := strconv.Atoi(v); nerr == nil {
			d, err = time.Duration(n)*time.Second, nil
		}
		if err != nil || d <= 0 || d > 24*time.Hour {
			return fmt.Errorf("must be seconds (e.g. \"60\") or a duration (e.g. \"1m\") between 1ms and 24h")
		}
		*field(c) = d
		return nil
	}
}

func sourceRanges(c *Config, v string) error {
	var out []netip.Prefix
	for f := range strings.SplitSeq(v, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			a, aerr := netip.ParseAddr(f)
			if aerr != nil || a.Zone() != "" {
				return fmt.Errorf("%q is not a CIDR or IP address", f)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	if len(out) == 0 {
		return fmt.Errorf("must list at least one CIDR")
	}
	c.SourceRanges = append(c.SourceRanges, out...)
	return nil
}

// validHeaderName reports whether v is an RFC 9110 token.
func validHeaderName(v string) bool {
	if v == "" || len(v) > 256 {
		return false
	}
	for i := 0; i < len(v); i++ {
		b := v[i]
		if b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", b) >= 0 {
			continue
		}
		return false
	}
	return true
}
