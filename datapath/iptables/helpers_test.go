package iptables_test

import (
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/nodenet/nodenet/datapath/iptables"
	"github.com/nodenet/nodenet/datapath/iptables/iptablestest"
)

func chain(t iptables.Table, name string, rules ...string) iptables.Chain {
	c := iptables.Chain{Table: t, Name: name}
	for _, r := range rules {
		c.Rules = append(c.Rules, iptables.Rule(r))
	}
	return c
}

func nat(name string, rules ...string) iptables.Chain {
	return chain(iptables.TableNAT, name, rules...)
}

func filter(name string, rules ...string) iptables.Chain {
	return chain(iptables.TableFilter, name, rules...)
}

// testLogger logs to stderr at debug level when NODENET_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("NODENET_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug - 4}))
}

func newFake(t *testing.T) (*iptables.Manager, *iptablestest.Fake) {
	t.Helper()
	f := iptablestest.NewFake()
	return iptables.NewManager(f, iptables.IPv4, testLogger()), f
}

// mustRestore changes the fake behind the Manager's back.
func mustRestore(t *testing.T, r iptables.Runner, fam iptables.Family, payload string) {
	t.Helper()
	if err := r.Restore(t.Context(), fam, []byte(payload), true); err != nil {
		t.Fatalf("restore %q: %v", payload, err)
	}
}

// lines joins lines with a trailing newline, for readable golden strings.
func lines(l ...string) string { return strings.Join(l, "\n") + "\n" }

// countLines counts the lines of dump equal to line.
func countLines(dump, line string) int {
	n := 0
	for _, l := range strings.Split(dump, "\n") {
		if l == line {
			n++
		}
	}
	return n
}
