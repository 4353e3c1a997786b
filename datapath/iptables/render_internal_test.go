package iptables

import (
	"bytes"
	"strings"
	"testing"
)

// TestPlanSize: size is exactly the rendered length (render allocates it
// up front; a short estimate would grow the buffer, a long one waste it),
// and writeTo through a plain writer gives the same bytes.
func TestPlanSize(t *testing.T) {
	p := &tablePlan{
		write: []Chain{
			{Table: TableNAT, Name: "NODENET-SVC-A", Rules: []Rule{`-p tcp -m comment --comment "ns/a:http" -j DNAT --to-destination 10.0.0.1:80`, "  -j RETURN  "}},
			{Table: TableNAT, Name: "NODENET-EMPTY"},
		},
		remove: []string{"NODENET-SVC-OLD"},
		unhook: []string{`PREROUTING -m comment --comment "nodenet hook" -j NODENET-SVC-OLD`},
		hook:   []hookInsert{{hook: hooks[0], pos: 12}},
	}
	for _, plan := range []*tablePlan{p, {}} {
		got := plan.render(TableNAT)
		if n := plan.size(TableNAT); n != len(got) {
			t.Errorf("size %d, rendered %d bytes:\n%s", n, len(got), got)
		}
		var w strings.Builder // neither a ByteWriter nor buffered: wrapped
		if err := plan.writeTo(struct{ *strings.Builder }{&w}, TableNAT); err != nil || !bytes.Equal([]byte(w.String()), got) {
			t.Errorf("writeTo = %q, %v; render = %q", w.String(), err, got)
		}
	}
}
