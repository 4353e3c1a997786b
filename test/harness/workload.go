package harness

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// workload is what a pod's containers serve, run as goroutines of the test
// process on sockets opened inside the pod namespace: per declared TCP port
// an HTTP server, per UDP port an echo of who asked. Every answer is
// "<pod name> <client ip:port as the pod saw it>\n", so a test can tell which
// backend answered and whether the client address was rewritten.
type workload struct {
	closers []io.Closer
	wg      sync.WaitGroup // serving goroutines
}

// Reply is what a workload answers to a client seen as from.
func Reply(podName, from string) string { return podName + " " + from + "\n" }

func startWorkload(ns *NS, pod *corev1.Pod) (*workload, error) {
	w := &workload{}
	seen := map[string]bool{}
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			proto := p.Protocol
			if proto == "" {
				proto = corev1.ProtocolTCP
			}
			addr := ":" + strconv.Itoa(int(p.ContainerPort))
			if proto == corev1.ProtocolSCTP || seen[string(proto)+addr] {
				continue
			}
			seen[string(proto)+addr] = true
			var err error
			switch proto {
			case corev1.ProtocolTCP:
				err = w.serveHTTP(ns, addr, pod.Name)
			case corev1.ProtocolUDP:
				err = w.serveUDP(ns, addr, pod.Name)
			}
			if err != nil {
				w.stop()
				return nil, fmt.Errorf("%s %s in %s: %w", proto, addr, ns.Name, err)
			}
		}
	}
	return w, nil
}

func (w *workload) serveHTTP(ns *NS, addr, podName string) error {
	l, err := ns.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			rw.Header().Set("X-Pod-Name", podName)
			rw.Header().Set("Content-Type", "text/plain")
			_, _ = io.WriteString(rw, Reply(podName, r.RemoteAddr))
		}),
	}
	w.closers = append(w.closers, srv)
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		_ = srv.Serve(l) // returns ErrServerClosed on stop
	}()
	return nil
}

func (w *workload) serveUDP(ns *NS, addr, podName string) error {
	pc, err := ns.ListenPacket("udp", addr)
	if err != nil {
		return err
	}
	w.closers = append(w.closers, pc)
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		buf := make([]byte, 64<<10)
		for {
			_, from, err := pc.ReadFrom(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				continue // e.g. an ICMP error from an earlier reply
			}
			_, _ = pc.WriteTo([]byte(Reply(podName, from.String())), from)
		}
	}()
	return nil
}

// stop closes every socket and waits for the serving goroutines. The pod
// namespace can then go: open sockets would keep it alive unnamed.
func (w *workload) stop() {
	for _, c := range w.closers {
		_ = c.Close()
	}
	w.wg.Wait()
}

// EchoPod is a pod bound to node whose workload serves HTTP on tcpPort
// (port name "http") and echoes on UDP udpPort (port name "udp").
func EchoPod(namespace, name, node string, labels map[string]string, tcpPort, udpPort int32) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: labels},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			TerminationGracePeriodSeconds: new(int64),
			Containers: []corev1.Container{{Name: "echo", Image: "none", Ports: []corev1.ContainerPort{
				{Name: "http", ContainerPort: tcpPort, Protocol: corev1.ProtocolTCP},
				{Name: "udp", ContainerPort: udpPort, Protocol: corev1.ProtocolUDP},
			}}},
		},
	}
}
