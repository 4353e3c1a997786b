package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Prefix starts the name of every namespace and directory this process
// creates. It embeds the pid so a later run can tell stale leftovers apart.
var Prefix = fmt.Sprintf("nnt%d-", os.Getpid())

var stalePrefix = regexp.MustCompile(`^nnt(\d+)-`)

// Proc is a process started by the harness inside a namespace.
type Proc struct {
	Name    string
	LogPath string
	cmd     *exec.Cmd
	logFile *os.File
	done    chan struct{}
	err     error
}

var (
	procsMu sync.Mutex // guards procs
	procs   []*Proc    // every process started, for LeakCheck
)

// StartProc starts bin inside ns with its output in logPath (appended, so a
// restarted process keeps one log).
func StartProc(ns *NS, name, logPath, bin string, args ...string) (*Proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	cmd := ns.Command(context.Background(), bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, LogPath: logPath, cmd: cmd, logFile: f, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	procsMu.Lock()
	procs = append(procs, p)
	procsMu.Unlock()
	return p, nil
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig to the process.
func (p *Proc) Signal(sig syscall.Signal) error {
	return p.cmd.Process.Signal(sig)
}

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Done is closed when the process has ended.
func (p *Proc) Done() <-chan struct{} { return p.done }

// ExitErr is the process' exit status once Done is closed.
func (p *Proc) ExitErr() error { <-p.done; return p.err }

// Stop sends SIGTERM and waits up to grace, then kills. It returns the exit
// error when the process did not stop cleanly within grace.
func (p *Proc) Stop(grace time.Duration) error {
	if p.Exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		var ee *exec.ExitError
		if errors.As(p.err, &ee) && ee.ExitCode() != 0 && !ee.Exited() {
			return nil // ended by the signal
		}
		return p.err
	case <-time.After(grace):
		p.Kill()
		return fmt.Errorf("%s did not stop within %s after SIGTERM", p.Name, grace)
	}
}

// Kill sends SIGKILL and waits for the process to end.
func (p *Proc) Kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Log returns the whole log.
func (p *Proc) Log() string {
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}

// Tail returns the last n lines of the log.
func (p *Proc) Tail(n int) string {
	lines := strings.Split(strings.TrimRight(p.Log(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// CleanupStale removes namespaces and directories left by harness runs whose
// process no longer exists (a test binary killed by a timeout cannot clean
// up after itself).
func CleanupStale() error {
	var errs []error
	names, err := listNS()
	if err != nil {
		return err
	}
	for _, n := range names {
		if stale(n) {
			errs = append(errs, (&NS{Name: n}).Delete())
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "nnt*-*"))
	for _, d := range dirs {
		if stale(filepath.Base(d)) {
			errs = append(errs, os.RemoveAll(d))
		}
	}
	return errors.Join(errs...)
}

func stale(name string) bool {
	m := stalePrefix.FindStringSubmatch(name)
	if m == nil {
		return false
	}
	pid, _ := strconv.Atoi(m[1])
	return pid != os.Getpid() && !pidAlive(pid)
}

// LeakCheck reports anything this process created that is still there:
// namespaces, directories, running processes.
func LeakCheck() error {
	var errs []error
	names, err := listNS()
	if err != nil {
		errs = append(errs, err)
	}
	for _, n := range names {
		if strings.HasPrefix(n, Prefix) {
			errs = append(errs, fmt.Errorf("leak: network namespace %s", n))
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), Prefix+"*"))
	for _, d := range dirs {
		errs = append(errs, fmt.Errorf("leak: directory %s", d))
	}
	procsMu.Lock()
	for _, p := range procs {
		if !p.Exited() {
			errs = append(errs, fmt.Errorf("leak: process %s (pid %d) still running", p.Name, p.Pid()))
		}
	}
	procsMu.Unlock()
	return errors.Join(errs...)
}
