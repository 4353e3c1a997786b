package enforcer

import (
	"encoding/json"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/nodenet/nodenet/daemon/control"
)

// ServeExplain answers control.ExplainPath from the last applied model.
func (c *Component) ServeExplain(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	src, err1 := netip.ParseAddr(q.Get("src"))
	dst, err2 := netip.ParseAddr(q.Get("dst"))
	port, err3 := strconv.Atoi(q.Get("port"))
	proto := corev1.Protocol(strings.ToUpper(q.Get("proto")))
	if err1 != nil || err2 != nil || err3 != nil || port < 1 || port > 65535 ||
		(proto != corev1.ProtocolTCP && proto != corev1.ProtocolUDP && proto != corev1.ProtocolSCTP) {
		http.Error(w, "want src and dst IP addresses, port 1-65535 and proto tcp, udp or sctp", http.StatusBadRequest)
		return
	}
	m := c.Model()
	if m == nil {
		http.Error(w, "policies not synced yet", http.StatusServiceUnavailable)
		return
	}
	v := m.Allowed(src, dst, proto, port)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(control.Explanation{
		Src: src.String(), Dst: dst.String(), Proto: string(proto), Port: port,
		Allowed: v.Allowed, IngressIsolated: v.IngressIsolated, EgressIsolated: v.EgressIsolated,
		IngressBy: v.IngressBy, EgressBy: v.EgressBy, Reason: v.Reason,
	})
}
