package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// policyRCD is Debian's hook that invoke-rc.d asks before starting a
// service; exit status 101 means "do not".
const policyRCD = "/usr/sbin/policy-rc.d"

// ensureTools installs wrk and nginx from Debian when missing. The package's
// own nginx service is never started: policy-rc.d forbids service starts
// for the duration of the install.
func ensureTools(ctx context.Context) error {
	var missing []string
	if _, err := exec.LookPath("wrk"); err != nil {
		missing = append(missing, "wrk")
	}
	if _, err := os.Stat(nginxBin); err != nil {
		missing = append(missing, "nginx")
	}
	if len(missing) == 0 {
		return nil
	}
	fmt.Fprintf(stderr, "installing %s from Debian ...\n", strings.Join(missing, " "))
	if _, err := os.Stat(policyRCD); errors.Is(err, os.ErrNotExist) {
		if err := os.WriteFile(policyRCD, []byte("#!/bin/sh\n# written by make bench-ingress during apt-get install\nexit 101\n"), 0o755); err != nil {
			return fmt.Errorf("forbid service starts: %w", err)
		}
		defer os.Remove(policyRCD)
	}
	install := func() error {
		cmd := exec.CommandContext(ctx, "apt-get", append([]string{"install", "-y", "--no-install-recommends"}, missing...)...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("apt-get install %s: %v\n%s", strings.Join(missing, " "), err, out)
		}
		return nil
	}
	if err := install(); err != nil {
		// A fresh machine may have no package lists yet.
		if out, uerr := exec.CommandContext(ctx, "apt-get", "update").CombinedOutput(); uerr != nil {
			return fmt.Errorf("%w; apt-get update: %v\n%s", err, uerr, out)
		}
		return install()
	}
	return nil
}

// toolVersions names the versions compared, for the report header.
func toolVersions(ctx context.Context) (wrk, nginx string) {
	out, _ := exec.CommandContext(ctx, "wrk", "--version").CombinedOutput()
	wrk = strings.TrimSpace(strings.SplitN(string(out), "[", 2)[0])
	out, _ = exec.CommandContext(ctx, nginxBin, "-v").CombinedOutput()
	nginx = strings.TrimPrefix(strings.TrimSpace(string(out)), "nginx version: ")
	return wrk, nginx
}

// clockTick is the kernel's USER_HZ, the unit of /proc/<pid>/stat times;
// 100 on every Linux architecture Go supports here.
const clockTick = 100

// procCPU returns the CPU time (user + system) of pid and of its direct
// children: nginx's master and workers, or nodenet alone.
func procCPU(pid int) (time.Duration, error) {
	total, _, err := readStat(pid)
	if err != nil {
		return 0, err
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil || child == pid {
			continue
		}
		cpu, ppid, err := readStat(child)
		if err != nil || ppid != pid {
			continue // gone, or not a child
		}
		total += cpu
	}
	return total, nil
}

// readStat reads utime+stime and the parent pid from /proc/<pid>/stat.
func readStat(pid int) (cpu time.Duration, ppid int, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil && line == "" {
		return 0, 0, err
	}
	return parseStat(line)
}

// parseStat reads fields 4 (ppid), 14 (utime) and 15 (stime) of a
// /proc/<pid>/stat line; the command name (field 2) may contain spaces.
func parseStat(line string) (cpu time.Duration, ppid int, err error) {
	i := strings.LastIndexByte(line, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("stat line %q", line)
	}
	f := strings.Fields(line[i+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("stat line %q: %d fields", line, len(f))
	}
	ppid, err1 := strconv.Atoi(f[1])
	utime, err2 := strconv.ParseInt(f[11], 10, 64)
	stime, err3 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return 0, 0, fmt.Errorf("stat line %q: %w", line, err)
	}
	return time.Duration(utime+stime) * time.Second / clockTick, ppid, nil
}
