package benchkit

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ProcStats are a process' CPU time (own, and of its waited-for children:
// iptables-restore, nft, ipset) and peak resident memory.
type ProcStats struct {
	CPUSelf, CPUChildren float64 // seconds
	PeakRSS              int64   // bytes
}

const clockTicks = 100 // USER_HZ on Linux

// ReadProcStats reads pid's ProcStats from /proc/<pid>/stat and status.
func ReadProcStats(pid int) (ProcStats, error) {
	var s ProcStats
	statPath, statusPath := fmt.Sprintf("/proc/%d/stat", pid), fmt.Sprintf("/proc/%d/status", pid)
	stat, err := os.ReadFile(statPath)
	if err != nil {
		return s, err
	}
	if s.CPUSelf, s.CPUChildren, err = parseStatCPU(statPath, string(stat)); err != nil {
		return s, err
	}
	status, err := os.ReadFile(statusPath)
	if err != nil {
		return s, err
	}
	s.PeakRSS, err = parseStatusHWM(statusPath, string(status))
	return s, err
}

// parseStatCPU reads utime+stime and cutime+cstime, in seconds, from a
// /proc/<pid>/stat text; path names it in errors.
func parseStatCPU(path, stat string) (self, children float64, err error) {
	// Fields after the ")" closing the command name (which may hold spaces
	// and parentheses): state is field 3, so utime (14), stime (15),
	// cutime (16), cstime (17) are f[11..14].
	f := strings.Fields(stat[strings.LastIndexByte(stat, ')')+1:])
	if len(f) < 15 {
		return 0, 0, fmt.Errorf("%s: too few fields", path)
	}
	var t [4]float64
	for i := range t {
		v, err := strconv.ParseInt(f[11+i], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("%s field %d: %w", path, 14+i, err)
		}
		t[i] = float64(v) / clockTicks
	}
	return t[0] + t[1], t[2] + t[3], nil
}

// parseStatusHWM reads VmHWM (peak RSS), in bytes, from a
// /proc/<pid>/status text; 0 when there is none (a kernel thread).
func parseStatusHWM(path, status string) (int64, error) {
	var peak int64
	for line := range strings.SplitSeq(status, "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s VmHWM %q: %w", path, v, err)
			}
			peak = kb * 1024
		}
	}
	return peak, nil
}
