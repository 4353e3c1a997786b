package policy

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// The upstream e2e setup: namespaces x, y, z labelled ns=<name>, pods a,
// b, c in each labelled pod=<name>, serving TCP, UDP and SCTP on 80 and
// 81 (container ports named serve-<port>-<proto>). Pods a and c run on
// node-1, b on node-2. Pod <ns><pod> has 10.244.<node>.<10*ns+pod> and
// fd00:244:<node>::<10*ns+pod> (ns x=1.., pod a=0..).
var (
	nsNames  = []string{"x", "y", "z"}
	podNames = []string{"a", "b", "c"}
	// allPods is the matrix order: x/a x/b x/c y/a ... z/c.
	allPods []string
)

func init() {
	for _, ns := range nsNames {
		for _, p := range podNames {
			allPods = append(allPods, ns+"/"+p)
		}
	}
}

func nodeOf(pod string) int {
	if strings.HasSuffix(pod, "/b") {
		return 2
	}
	return 1
}

// podIP is the address of "ns/pod" in the fixture.
func podIP(pod string, v6 bool) netip.Addr {
	ns, name, _ := strings.Cut(pod, "/")
	host := 10*(strings.Index("xyz", ns)+1) + strings.Index("abc", name)
	if v6 {
		return netip.MustParseAddr(fmt.Sprintf("fd00:244:%d::%d", nodeOf(pod), host))
	}
	return netip.MustParseAddr(fmt.Sprintf("10.244.%d.%d", nodeOf(pod), host))
}

// nodeIP is node-n's InternalIP.
func nodeIP(n int, v6 bool) netip.Addr {
	if v6 {
		return netip.MustParseAddr(fmt.Sprintf("fd00:10::%d", n))
	}
	return netip.MustParseAddr(fmt.Sprintf("192.168.0.%d", n))
}

func fixture() ([]Pod, []Namespace) {
	var pods []Pod
	var nss []Namespace
	for _, ns := range nsNames {
		nss = append(nss, Namespace{Name: ns, Labels: map[string]string{"ns": ns}})
	}
	for _, key := range allPods {
		ns, name, _ := strings.Cut(key, "/")
		p := Pod{Namespace: ns, Name: name, Labels: map[string]string{"pod": name},
			IPs: []netip.Addr{podIP(key, false), podIP(key, true)}, Node: fmt.Sprintf("node-%d", nodeOf(key))}
		for _, port := range []int32{80, 81} {
			for _, proto := range []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP} {
				p.Ports = append(p.Ports, corev1.ContainerPort{
					Name: fmt.Sprintf("serve-%d-%s", port, strings.ToLower(string(proto))), ContainerPort: port, Protocol: proto})
			}
		}
		pods = append(pods, p)
	}
	return pods, nss
}

// Short builders for policies.
type (
	spec             = networkingv1.NetworkPolicySpec
	in               = networkingv1.NetworkPolicyIngressRule
	out              = networkingv1.NetworkPolicyEgressRule
	peerT            = networkingv1.NetworkPolicyPeer
	portT            = networkingv1.NetworkPolicyPort
	ptypes           = []networkingv1.PolicyType
	sel              = *metav1.LabelSelector
	networkingPolicy = networkingv1.NetworkPolicy
)

var (
	tcpP  = corev1.ProtocolTCP
	udpP  = corev1.ProtocolUDP
	sctpP = corev1.ProtocolSCTP
	ingT  = networkingv1.PolicyTypeIngress
	egrT  = networkingv1.PolicyTypeEgress
)

func pol(ns, name string, s spec) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: s}
}

func all() sel { return &metav1.LabelSelector{} }

// lbl is a matchLabels selector from key, value pairs.
func lbl(kv ...string) sel {
	s := &metav1.LabelSelector{MatchLabels: map[string]string{}}
	for i := 0; i+1 < len(kv); i += 2 {
		s.MatchLabels[kv[i]] = kv[i+1]
	}
	return s
}

func expr(key string, op metav1.LabelSelectorOperator, vals ...string) sel {
	return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: key, Operator: op, Values: vals}}}
}

func podsP(s sel) peerT      { return peerT{PodSelector: s} }
func nss(s sel) peerT        { return peerT{NamespaceSelector: s} }
func podsIn(ns, p sel) peerT { return peerT{NamespaceSelector: ns, PodSelector: p} }
func ipb(cidr string, except ...string) peerT {
	return peerT{IPBlock: &networkingv1.IPBlock{CIDR: cidr, Except: except}}
}

func tport(proto corev1.Protocol, n int) portT {
	p := intstr.FromInt32(int32(n))
	return portT{Protocol: &proto, Port: &p}
}

func portRng(proto corev1.Protocol, lo, hi int) portT {
	p := tport(proto, lo)
	end := int32(hi)
	p.EndPort = &end
	return p
}

func named(name string) portT {
	p := intstr.FromString(name)
	return portT{Port: &p}
}

func namedProto(proto corev1.Protocol, name string) portT {
	p := named(name)
	p.Protocol = &proto
	return p
}

func protoOnly(proto corev1.Protocol) portT { return portT{Protocol: &proto} }

// golden compares got with testdata/name.golden, rewriting it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", path, diff)
	}
}
