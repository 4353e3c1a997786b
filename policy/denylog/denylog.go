// Package denylog reads the packets NetworkPolicy rules drop and log
// (policy.RuleOptions.LogDenied: an NFLOG rule before each pod chain's
// DROP) from an NFLOG group of the current network namespace, logs each as
// one "policy denied packet" line and counts it in
// nodenet_policy_denied_packets_logged_total{namespace,direction}.
//
// The rules rate-limit logging per pod and direction, so the counter
// counts logged packets, not every dropped one; the exact count is the
// enforcer's nodenet_policy_denied_packets_total.
package denylog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/nodenet/nodenet/policy"
)

// copyRange is how much of each packet the kernel copies to us: enough
// for an IPv6 header, a few extension headers and the ports.
const copyRange = 128

// rcvBuf is the socket's receive buffer: room for bursts of logged packets
// (each message is about 250 bytes) while a log line is written.
const rcvBuf = 1 << 20

// Error reasons of nodenet_policy_denylog_errors_total.
const (
	reasonMalformed = "malformed" // a message that does not decode
	reasonPrefix    = "prefix"    // a prefix that is not ours
	reasonOverrun   = "overrun"   // the socket buffer overflowed; messages were lost
)

// Options configure a Reader.
type Options struct {
	Group    uint16                // NFLOG group the rules log to
	Registry prometheus.Registerer // nil: metrics are not registered
	Log      *slog.Logger
	// Resolve maps policy.PodHash of a pod key to the key, for prefixes
	// too long to hold it whole; nil or not found: the key's start is
	// logged.
	Resolve func(hash string) (key string, ok bool)
}

// Reader is a bound NFLOG group.
type Reader struct {
	o      Options
	log    *slog.Logger
	f      *os.File // the netlink socket, non-blocking: Close wakes a Read
	denied *prometheus.CounterVec
	errs   *prometheus.CounterVec

	closeOnce sync.Once
}

// newReader makes a Reader without its socket.
func newReader(o Options) *Reader {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	r := &Reader{
		o:   o,
		log: o.Log.With("component", "denylog"),
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nodenet_policy_denied_packets_logged_total",
			Help: "Packets dropped by NetworkPolicy and logged, by the isolated pod's namespace and direction. " +
				"Logging is rate-limited per pod and direction (policy.log_rate, policy.log_burst), so this undercounts drops beyond the limit."},
			[]string{"namespace", "direction"}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nodenet_policy_denylog_errors_total",
			Help: "Denied-packet log messages skipped: malformed, prefix (not nodenet's), overrun (lost when the socket buffer was full)."},
			[]string{"reason"}),
	}
	for _, reason := range []string{reasonMalformed, reasonPrefix, reasonOverrun} {
		r.errs.WithLabelValues(reason)
	}
	return r
}

// New binds o.Group in the current network namespace and registers the
// metrics. Binding fails (EPERM) when another socket holds the group.
func New(o Options) (*Reader, error) {
	r := newReader(o)
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("denylog: netlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, errors.Join(fmt.Errorf("denylog: bind netlink socket: %w", err), unix.Close(fd))
	}
	// FORCE goes past net.core.rmem_max (we are root); fall back quietly.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvBuf); err != nil {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvBuf); err != nil {
			return nil, errors.Join(fmt.Errorf("denylog: receive buffer: %w", err), unix.Close(fd))
		}
	}
	r.f = os.NewFile(uintptr(fd), "nflog")
	if err := r.configure(); err != nil {
		r.close()
		return nil, fmt.Errorf("denylog: nflog group %d: %w", o.Group, err)
	}
	if o.Registry != nil {
		for _, c := range []prometheus.Collector{r.denied, r.errs} {
			if err := o.Registry.Register(c); err != nil {
				r.close()
				return nil, fmt.Errorf("denylog: register metrics: %w", err)
			}
		}
	}
	return r, nil
}

// configure binds the group and asks for packet copies, each request
// acknowledged before the next.
func (r *Reader) configure() error {
	bind := nlattr(nfulaCfgCmd, []byte{nfulnlCfgCmdBind})
	if err := r.request(1, bind); err != nil {
		if errors.Is(err, unix.EPERM) {
			// The kernel's answer when another socket has the group.
			return fmt.Errorf("bind: another program (ulogd, an earlier nodenet) holds the group, or no CAP_NET_ADMIN: %w", err)
		}
		return fmt.Errorf("bind: %w", err)
	}
	mode := make([]byte, 6) // struct nfulnl_msg_config_mode: be32 copy_range, u8 mode, u8 pad
	binary.BigEndian.PutUint32(mode, copyRange)
	mode[4] = nfulnlCopyPacket
	if err := r.request(2, nlattr(nfulaCfgMode, mode)); err != nil {
		return fmt.Errorf("copy mode: %w", err)
	}
	// The kernel batches up to 100 packets or 1s by default; the rules
	// already limit the rate, so deliver each at once.
	if err := r.request(3, nlattr(nfulaCfgQThresh, binary.BigEndian.AppendUint32(nil, 1))); err != nil {
		return fmt.Errorf("queue threshold: %w", err)
	}
	return nil
}

// request sends one NFULNL_MSG_CONFIG for the group with attrs and waits
// for its acknowledgement.
func (r *Reader) request(seq uint32, attrs []byte) error {
	msg := make([]byte, unix.SizeofNlMsghdr+nfgenmsgLen, unix.SizeofNlMsghdr+nfgenmsgLen+len(attrs))
	msg = append(msg, attrs...)
	binary.NativeEndian.PutUint32(msg[0:4], uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:6], nfnlSubsysULOG<<8|nfulnlMsgConfig)
	binary.NativeEndian.PutUint16(msg[6:8], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	binary.NativeEndian.PutUint32(msg[8:12], seq)
	// nfgenmsg: AF_UNSPEC, NFNETLINK_V0, group in network byte order.
	binary.BigEndian.PutUint16(msg[unix.SizeofNlMsghdr+2:], r.o.Group)
	rc, err := r.f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Write(func(fd uintptr) bool {
		serr = unix.Sendto(int(fd), msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		return serr != unix.EAGAIN
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("send: %w", serr)
	}
	if err := r.f.SetReadDeadline(time.Now().Add(ackTimeout)); err != nil {
		return err
	}
	errno, err := r.waitAck(seq)
	if err := errors.Join(err, r.f.SetReadDeadline(time.Time{})); err != nil {
		return err
	}
	if errno != 0 {
		return errno
	}
	return nil
}

// ackTimeout bounds the wait for the kernel's answer to a config request.
const ackTimeout = 5 * time.Second

func (r *Reader) waitAck(seq uint32) (unix.Errno, error) {
	buf := make([]byte, 8192)
	for {
		n, err := r.recv(buf)
		if err != nil {
			return 0, fmt.Errorf("wait for ack: %w", err)
		}
		if errno, ok := ackFor(buf[:n], seq); ok {
			return errno, nil
		}
	}
}

// ackFor finds the NLMSG_ERROR answering seq in a datagram.
func ackFor(b []byte, seq uint32) (unix.Errno, bool) {
	for len(b) >= unix.SizeofNlMsghdr {
		n := int(binary.NativeEndian.Uint32(b[0:4]))
		if n < unix.SizeofNlMsghdr || n > len(b) {
			return 0, false
		}
		if binary.NativeEndian.Uint16(b[4:6]) == unix.NLMSG_ERROR && binary.NativeEndian.Uint32(b[8:12]) == seq && n >= unix.SizeofNlMsghdr+4 {
			return unix.Errno(-int32(binary.NativeEndian.Uint32(b[unix.SizeofNlMsghdr:]))), true
		}
		b = b[min(nlAlign(n), len(b)):]
	}
	return 0, false
}

// recv reads one datagram from the kernel; datagrams from other sockets
// are dropped (n = 0).
func (r *Reader) recv(buf []byte) (int, error) {
	rc, err := r.f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var from unix.Sockaddr
	var rerr error
	if err := rc.Read(func(fd uintptr) bool {
		n, from, rerr = unix.Recvfrom(int(fd), buf, 0)
		return rerr != unix.EAGAIN
	}); err != nil {
		return 0, err
	}
	if rerr != nil {
		return 0, rerr
	}
	if sa, ok := from.(*unix.SockaddrNetlink); !ok || sa.Pid != 0 {
		return 0, nil
	}
	return n, nil
}

// Run logs and counts denied packets until ctx is done, then closes the
// socket (which unbinds the group). Bad messages are counted and skipped;
// only a failing socket ends it early, with an error.
func (r *Reader) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, r.close)
	defer func() {
		if stop() {
			r.close()
		}
	}()
	r.log.Info("logging denied packets", "nflog_group", r.o.Group)
	buf := make([]byte, 1<<16)
	for {
		n, err := r.recv(buf)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, unix.ENOBUFS):
			r.errs.WithLabelValues(reasonOverrun).Inc()
			r.log.Debug("denied-packet log messages lost: socket buffer full")
			continue
		case err != nil:
			return fmt.Errorf("denylog: receive: %w", err)
		}
		pkts, errs := Parse(buf[:n])
		for _, err := range errs {
			r.errs.WithLabelValues(reasonMalformed).Inc()
			r.log.Debug("skipping malformed NFLOG message", "err", err)
		}
		for _, p := range pkts {
			r.handle(p)
		}
	}
}

// handle logs and counts one packet.
func (r *Reader) handle(p Packet) {
	lp, ok := policy.ParseLogPrefix(p.Prefix)
	if !ok {
		r.errs.WithLabelValues(reasonPrefix).Inc()
		r.log.Debug("skipping NFLOG message with a foreign prefix", "prefix", p.Prefix)
		return
	}
	key, hash := lp.Pod, lp.Hash
	if hash != "" && r.o.Resolve != nil {
		if k, ok := r.o.Resolve(hash); ok {
			key, hash = k, ""
		}
	}
	ns, name, found := strings.Cut(key, "/")
	if !found {
		// A truncated key that ends inside the namespace: unknown.
		ns, name = "", key
	}
	r.denied.WithLabelValues(ns, lp.Direction).Inc()
	attrs := []any{"direction", lp.Direction, "namespace", ns, "pod", name,
		"src", p.Src, "dst", p.Dst, "proto", p.ProtoName(), "sport", p.SrcPort, "dport", p.DstPort}
	if hash != "" {
		attrs = append(attrs, "pod_truncated", true, "pod_hash", hash)
	}
	r.log.Info("policy denied packet", attrs...)
}

func (r *Reader) close() {
	r.closeOnce.Do(func() {
		if err := r.f.Close(); err != nil {
			r.log.Debug("close nflog socket", "err", err)
		}
	})
}

// nlattr encodes one netlink attribute, padded to 4 bytes.
func nlattr(typ uint16, v []byte) []byte {
	b := make([]byte, nlAlign(unix.SizeofNlAttr+len(v)))
	binary.NativeEndian.PutUint16(b[0:2], uint16(unix.SizeofNlAttr+len(v)))
	binary.NativeEndian.PutUint16(b[2:4], typ)
	copy(b[unix.SizeofNlAttr:], v)
	return b
}

// ModelResolver resolves truncated prefixes against the pods of the last
// applied policy model (model may return nil before the first sync).
func ModelResolver(model func() *policy.Model) func(string) (string, bool) {
	return func(hash string) (string, bool) {
		m := model()
		if m == nil {
			return "", false
		}
		for _, iso := range m.Isolated() {
			if policy.PodHash(iso.Pod) == hash {
				return iso.Pod, true
			}
		}
		return "", false
	}
}
