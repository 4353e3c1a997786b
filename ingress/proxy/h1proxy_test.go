package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
)

// recordingBackend records the head of each request it gets and answers
// with the raw response named by the path's last segment.
func recordingBackend(t *testing.T, responses map[string]string) (string, chan string) {
	t.Helper()
	heads := make(chan string, 100)
	addr := rawServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			var head bytes.Buffer
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				head.WriteString(line)
				if line == "\r\n" {
					break
				}
			}
			// A body is recorded with the head.
			if m := contentLength.FindStringSubmatch(head.String()); m != nil {
				n, _ := strconv.Atoi(m[1])
				if _, err := io.CopyN(&head, br, int64(n)); err != nil {
					return
				}
			}
			if strings.Contains(head.String(), "Transfer-Encoding: chunked") {
				// The tests' chunked bodies: no line is "0" but the last chunk's.
				for last := ""; last != "0\r\n"; {
					var err error
					if last, err = br.ReadString('\n'); err != nil {
						return
					}
					head.WriteString(last)
				}
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				head.WriteString(line)
			}
			heads <- head.String()
			target := strings.Fields(head.String())[1]
			target, _, _ = strings.Cut(target, "?")
			resp := responses[target[strings.LastIndexByte(target, '/')+1:]]
			isHead := strings.HasPrefix(head.String(), "HEAD ")
			if isHead {
				// No body: the head of the last (final) response.
				last := max(strings.LastIndex(resp, "HTTP/1.1 "), 0)
				if end := strings.Index(resp[last:], "\r\n\r\n"); end >= 0 {
					resp = resp[:last+end+4]
				}
			}
			if _, err := io.WriteString(c, resp); err != nil {
				return
			}
			if strings.HasPrefix(resp, "HTTP/1.1 101") || !isHead && !strings.Contains(resp, "Content-Length") && !strings.Contains(resp, "chunked") &&
				!strings.Contains(resp, " 204 ") && !strings.Contains(resp, " 304 ") {
				return // close-delimited, or not HTTP any more
			}
		}
	})
	return addr, heads
}

// varies is what may differ between two runs of the same exchange: the
// date, and the content type net/http sniffs when a streamed body's
// first write beats the flush of the headers (ReverseProxy's timer).
var contentLength = regexp.MustCompile(`(?mi)^Content-Length: *([0-9]+)\r$`)

var varies = regexp.MustCompile(`(?m)^(Date: .*|Content-Type: text/plain; charset=utf-8)\r\n`)

// rawExchange sends a raw request and returns all the connection gives
// back until it closes, without what varies.
func rawExchange(t *testing.T, addr, req string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("%q: %v", req, err)
	}
	return varies.ReplaceAllString(string(b), "")
}

// TestH1FastPathSameAsReverseProxy: serveH1 must send the upstream the
// same request and the client the same response as ReverseProxy, byte for
// byte, for the requests it takes and for odd upstream answers.
func TestH1FastPathSameAsReverseProxy(t *testing.T) {
	sse := "data: x\n\n"
	responses := map[string]string{
		"cl": "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nConnection: X-Hop\r\nX-Hop: 1\r\n" +
			"Keep-Alive: timeout=5\r\nX-Multi: a\r\nX-Multi: b\r\nUpgrade: nope\r\n\r\nhello",
		"trailer":  "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n5\r\nhello\r\n0\r\nX-T: v\r\n\r\n",
		"trailer2": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n5\r\nhello\r\n0\r\nX-T: v\r\nX-U: w\r\n\r\n",
		"chunked":  "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
		"sse":      fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: Text/Event-Stream; charset=utf-8\r\nContent-Length: %d\r\n\r\n%s", len(sse), sse),
		"204":      "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n",
		"304":      "HTTP/1.1 304 Not Modified\r\nEtag: \"x\"\r\n\r\n",
		"101":      "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
		"101bare":  "HTTP/1.1 101 Switching Protocols\r\n\r\n",
		"103":      "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"eof":      "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close",
		"bad":      "garbage\r\n\r\n",
		"404":      "HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\nno\n",
	}
	be, heads := recordingBackend(t, responses)
	tb := build(t, []*networkingv1.Ingress{ingress("web", 0, "a.test", "/", "web")}, svc{"web", []string{be}})
	fast := newHandler(t, testOptions(), tb)
	slow := newHandler(t, testOptions(), tb)
	slow.reverseProxyOnly = true
	fastAddr, slowAddr := addrOf(front(t, fast)), addrOf(front(t, slow))

	requests := []string{
		"GET /r/%s HTTP/1.1\r\nHost: a.test\r\nUser-Agent: t\r\nConnection: close\r\n\r\n",
		"GET /r/%s?b=2&a=1&c=%%41 HTTP/1.1\r\nHost: a.test\r\nConnection: close, x-custom\r\nX-Custom: 1\r\nKeep-Alive: 300\r\n" +
			"Proxy-Connection: keep-alive\r\nX-Forwarded-For: 9.9.9.9\r\nForwarded: for=9.9.9.9\r\nX-Forwarded-Host: evil\r\n" +
			"X-Forwarded-Proto: https\r\nTe: deflate, Trailers\r\nProxy-Authorization: x\r\nAccept: a\r\nAccept: b\r\nTrailer: X-Q\r\n\r\n",
		"GET /r/%s HTTP/1.1\r\nHost: a.test:8080\r\nConnection: close, User-Agent\r\nUser-Agent: t\r\nTe: gzip\r\n\r\n",
		"HEAD /r/%s HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
		"GET /r/%s HTTP/1.0\r\nHost: a.test\r\n\r\n",
		"GET /r/%s HTTP/1.0\r\nHost: a.test\r\nConnection: X-Custom\r\nX-Custom: 1\r\nKeep-Alive: 1\r\n\r\n",
		"GET /r/%s?a;b HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
		"GET /r/%s?a=%%zz HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
		"GET /r/%s HTTP/1.1\r\nHost: a.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
		"OPTIONS /r/%s HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\nUpgrade: foo\r\n\r\n",
		"POST /r/%s HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
		"PUT /r/%s HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\nExpect: 100-continue\r\nConnection: close\r\n\r\nabc",
		"POST /r/%s HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
	}
	for _, tmpl := range requests {
		for name := range responses {
			req := fmt.Sprintf(tmpl, name)
			slowResp := rawExchange(t, slowAddr, req)
			slowHead := next(t, heads)
			fastResp := rawExchange(t, fastAddr, req)
			fastHead := next(t, heads)
			if fastHead != slowHead {
				t.Errorf("%q: upstream got\n%q\nfrom serveH1, from ReverseProxy\n%q", req, fastHead, slowHead)
			}
			if fastResp != slowResp {
				t.Errorf("%q: client got\n%q\nfrom serveH1, from ReverseProxy\n%q", req, fastResp, slowResp)
			}
		}
	}
	for _, q := range []string{"", "a=1&b=%41", "a=%4"} {
		if got, want := queryAsIs(q), cleanQuery(q) == q; got != want {
			t.Errorf("queryAsIs(%q) = %v", q, got)
		}
	}
}

func next(t *testing.T, heads chan string) string {
	t.Helper()
	select {
	case h := <-heads:
		return h
	case <-time.After(5 * time.Second):
		t.Fatalf("the upstream got no request (%d heads pending)", len(heads))
		return ""
	}
}

func cleanQuery(q string) string {
	if strings.Contains(q, ";") || regexp.MustCompile(`%($|.$|[^0-9a-fA-F]|.[^0-9a-fA-F])`).MatchString(q) {
		return "re-encoded"
	}
	return q
}
