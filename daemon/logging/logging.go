// Package logging builds nodenet's slog logger: tint for humans (colour only
// on a terminal), JSON for machines, and a level that can change at run time.
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/lmittmann/tint"
	"golang.org/x/term"
	"k8s.io/klog/v2"
)

// ParseLevel maps a config level name to a slog level.
func ParseLevel(s string) (slog.Level, error) {
	switch s {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("unknown log level %q", s)
}

// New returns a logger writing to w in the given format ("text" or "json")
// whose level follows level.
func New(w io.Writer, format string, level *slog.LevelVar) *slog.Logger {
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
	}
	color := false
	if f, ok := w.(*os.File); ok {
		color = term.IsTerminal(int(f.Fd()))
	}
	return slog.New(tint.NewHandler(w, &tint.Options{
		Level:      level,
		TimeFormat: time.RFC3339Nano,
		NoColor:    !color,
	}))
}

// RouteKlog sends client-go's klog output through logger, so every line the
// process prints has one format. client-go's verbose levels (V(1) and up map
// to slog levels between debug and info) are dropped: they are per-request
// detail that would drown nodenet's own debug lines.
func RouteKlog(logger *slog.Logger) {
	klog.SetSlogLogger(slog.New(floor{logger.Handler()}).With("source", "client-go"))
}

// floor drops records below info.
type floor struct{ slog.Handler }

func (f floor) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo && f.Handler.Enabled(ctx, l)
}
func (f floor) WithAttrs(a []slog.Attr) slog.Handler { return floor{f.Handler.WithAttrs(a)} }
func (f floor) WithGroup(g string) slog.Handler      { return floor{f.Handler.WithGroup(g)} }
