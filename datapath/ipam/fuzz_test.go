package ipam

import (
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// FuzzOpen feeds arbitrary bytes to the owner record parser, directly and as
// the content of a lease file that Open must cope with. Neither may panic;
// what the parser accepts must round-trip; Open must never fail on it and
// must keep the file exactly when it is a valid single-stack record for it.
func FuzzOpen(f *testing.F) {
	valid := `{"version":1,"containerID":"c","ifName":"eth0","namespace":"ns","pod":"p","addrs":["10.244.1.5/24"],"since":"2025-01-02T03:04:05.000000006Z"}`
	for _, seed := range []string{
		valid,
		valid[:len(valid)/2],
		`{"version":1,"containerID":"c","ifName":"eth0","addrs":["10.244.1.5/24","fd00::5/64"],"since":"2025-01-02T03:04:05Z"}`,
		`{"version":2,"containerID":"c","ifName":"eth0","addrs":["10.244.1.5/24"],"since":"2025-01-02T03:04:05+02:00","new":1}`,
		`{"version":1,"containerID":"c","ifName":"eth0","addrs":["fd00::5/64","10.244.1.5/24"],"since":"2025-01-02T03:04:05Z"}`,
		`{"version":1,"containerID":"c","ifName":"eth0","addrs":["10.244.1.5/33"],"since":"2025-01-02T03:04:05Z"}`,
		`{"version":1,"containerID":"c","ifName":"eth0","addrs":["fe80::1%eth0/64"],"since":"2025-01-02T03:04:05Z"}`,
		`{"addrs":null}`, `[]`, `null`, ``, "\x00\xff",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rec, perr := parseRecord(data)
		if perr == nil {
			enc, err := encodeRecord(rec)
			if err != nil {
				t.Fatalf("encode accepted record: %v", err)
			}
			again, err := parseRecord(enc)
			if err != nil {
				t.Fatalf("re-parse of %s: %v", enc, err)
			}
			if diff := cmp.Diff(rec, again, cmpOpts); diff != "" {
				t.Fatalf("round trip (-first +second):\n%s", diff)
			}
		}

		dir := fastTempDir(t)
		rdir := filepath.Join(dir, dirName(v4r))
		if err := os.Mkdir(rdir, 0o755); err != nil {
			t.Fatal(err)
		}
		lease := filepath.Join(rdir, "10.244.1.5")
		if err := os.WriteFile(lease, data, 0o600); err != nil {
			t.Fatal(err)
		}
		a, err := Open(dir, []netip.Prefix{v4r}, Options{Node: "n1", Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		wantKept := perr == nil && len(rec.Addrs) == 1 && rec.Addrs[0] == netip.MustParsePrefix("10.244.1.5/24")
		_, statErr := os.Stat(lease)
		if kept := statErr == nil; kept != wantKept || len(a.List()) != map[bool]int{true: 1}[wantKept] {
			t.Fatalf("lease file kept=%v, want %v; List = %v", kept, wantKept, a.List())
		}
	})
}

// fastTempDir is a temporary directory on tmpfs when there is one: Open
// fsyncs the directories it cleans, which on a disk caps fuzzing at a few
// hundred executions a second.
func fastTempDir(t *testing.T) string {
	if fi, err := os.Stat("/dev/shm"); err != nil || !fi.IsDir() {
		return t.TempDir()
	}
	dir, err := os.MkdirTemp("/dev/shm", "ipam-fuzz-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Error(err)
		}
	})
	return dir
}
