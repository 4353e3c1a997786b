package harness

import (
	"bufio"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Just enough of the WebSocket (RFC 6455) and gRPC wire formats for tests
// to talk through a proxy with no client library.

// WebSocket opcodes.
const (
	WSText   = 0x1
	WSBinary = 0x2
	WSClose  = 0x8
	WSPing   = 0x9
	WSPong   = 0xA
)

// WSFrame is one unfragmented WebSocket frame.
type WSFrame struct {
	Opcode  byte
	Payload []byte
}

// maxTestMessage bounds a frame or message read: tests send small ones.
const maxTestMessage = 1 << 20

// WSAccept is the Sec-WebSocket-Accept value for a Sec-WebSocket-Key.
func WSAccept(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// WriteWSFrame writes f with FIN set; a client masks its frames.
func WriteWSFrame(w io.Writer, f WSFrame, mask bool) error {
	hdr := []byte{0x80 | f.Opcode&0x0F, 0}
	n := len(f.Payload)
	switch {
	case n < 126:
		hdr[1] = byte(n)
	case n <= 0xFFFF:
		hdr[1] = 126
		hdr = binary.BigEndian.AppendUint16(hdr, uint16(n))
	default:
		hdr[1] = 127
		hdr = binary.BigEndian.AppendUint64(hdr, uint64(n))
	}
	payload := f.Payload
	if mask {
		hdr[1] |= 0x80
		var key [4]byte
		_, _ = rand.Read(key[:])
		hdr = append(hdr, key[:]...)
		payload = make([]byte, n)
		for i, b := range f.Payload {
			payload[i] = b ^ key[i%4]
		}
	}
	if _, err := w.Write(hdr); err != nil {
		return err
	}
	_, err := w.Write(payload)
	return err
}

// ReadWSFrame reads one frame and unmasks it. Fragmented messages are not
// supported: tests never send them.
func ReadWSFrame(r io.Reader) (WSFrame, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return WSFrame{}, err
	}
	if h[0]&0x80 == 0 {
		return WSFrame{}, errors.New("websocket: fragmented frame")
	}
	f := WSFrame{Opcode: h[0] & 0x0F}
	n := uint64(h[1] & 0x7F)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return WSFrame{}, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return WSFrame{}, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	if n > maxTestMessage {
		return WSFrame{}, fmt.Errorf("websocket: frame of %d bytes", n)
	}
	var key [4]byte
	masked := h[1]&0x80 != 0
	if masked {
		if _, err := io.ReadFull(r, key[:]); err != nil {
			return WSFrame{}, err
		}
	}
	f.Payload = make([]byte, n)
	if _, err := io.ReadFull(r, f.Payload); err != nil {
		return WSFrame{}, err
	}
	if masked {
		for i := range f.Payload {
			f.Payload[i] ^= key[i%4]
		}
	}
	return f, nil
}

// WSHandshake sends a client's opening handshake for host and path on rw
// and reads the answer; it returns the server's response on success.
func WSHandshake(rw *bufio.ReadWriter, host, path string) (*http.Response, error) {
	var k [16]byte
	_, _ = rand.Read(k[:])
	key := base64.StdEncoding.EncodeToString(k[:])
	fmt.Fprintf(rw, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", path, host, key)
	if err := rw.Flush(); err != nil {
		return nil, fmt.Errorf("websocket handshake: %w", err)
	}
	resp, err := http.ReadResponse(rw.Reader, nil)
	if err != nil {
		return nil, fmt.Errorf("websocket handshake: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		return resp, fmt.Errorf("websocket handshake: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	if got := resp.Header.Get("Sec-WebSocket-Accept"); got != WSAccept(key) {
		return resp, fmt.Errorf("websocket handshake: accept %q, want %q", got, WSAccept(key))
	}
	return resp, nil
}

// GRPCFrame is msg as a gRPC length-prefixed message (not compressed).
func GRPCFrame(msg []byte) []byte {
	b := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(b[1:], uint32(len(msg)))
	return append(b, msg...)
}

// ReadGRPCMessages reads length-prefixed messages until EOF.
func ReadGRPCMessages(r io.Reader) ([][]byte, error) {
	var msgs [][]byte
	for {
		var h [5]byte
		_, err := io.ReadFull(r, h[:])
		if err == io.EOF {
			return msgs, nil
		}
		if err != nil {
			return msgs, fmt.Errorf("grpc message header: %w", err)
		}
		if h[0] != 0 {
			return msgs, errors.New("grpc: compressed message")
		}
		n := binary.BigEndian.Uint32(h[1:])
		if n > maxTestMessage {
			return msgs, fmt.Errorf("grpc: message of %d bytes", n)
		}
		m := make([]byte, n)
		if _, err := io.ReadFull(r, m); err != nil {
			return msgs, fmt.Errorf("grpc message body: %w", err)
		}
		msgs = append(msgs, m)
	}
}
