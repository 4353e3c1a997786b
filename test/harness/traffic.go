package harness

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// Answer is what a test workload replies: its pod name and the client
// address it saw (IP only).
type Answer struct {
	Pod    string
	Client string
}

// ParseAnswer parses a workload reply (see Reply).
func ParseAnswer(s string) (Answer, error) {
	f := strings.Fields(s)
	if len(f) != 2 {
		return Answer{}, fmt.Errorf("unexpected reply %q", s)
	}
	host, _, err := net.SplitHostPort(f[1])
	if err != nil {
		return Answer{}, fmt.Errorf("reply %q: %w", s, err)
	}
	return Answer{Pod: f[0], Client: host}, nil
}

// HTTPFrom GETs http://addr/ from inside ns, one connection per request.
func HTTPFrom(ns *NS, addr string) (Answer, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: ns.DialContext, DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		return Answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return Answer{}, err
	}
	return ParseAnswer(string(b))
}

// UDPFrom sends one datagram to addr from inside ns and reads the answer.
func UDPFrom(ns *NS, addr string) (Answer, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := ns.DialContext(ctx, "udp", addr)
	if err != nil {
		return Answer{}, err
	}
	defer conn.Close()
	return AskUDP(conn, 3*time.Second)
}

// AskUDP sends one datagram on conn and reads the answer; keeping conn
// keeps the source port, and so the conntrack entry.
func AskUDP(conn net.Conn, timeout time.Duration) (Answer, error) {
	_ = conn.SetDeadline(time.Now().Add(timeout))
	if _, err := conn.Write([]byte("hello\n")); err != nil {
		return Answer{}, err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return Answer{}, fmt.Errorf("udp %s: %w", conn.RemoteAddr(), err)
	}
	return ParseAnswer(line)
}
