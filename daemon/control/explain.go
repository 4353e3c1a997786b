package control

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// ExplainPath answers "may SRC reach DST on PROTO/PORT, and why?".
const ExplainPath = "/v1/explain"

// Explanation is the answer, from the same compiled policy model that
// programs the kernel.
type Explanation struct {
	Src, Dst        string
	Proto           string
	Port            int
	Allowed         bool
	IngressIsolated bool     `json:"ingress_isolated"`
	EgressIsolated  bool     `json:"egress_isolated"`
	IngressBy       []string `json:"ingress_by,omitempty"`
	EgressBy        []string `json:"egress_by,omitempty"`
	Reason          string
}

// Render writes the readable answer.
func (e *Explanation) Render(w io.Writer) {
	verdict := "ALLOWED"
	if !e.Allowed {
		verdict = "DENIED"
	}
	fmt.Fprintf(w, "%s -> %s %s/%d: %s\n", e.Src, e.Dst, e.Proto, e.Port, verdict)
	fmt.Fprintf(w, "  %s\n", e.Reason)
	side := func(name string, isolated bool, by []string) {
		switch {
		case !isolated:
			fmt.Fprintf(w, "  %s: not isolated (no policy of that type selects the pod)\n", name)
		case len(by) == 0:
			fmt.Fprintf(w, "  %s: isolated, no policy allows it\n", name)
		default:
			fmt.Fprintf(w, "  %s: isolated, allowed by %s\n", name, strings.Join(by, ", "))
		}
	}
	side("egress of the source", e.EgressIsolated, e.EgressBy)
	side("ingress of the destination", e.IngressIsolated, e.IngressBy)
}

// Explain asks the daemon.
func (c *Client) Explain(ctx context.Context, src, dst, proto string, port int) (*Explanation, error) {
	q := url.Values{"src": {src}, "dst": {dst}, "proto": {proto}, "port": {fmt.Sprint(port)}}
	var e Explanation
	if err := c.Do(ctx, http.MethodGet, ExplainPath+"?"+q.Encode(), nil, &e); err != nil {
		return nil, err
	}
	return &e, nil
}
