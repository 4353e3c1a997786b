package control

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/nodenet/nodenet/daemon/view"
)

func TestRender(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	st := &Status{
		Version: "v1", Node: "n1", Pid: 42, StartTime: now.Add(-90 * time.Second), Now: now,
		Ready: false, ReadyReason: "component pods has not synced yet",
		Config: ConfigStatus{File: "/etc/nodenet/config.toml", Generation: 3, LoadedAt: now.Add(-time.Second),
			LastReloadError: "log.level: bad\nnetwork.mtu: bad", RestartRequired: []string{"kubernetes.qps"}},
		API:        view.APIHealth{Server: "https://api:6443", Connected: false, Since: now.Add(-5 * time.Second), LastError: "probe: refused"},
		Informers:  []view.KindState{{Kind: view.Pods, Synced: true, Objects: 7}},
		Components: []ComponentStatus{{Name: "pods", Syncs: 2, Errors: 1, LastError: "boom", Details: map[string]string{"bridge": "nodenet0"}}},
	}
	var b bytes.Buffer
	st.Render(&b)
	out := b.String()
	for _, want := range []string{
		"nodenet v1 on node n1 (pid 42): NOT READY: component pods has not synced yet",
		"uptime:  1m30s",
		"generation 3, loaded 1s ago",
		"last reload FAILED (old config kept):",
		"network.mtu: bad",
		"needs a restart: kubernetes.qps",
		"https://api:6443 UNREACHABLE since 5s ago, last contact never",
		"last error: probe: refused",
		"Pod   true    7",
		"pods  never",
		"boom",
		"bridge:  nodenet0",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("render lacks %q:\n%s", want, out)
		}
	}
}
