package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckConfigExample(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"check-config", "config.example.toml"}, &out, &errb); code != 0 {
		t.Fatalf("check-config config.example.toml: exit %d\n%s", code, errb.String())
	}
	if !strings.Contains(out.String(), "ok") {
		t.Errorf("output: %q", out.String())
	}
}

func TestCheckConfigReportsEveryProblem(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.toml")
	bad := `[node]
name = "Not_A_DNS_Name"

[network]
mtu = 10
cluster_cidrs = ["10.244.0.1/16"]

[log]
level = "chatty"
colour = true
`
	if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run([]string{"check-config", path}, &out, &errb); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	msg := errb.String()
	for _, want := range []string{"node.name", "network.mtu", "network.cluster_cidrs", "log.level", "log.colour", "(line 10"} {
		if !strings.Contains(msg, want) {
			t.Errorf("check-config output lacks %q:\n%s", want, msg)
		}
	}
	if !strings.Contains(msg, "5 problem(s)") {
		t.Errorf("want 5 problems reported at once:\n%s", msg)
	}
}

func TestCheckConfigMissingFile(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"check-config", filepath.Join(t.TempDir(), "none.toml")}, &out, &errb); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if !strings.Contains(errb.String(), "none.toml") {
		t.Errorf("error does not name the file: %q", errb.String())
	}
}

func TestUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(nil, &out, &errb); code != 2 || !strings.Contains(errb.String(), "usage") {
		t.Errorf("no args: exit %d %q", code, errb.String())
	}
	if code := run([]string{"frobnicate"}, &out, &errb); code != 2 {
		t.Errorf("unknown command: exit %d", code)
	}
	out.Reset()
	if code := run([]string{"version"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "nodenet ") {
		t.Errorf("version: exit %d %q", code, out.String())
	}
}

func TestStatusDaemonDown(t *testing.T) {
	var out, errb bytes.Buffer
	sock := filepath.Join(t.TempDir(), "none.sock")
	if code := run([]string{"status", "--socket", sock}, &out, &errb); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if !strings.Contains(errb.String(), "not running") {
		t.Errorf("status with no daemon: %q", errb.String())
	}
}
