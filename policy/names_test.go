package policy

import (
	"strings"
	"testing"
)

func TestLogPrefixRoundTrip(t *testing.T) {
	long := "a-namespace-of-some-length/" + strings.Repeat("checkout-7f9c8d6b5-", 3) + "x2x4z"
	tests := []struct {
		d    direction
		key  string
		want LogPrefix
		text string
	}{
		{ingress, "x/a", LogPrefix{Direction: "ingress", Pod: "x/a"}, "nodenet-deny ingress x/a"},
		{egress, "y/c", LogPrefix{Direction: "egress", Pod: "y/c"}, "nodenet-deny egress y/c"},
		// 63 bytes exactly: not truncated.
		{egress, "ns/" + strings.Repeat("p", 40), LogPrefix{Direction: "egress", Pod: "ns/" + strings.Repeat("p", 40)}, ""},
		{ingress, long, LogPrefix{Direction: "ingress", Pod: long[:63-21-18], Hash: PodHash(long)}, ""},
	}
	for _, tt := range tests {
		q := logPrefix(tt.d, tt.key)
		text := strings.Trim(q, `"`)
		if len(text) > maxLogPrefix || q != `"`+text+`"` {
			t.Errorf("logPrefix(%v, %q) = %s: longer than %d or badly quoted", tt.d, tt.key, q, maxLogPrefix)
		}
		if tt.text != "" && text != tt.text {
			t.Errorf("logPrefix(%v, %q) = %q, want %q", tt.d, tt.key, text, tt.text)
		}
		got, ok := ParseLogPrefix(text)
		if !ok || got != tt.want {
			t.Errorf("ParseLogPrefix(%q) = %+v, %v; want %+v", text, got, ok, tt.want)
		}
	}
}

func TestParseLogPrefixRejects(t *testing.T) {
	for _, s := range []string{
		"", "nodenet-deny", "nodenet-deny ingress", "nodenet-deny ingress ", "nodenet-policy drop ingress x/a",
		"nodenet-deny sideways x/a", "nodenet-deny ingress x/a ABCDEFGHIJKLMNOP", "nodenet-deny ingress x/a #SHORT",
		"nodenet-deny ingress x/a #ABCDEFGHIJKLMNOP extra", "nodenet-deny  ingress x/a",
	} {
		if p, ok := ParseLogPrefix(s); ok {
			t.Errorf("ParseLogPrefix(%q) = %+v, want not ok", s, p)
		}
	}
}
