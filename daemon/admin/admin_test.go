package admin

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestPprofSwitch(t *testing.T) {
	s := New(prometheus.NewRegistry(), func() (bool, string) { return true, "" }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	get := func(path string) int {
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code
	}
	for _, step := range []struct {
		on   bool
		path string
		want int
	}{
		{false, "/debug/pprof/", http.StatusNotFound},
		{false, "/debug/pprof/heap", http.StatusNotFound},
		{true, "/debug/pprof/", http.StatusOK},
		{true, "/debug/pprof/heap", http.StatusOK},
		{true, "/debug/pprof/cmdline", http.StatusOK},
		{false, "/debug/pprof/heap", http.StatusNotFound},
		{false, "/healthz", http.StatusOK},
	} {
		s.SetPprof(step.on)
		if got := get(step.path); got != step.want {
			t.Errorf("pprof=%v GET %s = %d, want %d", step.on, step.path, got, step.want)
		}
	}
}
