package iptablestest

import (
	"strings"
	"testing"

	"github.com/nodenet/nodenet/datapath/iptables"
)

func lines(l ...string) string { return strings.Join(l, "\n") + "\n" }

func restore(t *testing.T, f *Fake, fam iptables.Family, noflush bool, payload string) error {
	t.Helper()
	return f.Restore(t.Context(), fam, []byte(payload), noflush)
}

const emptyNAT = ":PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"

func TestFakeRestore(t *testing.T) {
	base := lines("*nat",
		":NODENET-A - [0:0]",
		":NODENET-B - [0:0]",
		"-A NODENET-A -s 10.0.0.0/8 -j NODENET-B",
		"-A NODENET-B -j MASQUERADE",
		`-I POSTROUTING 1 -m comment --comment "nodenet hook" -j NODENET-A`,
		"COMMIT")
	baseDump := "*nat\n" + emptyNAT + lines(
		":NODENET-A - [0:0]",
		":NODENET-B - [0:0]",
		`-A POSTROUTING -m comment --comment "nodenet hook" -j NODENET-A`,
		"-A NODENET-A -s 10.0.0.0/8 -j NODENET-B",
		"-A NODENET-B -j MASQUERADE",
		"COMMIT")
	tests := []struct {
		name    string
		payload string
		noflush bool
		want    string // dump after, "" when equal to baseDump
		wantErr string
	}{
		{name: "declaring a chain flushes it", noflush: true,
			payload: lines("*nat", ":NODENET-B - [0:0]", "COMMIT"),
			want: "*nat\n" + emptyNAT + lines(":NODENET-A - [0:0]", ":NODENET-B - [0:0]",
				`-A POSTROUTING -m comment --comment "nodenet hook" -j NODENET-A`,
				"-A NODENET-A -s 10.0.0.0/8 -j NODENET-B", "COMMIT")},
		{name: "without --noflush the table is replaced",
			payload: lines("*nat", ":POSTROUTING DROP [0:0]", ":NODENET-C - [0:0]", "-A NODENET-C -j RETURN", "COMMIT"),
			want: lines("*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
				":POSTROUTING DROP [0:0]", ":NODENET-C - [0:0]", "-A NODENET-C -j RETURN", "COMMIT")},
		{name: "insert at a position, delete by spec and number", noflush: true,
			payload: lines("*nat", "-I NODENET-B 1 -d 10.1.0.0/16 -j RETURN", "-I NODENET-B 2 -d 10.2.0.0/16 -j RETURN",
				"-D NODENET-B -j MASQUERADE", "-D NODENET-B 1", "COMMIT"),
			want: "*nat\n" + emptyNAT + lines(":NODENET-A - [0:0]", ":NODENET-B - [0:0]",
				`-A POSTROUTING -m comment --comment "nodenet hook" -j NODENET-A`,
				"-A NODENET-A -s 10.0.0.0/8 -j NODENET-B", "-A NODENET-B -d 10.2.0.0/16 -j RETURN", "COMMIT")},
		{name: "flush, unhook and delete everything", noflush: true,
			payload: lines("*nat", `-D POSTROUTING -m comment --comment "nodenet hook" -j NODENET-A`, "-F", "-X", "COMMIT"),
			want:    "*nat\n" + emptyNAT + "COMMIT\n"},
		{name: "-N and -P", noflush: true,
			payload: lines("*nat", "-N NODENET-C", "-P OUTPUT DROP", "COMMIT"),
			want: "*nat\n" + lines(":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT DROP [0:0]",
				":POSTROUTING ACCEPT [0:0]", ":NODENET-A - [0:0]", ":NODENET-B - [0:0]", ":NODENET-C - [0:0]",
				`-A POSTROUTING -m comment --comment "nodenet hook" -j NODENET-A`,
				"-A NODENET-A -s 10.0.0.0/8 -j NODENET-B", "-A NODENET-B -j MASQUERADE", "COMMIT")},
		{name: "delete a referenced chain", noflush: true, wantErr: "line 3 failed: -X NODENET-B: too many links",
			payload: lines("*nat", ":NODENET-B - [0:0]", "-X NODENET-B", "COMMIT")},
		{name: "delete a chain with rules", noflush: true, wantErr: "not empty",
			payload: lines("*nat", "-X NODENET-B", "COMMIT")},
		{name: "delete a missing chain", noflush: true, wantErr: "no chain by that name",
			payload: lines("*nat", "-X NODENET-Z", "COMMIT")},
		{name: "jump to a missing chain", noflush: true, wantErr: "couldn't load target",
			payload: lines("*nat", "-A NODENET-A -j NODENET-Z", "COMMIT")},
		{name: "jump to a built-in chain", noflush: true, wantErr: "built-in",
			payload: lines("*nat", "-A NODENET-A -j OUTPUT", "COMMIT")},
		{name: "append to a missing chain", noflush: true, wantErr: "no chain by that name",
			payload: lines("*nat", "-A NODENET-Z -j RETURN", "COMMIT")},
		{name: "delete a missing rule", noflush: true, wantErr: "bad rule",
			payload: lines("*nat", "-D NODENET-A -j RETURN", "COMMIT")},
		{name: "IPv6 address in IPv4", noflush: true, wantErr: "is not IPv4",
			payload: lines("*nat", "-A NODENET-A -d fd00::/8 -j RETURN", "COMMIT")},
		{name: "missing COMMIT", noflush: true, wantErr: "COMMIT expected",
			payload: lines("*nat", "-F NODENET-A")},
		{name: "unknown command", noflush: true, wantErr: "unsupported command",
			payload: lines("*nat", "-R NODENET-A 1 -j RETURN", "COMMIT")},
		{name: "unknown table", noflush: true, wantErr: "unknown table",
			payload: lines("*security", "COMMIT")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := NewFake()
			if err := restore(t, f, iptables.IPv4, true, base); err != nil {
				t.Fatal(err)
			}
			if got := f.Dump(iptables.IPv4); got != baseDump {
				t.Fatalf("base dump:\n%s\nwant:\n%s", got, baseDump)
			}
			err := restore(t, f, iptables.IPv4, tt.noflush, tt.payload)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				if got := f.Dump(iptables.IPv4); got != baseDump {
					t.Errorf("failed restore changed the table:\n%s", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := f.Dump(iptables.IPv4); got != tt.want {
				t.Errorf("dump:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

func TestFakeSaveAndFamilies(t *testing.T) {
	f := NewFake()
	if err := restore(t, f, iptables.IPv6, true, lines("*filter", ":NODENET-F - [0:0]", "-A NODENET-F -s fd00::/8 -j ACCEPT", "COMMIT")); err != nil {
		t.Fatal(err)
	}
	if got := f.Dump(iptables.IPv4); got != "" {
		t.Errorf("IPv4 dump = %q, want empty", got)
	}
	out, err := f.Save(t.Context(), iptables.IPv4, iptables.TableNAT)
	if err != nil || string(out) != "*nat\n"+emptyNAT+"COMMIT\n" {
		t.Errorf("save of an untouched table = %q, %v", out, err)
	}
	out, err = f.Save(t.Context(), iptables.IPv6, "")
	want := lines("*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
		":NODENET-F - [0:0]", "-A NODENET-F -s fd00::/8 -j ACCEPT", "COMMIT")
	if err != nil || string(out) != want {
		t.Errorf("save all = %q, %v; want %q", out, err, want)
	}
	if s := f.String(); !strings.HasPrefix(s, "# IPv6\n*filter") {
		t.Errorf("String() = %q", s)
	}
	if f.Saves() != 2 || len(f.Restores()) != 1 {
		t.Errorf("calls: %d saves, %d restores", f.Saves(), len(f.Restores()))
	}
}

func TestFakeCommitsPerTable(t *testing.T) {
	f := NewFake()
	err := restore(t, f, iptables.IPv4, true, lines("*filter", ":NODENET-F - [0:0]", "COMMIT", "*nat", "-A NODENET-X -j RETURN", "COMMIT"))
	if err == nil {
		t.Fatal("want error")
	}
	if !strings.Contains(f.Dump(iptables.IPv4), ":NODENET-F - [0:0]") {
		t.Error("the table committed before the failure was lost")
	}
}
