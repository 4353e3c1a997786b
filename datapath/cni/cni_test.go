package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types040 "github.com/containernetworking/cni/pkg/types/040"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodenet/nodenet/daemon/control"
)

func conf(version string) []byte {
	return []byte(`{"cniVersion":"` + version + `","name":"nodenet","type":"nodenet","socket":"/x.sock"}`)
}

func TestParse(t *testing.T) {
	ok := Request{Command: "ADD", ContainerID: "c1", Netns: "/var/run/netns/p", IfName: "eth0",
		Args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web;K8S_POD_UID=u1", StdinData: conf("1.0.0")}
	tests := []struct {
		name     string
		change   func(r *Request)
		wantCode uint // 0: no error
		wantMsg  string
	}{
		{"valid add", func(*Request) {}, 0, ""},
		{"del without netns", func(r *Request) { r.Command = "DEL"; r.Netns = "" }, 0, ""},
		{"unknown command", func(r *Request) { r.Command = "FROB" }, types.ErrInvalidEnvironmentVariables, "unknown CNI_COMMAND"},
		{"bad json", func(r *Request) { r.StdinData = []byte("{") }, types.ErrDecodingFailure, "decode network config"},
		{"no version", func(r *Request) { r.StdinData = []byte(`{"name":"n","type":"nodenet"}`) }, types.ErrIncompatibleCNIVersion, "no cniVersion"},
		{"unsupported version", func(r *Request) { r.StdinData = conf("9.9.9") }, types.ErrIncompatibleCNIVersion, "not supported"},
		{"check needs 0.4.0", func(r *Request) { r.Command = "CHECK"; r.StdinData = conf("0.3.1") }, types.ErrIncompatibleCNIVersion, "CHECK needs cniVersion 0.4.0"},
		{"gc needs 1.1.0", func(r *Request) { r.Command = "GC"; r.StdinData = conf("1.0.0") }, types.ErrIncompatibleCNIVersion, "GC needs cniVersion 1.1.0"},
		{"wrong type", func(r *Request) {
			r.StdinData = []byte(`{"cniVersion":"1.0.0","name":"n","type":"bridge"}`)
		}, types.ErrInvalidNetworkConfig, `type is "bridge"`},
		{"no name", func(r *Request) { r.StdinData = []byte(`{"cniVersion":"1.0.0","type":"nodenet"}`) }, types.ErrInvalidNetworkConfig, "no name"},
		{"no container id", func(r *Request) { r.ContainerID = "" }, types.ErrInvalidEnvironmentVariables, "CNI_CONTAINERID"},
		{"no netns on add", func(r *Request) { r.Netns = "" }, types.ErrInvalidEnvironmentVariables, "CNI_NETNS"},
		{"ifname too long", func(r *Request) { r.IfName = "abcdefghijklmnop" }, types.ErrInvalidEnvironmentVariables, "not a valid interface name"},
		{"ifname slash", func(r *Request) { r.IfName = "a/b" }, types.ErrInvalidEnvironmentVariables, "not a valid interface name"},
		{"bad args", func(r *Request) { r.Args = "novalue" }, types.ErrInvalidEnvironmentVariables, "CNI_ARGS"},
		{"huge stdin", func(r *Request) { r.StdinData = make([]byte, maxStdin+1) }, types.ErrDecodingFailure, "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := ok
			tt.change(&r)
			p, err := Parse(&r)
			if tt.wantCode == 0 {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				return
			}
			var te *types.Error
			if !errors.As(err, &te) {
				t.Fatalf("Parse = %v, %v; want CNI error %d", p, err, tt.wantCode)
			}
			if te.Code != tt.wantCode || !strings.Contains(te.Msg, tt.wantMsg) {
				t.Errorf("error %d %q, want %d containing %q", te.Code, te.Msg, tt.wantCode, tt.wantMsg)
			}
		})
	}
	p, err := Parse(&ok)
	if err != nil {
		t.Fatal(err)
	}
	if p.PodNamespace != "ns" || p.PodName != "web" || p.PodUID != "u1" || p.Conf.Socket != "/x.sock" {
		t.Errorf("parsed identity: %+v", p)
	}
}

// fakeBackend records calls and returns canned answers.
type fakeBackend struct {
	calls  []string
	err    error
	result *types100.Result
	gc     []types.GCAttachment
}

func (f *fakeBackend) Add(_ context.Context, p *Parsed) (*types100.Result, error) {
	f.calls = append(f.calls, "ADD "+p.ContainerID)
	return f.result, f.err
}
func (f *fakeBackend) Del(_ context.Context, p *Parsed) error {
	f.calls = append(f.calls, "DEL "+p.ContainerID)
	return f.err
}
func (f *fakeBackend) Check(_ context.Context, p *Parsed) error {
	f.calls = append(f.calls, "CHECK "+p.ContainerID)
	return f.err
}
func (f *fakeBackend) GC(_ context.Context, _ *Parsed, valid []types.GCAttachment) error {
	f.calls = append(f.calls, "GC")
	f.gc = valid
	return f.err
}
func (f *fakeBackend) Status(context.Context) error {
	f.calls = append(f.calls, "STATUS")
	return f.err
}

func sampleResult() *types100.Result {
	idx := 1
	_, ipnet, _ := net.ParseCIDR("10.244.1.5/24")
	ipnet.IP = net.ParseIP("10.244.1.5").To4()
	return &types100.Result{
		Interfaces: []*types100.Interface{{Name: "nn0123"}, {Name: "eth0", Sandbox: "/var/run/netns/p"}},
		IPs:        []*types100.IPConfig{{Interface: &idx, Address: *ipnet, Gateway: net.ParseIP("10.244.1.1")}},
	}
}

func newHandler(b Backend) *Handler {
	return NewHandler(b, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
}

func TestHandlerConvertsResultVersion(t *testing.T) {
	for _, v := range SupportedVersions {
		t.Run(v, func(t *testing.T) {
			b := &fakeBackend{result: sampleResult()}
			resp := newHandler(b).Serve(context.Background(), &Request{Command: "ADD", ContainerID: "c1", Netns: "/ns", IfName: "eth0", StdinData: conf(v)})
			if resp.Error != nil {
				t.Fatalf("error: %+v", resp.Error)
			}
			var got struct {
				CNIVersion string `json:"cniVersion"`
				IPs        []struct {
					Address string `json:"address"`
					Version string `json:"version"`
				} `json:"ips"`
			}
			if err := json.Unmarshal(resp.Result, &got); err != nil {
				t.Fatal(err)
			}
			if got.CNIVersion != v || len(got.IPs) != 1 || got.IPs[0].Address != "10.244.1.5/24" {
				t.Errorf("result %s", resp.Result)
			}
			if strings.HasPrefix(v, "0.3") || v == "0.4.0" {
				if _, err := types040.NewResult(resp.Result); err != nil || got.IPs[0].Version != "4" {
					t.Errorf("0.x result lacks its version field: %s", resp.Result)
				}
			}
		})
	}
}

func TestHandlerPassesErrorsAndVerbs(t *testing.T) {
	b := &fakeBackend{err: types.NewError(types.ErrTryAgainLater, "not ready", "")}
	h := newHandler(b)
	resp := h.Serve(context.Background(), &Request{Command: "STATUS", StdinData: conf("1.1.0")})
	if resp.Error == nil || resp.Error.Code != types.ErrTryAgainLater {
		t.Errorf("STATUS error: %+v", resp.Error)
	}
	b.err = errors.New("boom")
	resp = h.Serve(context.Background(), &Request{Command: "DEL", ContainerID: "c9", IfName: "eth0", StdinData: conf("1.0.0")})
	if resp.Error == nil || resp.Error.Code != types.ErrInternal || !strings.Contains(resp.Error.Details, "boom") {
		t.Errorf("DEL plain error: %+v", resp.Error)
	}
	b.err = nil
	gcConf := `{"cniVersion":"1.1.0","name":"nodenet","type":"nodenet","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}`
	if resp := h.Serve(context.Background(), &Request{Command: "GC", StdinData: []byte(gcConf)}); resp.Error != nil {
		t.Fatalf("GC: %+v", resp.Error)
	}
	if len(b.gc) != 1 || b.gc[0].ContainerID != "a" {
		t.Errorf("GC attachments: %+v", b.gc)
	}
	want := []string{"STATUS", "DEL c9", "GC"}
	if strings.Join(b.calls, ",") != strings.Join(want, ",") {
		t.Errorf("calls %v, want %v", b.calls, want)
	}
}

// serveSocket runs the handler on a control socket, as the daemon does.
func serveSocket(t *testing.T, b Backend) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "s.sock")
	l, err := control.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := control.NewServer(func() *control.Status { return &control.Status{} })
	srv.Mux.Handle("POST "+Route, newHandler(b))
	go srv.Serve(l)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return sock
}

func TestForwardOverSocket(t *testing.T) {
	b := &fakeBackend{result: sampleResult()}
	sock := serveSocket(t, b)
	stdin := []byte(`{"cniVersion":"0.4.0","name":"nodenet","type":"nodenet","socket":"` + sock + `"}`)
	var out bytes.Buffer
	err := forward("ADD", &skel.CmdArgs{ContainerID: "c1", Netns: "/ns", IfName: "eth0", StdinData: stdin}, &out)
	if err != nil {
		t.Fatal(err)
	}
	res, err := types040.NewResult(out.Bytes())
	if err != nil {
		t.Fatalf("plugin output is not a 0.4.0 result: %v\n%s", err, out.String())
	}
	r040 := res.(*types040.Result)
	if r040.IPs[0].Address.String() != "10.244.1.5/24" {
		t.Errorf("result: %s", out.String())
	}

	b.err = types.NewError(types.ErrInvalidNetworkConfig, "bad", "")
	err = forward("ADD", &skel.CmdArgs{ContainerID: "c1", Netns: "/ns", IfName: "eth0", StdinData: stdin}, &out)
	var te *types.Error
	if !errors.As(err, &te) || te.Code != types.ErrInvalidNetworkConfig {
		t.Errorf("backend error not passed through: %v", err)
	}
}

func TestForwardDaemonDown(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	stdin := []byte(`{"cniVersion":"1.0.0","name":"nodenet","type":"nodenet","socket":"` + sock + `"}`)
	err := forward("ADD", &skel.CmdArgs{ContainerID: "c1", Netns: "/ns", IfName: "eth0", StdinData: stdin}, io.Discard)
	var te *types.Error
	if !errors.As(err, &te) || te.Code != types.ErrTryAgainLater || !strings.Contains(te.Msg, "not running") {
		t.Errorf("daemon down: %v", err)
	}
}

func TestConflist(t *testing.T) {
	out, err := Conflist(ConflistOptions{Name: "nodenet", Socket: "/run/nodenet/nodenet.sock",
		Chain: []string{`{"type":"portmap","capabilities":{"portMappings":true}}`}})
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		CNIVersion string           `json:"cniVersion"`
		Name       string           `json:"name"`
		Plugins    []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	if got.CNIVersion != "1.1.0" || got.Name != "nodenet" || len(got.Plugins) != 2 ||
		got.Plugins[0]["type"] != "nodenet" || got.Plugins[0]["socket"] != "/run/nodenet/nodenet.sock" || got.Plugins[1]["type"] != "portmap" {
		t.Errorf("conflist:\n%s", out)
	}
	path := filepath.Join(t.TempDir(), "net.d", "10-nodenet.conflist")
	if wrote, err := WriteConflist(path, out); err != nil || !wrote {
		t.Fatalf("first write: %v %v", wrote, err)
	}
	if wrote, err := WriteConflist(path, out); err != nil || wrote {
		t.Fatalf("unchanged content rewritten: %v %v", wrote, err)
	}
}

func FuzzServe(f *testing.F) {
	f.Add("ADD", "c1", "/ns", "eth0", "K8S_POD_NAME=a", string(conf("1.0.0")))
	f.Add("GC", "", "", "", "", `{"cniVersion":"1.1.0","name":"n","type":"nodenet","cni.dev/valid-attachments":[{"containerID":"a"}]}`)
	f.Add("CHECK", "c", "/n", "eth0", "", `{"cniVersion":"0.4.0","name":"n","type":"nodenet","prevResult":{"ips":[{"address":"x"}]}}`)
	f.Add("DEL", "c", "", "e", ";;=", `{"cniVersion":1}`)
	f.Fuzz(func(t *testing.T, cmd, id, netns, ifname, args, stdin string) {
		b := &fakeBackend{result: sampleResult()}
		resp := newHandler(b).Serve(context.Background(), &Request{Command: cmd, ContainerID: id, Netns: netns, IfName: ifname, Args: args, StdinData: []byte(stdin)})
		if resp.Error == nil && cmd == "ADD" && len(resp.Result) == 0 {
			t.Fatal("ADD succeeded without a result")
		}
		if resp.Error != nil && len(b.calls) > 0 && cmd != "ADD" && cmd != "DEL" && cmd != "CHECK" && cmd != "GC" && cmd != "STATUS" {
			t.Fatalf("backend called for unknown command %q", cmd)
		}
	})
}

func FuzzServeHTTPBody(f *testing.F) {
	f.Add([]byte(`{"command":"ADD","containerID":"c","netns":"/n","ifName":"eth0","stdinData":"e30="}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, body []byte) {
		h := newHandler(&fakeBackend{result: sampleResult()})
		rec := &recorder{header: http.Header{}}
		req, _ := http.NewRequest(http.MethodPost, Route, bytes.NewReader(body))
		h.ServeHTTP(rec, req)
		var resp Response
		if err := json.Unmarshal(rec.body.Bytes(), &resp); err != nil {
			t.Fatalf("handler wrote a non-JSON answer: %v", err)
		}
	})
}

type recorder struct {
	header http.Header
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }
func (r *recorder) WriteHeader(int)             {}
