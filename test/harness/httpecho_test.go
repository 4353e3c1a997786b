package harness

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestWSFrameRoundTrip(t *testing.T) {
	for _, size := range []int{0, 1, 125, 126, 65535, 65536} {
		for _, mask := range []bool{false, true} {
			in := WSFrame{Opcode: WSBinary, Payload: bytes.Repeat([]byte{'x'}, size)}
			var buf bytes.Buffer
			if err := WriteWSFrame(&buf, in, mask); err != nil {
				t.Fatal(err)
			}
			if masked := buf.Bytes()[1]&0x80 != 0; masked != mask {
				t.Errorf("size %d: mask bit %v, want %v", size, masked, mask)
			}
			out, err := ReadWSFrame(&buf)
			if err != nil || out.Opcode != in.Opcode || !bytes.Equal(out.Payload, in.Payload) {
				t.Errorf("size %d mask %v: got opcode %x, %d bytes, err %v", size, mask, out.Opcode, len(out.Payload), err)
			}
		}
	}
}

func TestWSAcceptRFCExample(t *testing.T) {
	// RFC 6455 section 1.3.
	if got := WSAccept("dGhlIHNhbXBsZSBub25jZQ=="); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Errorf("WSAccept = %s", got)
	}
}

func TestGRPCMessages(t *testing.T) {
	var buf bytes.Buffer
	buf.Write(GRPCFrame([]byte("one")))
	buf.Write(GRPCFrame(nil))
	msgs, err := ReadGRPCMessages(&buf)
	if err != nil || len(msgs) != 2 || string(msgs[0]) != "one" || len(msgs[1]) != 0 {
		t.Fatalf("got %q, %v", msgs, err)
	}
	if _, err := ReadGRPCMessages(bytes.NewReader([]byte{0, 0, 0, 0, 9, 'x'})); err == nil {
		t.Error("a truncated message read without error")
	}
}

// echoServer serves e's handler the way StartHTTPEcho does, h2c included,
// but on a loopback listener of the test's own namespace.
func echoServer(t *testing.T, e *HTTPEcho) *httptest.Server {
	s := httptest.NewUnstartedServer(http.HandlerFunc(e.handle))
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	s.Config.Protocols = &p
	s.Start()
	t.Cleanup(s.Close)
	t.Cleanup(e.Close)
	return s
}

func TestHTTPEchoReply(t *testing.T) {
	e := &HTTPEcho{Name: "pod-1", hijacked: map[net.Conn]struct{}{}}
	s := echoServer(t, e)
	req, _ := http.NewRequest("POST", s.URL+"/a/b?c=d", strings.NewReader("12345"))
	req.Host = "example.test"
	req.Header.Set("X-Echo-Status", "201")
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r EchoReply
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 201 || r.Pod != "pod-1" || r.Host != "example.test" || r.URI != "/a/b?c=d" || r.BodyBytes != 5 || r.Method != "POST" {
		t.Errorf("status %d, reply %+v", resp.StatusCode, r)
	}
}

func TestHTTPEchoWebSocket(t *testing.T) {
	e := &HTTPEcho{Name: "pod-1", hijacked: map[net.Conn]struct{}{}}
	s := echoServer(t, e)
	conn, err := net.Dial("tcp", s.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rw := bufio.NewReadWriter(bufio.NewReader(conn), bufio.NewWriter(conn))
	resp, err := WSHandshake(rw, "ws.test", "/chat")
	if err != nil {
		t.Fatal(err)
	}
	if resp.Header.Get("X-Pod-Name") != "pod-1" {
		t.Errorf("handshake answered by %q", resp.Header.Get("X-Pod-Name"))
	}
	for _, msg := range []string{"hello", strings.Repeat("y", 70000)} {
		if err := WriteWSFrame(rw, WSFrame{Opcode: WSText, Payload: []byte(msg)}, true); err != nil {
			t.Fatal(err)
		}
		if err := rw.Flush(); err != nil {
			t.Fatal(err)
		}
		f, err := ReadWSFrame(rw)
		if err != nil || f.Opcode != WSText || string(f.Payload) != msg {
			t.Fatalf("echo of %d bytes: opcode %x, %d bytes, %v", len(msg), f.Opcode, len(f.Payload), err)
		}
	}
}

func TestHTTPEchoGRPCOverH2C(t *testing.T) {
	e := &HTTPEcho{Name: "pod-1", hijacked: map[net.Conn]struct{}{}}
	s := echoServer(t, e)
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	c := &http.Client{Transport: &http.Transport{Protocols: &p}}
	body := append(GRPCFrame([]byte("a")), GRPCFrame([]byte("b"))...)
	req, _ := http.NewRequestWithContext(context.Background(), "POST", s.URL+"/echo.Echo/Say", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("TE", "trailers")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	msgs, err := ReadGRPCMessages(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.ProtoMajor != 2 || len(msgs) != 2 || string(msgs[0]) != "pod-1:a" || resp.Trailer.Get("Grpc-Status") != "0" {
		t.Errorf("%s %d, messages %q, trailers %v", resp.Proto, resp.StatusCode, msgs, resp.Trailer)
	}
}
