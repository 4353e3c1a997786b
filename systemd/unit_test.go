package systemd_test

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const unitName = "nodenet.service"

// execStubs are the commands the unit runs. verify refuses a unit whose
// commands are not executable, and nodenet is not installed where the tests
// run, so each gets an executable stub inside the throwaway root.
var execStubs = []string{"usr/local/bin/nodenet", "bin/kill", "usr/bin/touch"}

// hostUnitDirs hold the distribution's units (targets, slices). They are
// copied into the throwaway root so that network-online.target,
// multi-user.target and the default dependencies resolve as on a node.
var hostUnitDirs = []string{"/usr/lib/systemd/system", "/lib/systemd/system"}

// stubUnits are written into the root when the host has none of its own, the
// least verify needs to build the start transaction of a service.
var stubUnits = []string{"sysinit.target", "basic.target", "shutdown.target",
	"network-online.target", "multi-user.target"}

// systemdAnalyze returns the path of systemd-analyze, skipping the test when
// it is missing, unless CI is set: there a missing tool is a broken setup.
func systemdAnalyze(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("systemd-analyze not found and CI is set; install the systemd package: %v", err)
		}
		t.Skipf("skipping: systemd-analyze not installed (install the systemd package to verify %s): %v", unitName, err)
	}
	return p
}

func readUnit(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(unitName)
	if err != nil {
		t.Fatalf("read unit: %v", err)
	}
	return b
}

// newRoot builds a throwaway file system root for `systemd-analyze verify
// --root`: the unit in etc/systemd/system, the exec stubs except those named
// in missing, and the host's system units (or stubs). It returns the root and
// the unit's path.
func newRoot(t *testing.T, unit []byte, missing ...string) (string, string) {
	t.Helper()
	root := t.TempDir()
	for _, p := range execStubs {
		if slices.Contains(missing, p) {
			continue
		}
		writeFile(t, filepath.Join(root, p), []byte("#!/bin/sh\nexit 0\n"), 0o755)
	}
	units := filepath.Join(root, "usr/lib/systemd/system")
	for _, dir := range hostUnitDirs {
		if _, err := os.Stat(dir); err == nil {
			// Unit aliases and .wants entries are relative symlinks,
			// which CopyFS keeps as symlinks.
			if err := os.CopyFS(units, os.DirFS(dir)); err != nil {
				t.Fatalf("copy host units from %s: %v", dir, err)
			}
			break
		}
	}
	for _, name := range stubUnits {
		p := filepath.Join(units, name)
		if _, err := os.Lstat(p); err != nil {
			writeFile(t, p, []byte("[Unit]\nDescription=test stub\n"), 0o644)
		}
	}
	unitPath := filepath.Join(root, "etc/systemd/system", unitName)
	writeFile(t, unitPath, unit, 0o644)
	return root, unitPath
}

// verify runs systemd-analyze verify offline against root. It returns the
// problems found: every output line that mentions the unit, and a failed
// exit. --recursive-errors=no makes warnings about this unit (not about the
// distribution's units) a non-zero exit; --man=no and --generators=no keep
// the host out of it.
func verify(t *testing.T, analyze, root, unitPath string) (string, []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, analyze, "verify", "--root="+root,
		"--man=no", "--generators=no", "--recursive-errors=no", unitPath)
	cmd.Env = append(os.Environ(), "LC_ALL=C", "SYSTEMD_LOG_COLOR=0", "SYSTEMD_PAGER=cat")
	out, err := cmd.CombinedOutput()
	var problems []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if strings.Contains(sc.Text(), unitName) {
			problems = append(problems, sc.Text())
		}
	}
	if err != nil {
		problems = append(problems, "systemd-analyze verify: "+err.Error())
	}
	return string(out), problems
}

func TestUnitVerifies(t *testing.T) {
	analyze := systemdAnalyze(t)
	root, unitPath := newRoot(t, readUnit(t))
	out, problems := verify(t, analyze, root, unitPath)
	t.Logf("systemd-analyze verify --root printed %q", out)
	if len(problems) > 0 {
		t.Fatalf("%s does not verify:\n%s\nfull output:\n%s", unitName, strings.Join(problems, "\n"), out)
	}
}

// TestBrokenUnitFailsVerify makes sure the check above can fail: each broken
// copy of the unit must be reported.
func TestBrokenUnitFailsVerify(t *testing.T) {
	analyze := systemdAnalyze(t)
	good := string(readUnit(t))
	tests := []struct {
		name     string
		old, new string // replace old with new in the unit
		missing  string // an exec stub left out of the root
	}{
		{name: "bad Type", old: "\nType=notify\n", new: "\nType=notiffy\n"},
		{name: "unknown key", old: "\nNotifyAccess=main\n", new: "\nNotifyAcess=main\n"},
		{name: "bad duration", old: "\nWatchdogSec=30s\n", new: "\nWatchdogSec=30x\n"},
		{name: "bad address family", old: " AF_NETLINK\n", new: " AF_NETLNK\n"},
		{name: "unknown section", old: "\n[Install]\n", new: "\n[Instal]\n"},
		{name: "ExecStart binary missing", missing: "usr/local/bin/nodenet"},
		{name: "ExecStartPre binary missing", missing: "usr/bin/touch"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			unit := good
			if tc.old != "" {
				if !strings.Contains(unit, tc.old) {
					t.Fatalf("unit no longer contains %q; update this test", tc.old)
				}
				unit = strings.Replace(unit, tc.old, tc.new, 1)
			}
			root, unitPath := newRoot(t, []byte(unit), tc.missing)
			out, problems := verify(t, analyze, root, unitPath)
			if len(problems) == 0 {
				t.Fatalf("broken unit passed verify; output: %q", out)
			}
			t.Logf("reported as expected: %s", strings.Join(problems, " | "))
		})
	}
}

func writeFile(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
}

// unitFile is a parsed unit: section -> key -> values in order of appearance.
type unitFile map[string]map[string][]string

// parseUnit reads the subset of the unit syntax we use (no line
// continuations). It also returns the directives not covered by a comment:
// every group of settings must sit under a comment saying why.
func parseUnit(t *testing.T, b []byte) (unitFile, []string) {
	t.Helper()
	u := unitFile{}
	var uncommented []string
	section := ""
	commented := false // the current group of settings has a comment above it
	for n, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "":
			commented = false
		case strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
			commented = true
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = strings.Trim(line, "[]")
			u[section] = map[string][]string{}
			commented = false
		default:
			key, value, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("line %d: not a setting: %q", n+1, line)
			}
			u[section][key] = append(u[section][key], value)
			if !commented {
				uncommented = append(uncommented, key)
			}
		}
	}
	return u, uncommented
}

func (u unitFile) get(section, key string) string {
	v := u[section][key]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// TestUnitSettings pins the settings whose loss would go unnoticed by verify:
// verify accepts a misspelt capability, for one, and a unit without Type=notify.
func TestUnitSettings(t *testing.T) {
	u, uncommented := parseUnit(t, readUnit(t))
	if len(uncommented) > 0 {
		t.Errorf("settings without a comment saying why: %v", uncommented)
	}
	want := map[string]string{
		"Type":                       "notify",
		"NotifyAccess":               "main",
		"WatchdogSec":                "30s",
		"ExecStart":                  "/usr/local/bin/nodenet run --config /etc/nodenet/config.toml",
		"ExecReload":                 "/bin/kill -HUP $MAINPID",
		"Restart":                    "on-failure",
		"KillMode":                   "mixed",
		"RuntimeDirectory":           "nodenet",
		"RuntimeDirectoryMode":       "0700",
		"StateDirectory":             "nodenet",
		"NoNewPrivileges":            "yes",
		"ProtectSystem":              "strict",
		"ProtectKernelTunables":      "no", // it writes /proc/sys/net
		"RestrictAddressFamilies":    "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
		"MemoryDenyWriteExecute":     "yes",
		"SystemCallArchitectures":    "native",
		"ReadWritePaths":             "/etc/cni/net.d /run/xtables.lock",
		"ConfigurationDirectory":     "nodenet cni/net.d",
		"RestrictNamespaces":         "net",
		"ProtectHome":                "yes",
		"PrivateTmp":                 "yes",
		"LockPersonality":            "yes",
		"ProtectKernelModules":       "yes",
		"TimeoutStopSec":             "30s",
		"CapabilityBoundingSet":      "CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE CAP_SYS_ADMIN",
		"AmbientCapabilities":        "CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE CAP_SYS_ADMIN",
		"ExecStartPre":               "+/usr/bin/touch /run/xtables.lock",
		"LimitNOFILE":                "1048576",
		"StateDirectoryMode":         "0700",
		"ConfigurationDirectoryMode": "0755",
	}
	got := map[string]string{}
	for key := range want {
		got[key] = u.get("Service", key)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("[Service] settings (-want +got):\n%s", diff)
	}
	for _, key := range []string{"Wants", "After"} {
		if v := u.get("Unit", key); !strings.Contains(v, "network-online.target") {
			t.Errorf("[Unit] %s=%q, want network-online.target", key, v)
		}
	}
	// Ordering before kubelet would deadlock a control-plane node's boot
	// (see the unit's comment).
	if v := u.get("Unit", "Before"); strings.Contains(v, "kubelet") {
		t.Errorf("[Unit] Before=%q: must not order before kubelet", v)
	}
	if v := u.get("Install", "WantedBy"); v != "multi-user.target" {
		t.Errorf("[Install] WantedBy=%q, want multi-user.target", v)
	}
}
