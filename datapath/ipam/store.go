package ipam

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// On-disk names inside a range directory; see README.md. Lease files are
// named by the address, so neither of these can collide with one.
const (
	cursorName    = "cursor"
	tmpPrefix     = ".tmp-"
	recordVersion = 1
	// maxRecordSize bounds what we read from a lease file; ours are ~250 bytes.
	maxRecordSize = 64 << 10
)

// record is the owner record stored in every lease file of an allocation.
// Each file of a dual-stack allocation holds the same record, listing all of
// its addresses: that is what lets Open tell a complete allocation from one
// that a crash interrupted half-way through Allocate or Release.
//
// Compatibility: later versions may add fields but must keep these; unknown
// fields are ignored so that a downgrade does not throw leases away.
type record struct {
	Version     int            `json:"version"`
	ContainerID string         `json:"containerID"`
	IfName      string         `json:"ifName"`
	Namespace   string         `json:"namespace,omitempty"`
	Pod         string         `json:"pod,omitempty"`
	Addrs       []netip.Prefix `json:"addrs"`
	Since       time.Time      `json:"since"`
}

func (r record) owner() Owner {
	return Owner{ContainerID: r.ContainerID, IfName: r.IfName, Namespace: r.Namespace, Pod: r.Pod}
}

func encodeRecord(r record) ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode owner record: %w", err)
	}
	return append(b, '\n'), nil
}

// parseRecord decodes and validates a lease file's content. It never panics
// (FuzzOpen); whatever it accepts re-encodes to something it accepts again.
func parseRecord(data []byte) (record, error) {
	var r record
	if len(data) > maxRecordSize {
		return r, fmt.Errorf("record is %d bytes, more than %d", len(data), maxRecordSize)
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return record{}, fmt.Errorf("decode owner record: %w", err)
	}
	// One instant, one encoding: Open compares the records of an
	// allocation's files by their canonical encoding.
	r.Since = r.Since.UTC()
	if err := r.validate(); err != nil {
		return record{}, err
	}
	return r, nil
}

func (r record) validate() error {
	var errs []error
	if r.Version < 1 {
		errs = append(errs, fmt.Errorf("version %d, want >= 1", r.Version))
	}
	if r.ContainerID == "" {
		errs = append(errs, errors.New("empty containerID"))
	}
	if r.IfName == "" {
		errs = append(errs, errors.New("empty ifName"))
	}
	if r.Since.IsZero() {
		errs = append(errs, errors.New("missing since"))
	} else if y := r.Since.Year(); y < 1 || y > 9999 {
		// An offset can push a parsable time out of what JSON encodes.
		errs = append(errs, fmt.Errorf("since %d: year out of range", y))
	}
	switch len(r.Addrs) {
	case 1, 2:
		for i, p := range r.Addrs {
			if err := checkRange(p.Masked()); err != nil || p.Addr().Zone() != "" {
				errs = append(errs, fmt.Errorf("addrs[%d]: bad address %q", i, p.String()))
			}
		}
		if len(r.Addrs) == 2 && !(r.Addrs[0].Addr().Is4() && r.Addrs[1].Addr().Is6()) {
			errs = append(errs, fmt.Errorf("addrs %v: want one IPv4 then one IPv6", r.Addrs))
		}
	default:
		errs = append(errs, fmt.Errorf("%d addrs, want 1 or 2", len(r.Addrs)))
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid owner record: %w", errors.Join(errs...))
	}
	return nil
}

// errTaken means the lease file already exists: link(2) said EEXIST.
var errTaken = errors.New("address already claimed on disk")

// writeTemp writes data to a new temporary file in dir, fsyncs it and returns
// its path. Leftovers from a crash are removed by Open.
func writeTemp(dir string, data []byte, sync bool) (string, error) {
	f, err := os.CreateTemp(dir, tmpPrefix+"*")
	if err != nil {
		return "", err
	}
	_, err = f.Write(data)
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", errors.Join(err, os.Remove(f.Name()))
	}
	return f.Name(), nil
}

// claim creates dir/name with data, exclusively and atomically: the content
// is complete and durable before link(2) gives it its name, and link fails
// with EEXIST (errTaken) if the name exists. linked says whether the name was
// created, even when an error follows. The caller fsyncs dir afterwards.
func claim(dir, name string, data []byte) (linked bool, err error) {
	tmp, err := writeTemp(dir, data, true)
	if err != nil {
		return false, fmt.Errorf("write lease %s: %w", name, err)
	}
	lerr := os.Link(tmp, filepath.Join(dir, name))
	rerr := os.Remove(tmp) // after a crash here Open removes the leftover
	switch {
	case errors.Is(lerr, fs.ErrExist):
		return false, errors.Join(errTaken, rerr)
	case lerr != nil:
		return false, fmt.Errorf("claim lease %s: %w", name, errors.Join(lerr, rerr))
	case rerr != nil:
		return true, fmt.Errorf("claim lease %s: %w", name, rerr)
	}
	return true, nil
}

// writeCursor replaces dir/cursor atomically (temp + rename). The cursor is
// advisory, so its data is not fsynced: if a power loss leaves it torn, Open
// falls back to the newest lease of the range.
func writeCursor(dir string, a netip.Addr) error {
	tmp, err := writeTemp(dir, []byte(a.String()+"\n"), false)
	if err != nil {
		return fmt.Errorf("write cursor: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, cursorName)); err != nil {
		return fmt.Errorf("write cursor: %w", errors.Join(err, os.Remove(tmp)))
	}
	return nil
}

// readCursor returns the stored cursor; invalid when missing or unreadable.
func readCursor(dir string) (netip.Addr, error) {
	b, err := readSmall(filepath.Join(dir, cursorName))
	if err != nil {
		return netip.Addr{}, err
	}
	a, err := netip.ParseAddr(strings.TrimSpace(string(b)))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("parse cursor: %w", err)
	}
	return a, nil
}

// readSmall reads at most maxRecordSize+1 bytes of path, so that a huge
// garbage file costs nothing and still fails to parse.
func readSmall(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(f, maxRecordSize+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return b, err
}

// syncDir makes the names created or removed in dir durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync dir: %w", err)
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}

// createDir makes dir if needed and, if it made it, makes its name durable.
func createDir(dir string) error {
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s is not a directory", dir)
		}
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return syncDir(filepath.Dir(filepath.Clean(dir)))
}

// removeFile removes path; a missing file is not an error (retried releases).
func removeFile(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
