package benchkit

import (
	"strings"
	"testing"
)

func TestParseStatCPU(t *testing.T) {
	// A command name with a space and a ")" (only the last ")" ends it);
	// utime 250, stime 50, cutime 1000, cstime 20 ticks.
	const stat = "4242 (kube proxy) (x)) S 1 4242 4242 0 -1 4194560 9000 0 0 0 250 50 1000 20 20 0 12 0 77 1000000 2000 18446744073709551615\n"
	self, children, err := parseStatCPU("/proc/4242/stat", stat)
	if err != nil {
		t.Fatal(err)
	}
	if self != 3 || children != 10.2 {
		t.Errorf("self, children = %v, %v; want 3, 10.2", self, children)
	}
}

func TestParseStatCPUErrors(t *testing.T) {
	for _, tc := range []struct {
		stat, want string
	}{
		{"1 (init) S 1 1 1 0 -1 4194560 1 2 3 4", "/proc/1/stat: too few fields"},
		{"1 (init) S 1 1 1 0 -1 4194560 1 2 3 4 x 5 6 7 20", "/proc/1/stat field 14: "},
	} {
		_, _, err := parseStatCPU("/proc/1/stat", tc.stat)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("parseStatCPU(%q) = %v; want an error starting %q", tc.stat, err, tc.want)
		}
	}
}

func TestParseStatusHWM(t *testing.T) {
	for _, tc := range []struct {
		name, status string
		want         int64
		wantErr      string
	}{
		{"process", "Name:\tnodenet\nVmPeak:\t  2000000 kB\nVmHWM:\t    51200 kB\nVmRSS:\t    40000 kB\n", 50 << 20, ""},
		{"kernel thread", "Name:\tkthreadd\nState:\tS (sleeping)\n", 0, ""},
		{"garbled", "VmHWM:\t12 MB\n", 0, `/proc/7/status VmHWM "\t12 MB": `},
	} {
		got, err := parseStatusHWM("/proc/7/status", tc.status)
		switch {
		case tc.wantErr != "":
			if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
				t.Errorf("%s: err = %v; want one starting %q", tc.name, err, tc.wantErr)
			}
		case err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case got != tc.want:
			t.Errorf("%s: peak = %d; want %d", tc.name, got, tc.want)
		}
	}
}
