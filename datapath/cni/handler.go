package cni

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/prometheus/client_golang/prometheus"
)

// Backend does the work behind each verb; the pod network manager
// implements it.
type Backend interface {
	Add(ctx context.Context, p *Parsed) (*types100.Result, error)
	Del(ctx context.Context, p *Parsed) error
	Check(ctx context.Context, p *Parsed) error
	GC(ctx context.Context, p *Parsed, valid []types.GCAttachment) error
	Status(ctx context.Context) error
}

// Handler serves Route on the control socket.
type Handler struct {
	backend  Backend
	log      *slog.Logger
	duration *prometheus.HistogramVec
}

// NewHandler registers the request metrics on reg.
func NewHandler(b Backend, reg prometheus.Registerer, log *slog.Logger) *Handler {
	h := &Handler{backend: b, log: log, duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "nodenet_cni_request_duration_seconds",
		Help:    "Time the daemon took to serve a CNI request, by command and result.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	}, []string{"command", "result"})}
	reg.MustRegister(h.duration)
	return h
}

// ServeHTTP decodes one forwarded request and answers with a Response. The
// HTTP status is 200 whenever a Response is written: CNI errors travel in it.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var req Request
	body, err := io.ReadAll(io.LimitReader(r.Body, 2*maxStdin))
	if err == nil {
		err = json.Unmarshal(body, &req)
	}
	var resp Response
	if err != nil {
		resp.Error = types.NewError(types.ErrDecodingFailure, "decode forwarded request", err.Error())
	} else {
		resp = h.Serve(r.Context(), &req)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

// Serve runs one request.
func (h *Handler) Serve(ctx context.Context, req *Request) Response {
	start := time.Now()
	resp := h.serve(ctx, req)
	outcome := "ok"
	if resp.Error != nil {
		outcome = "error"
		h.log.Warn("CNI request failed", "command", req.Command, "container", req.ContainerID,
			"ifname", req.IfName, "code", resp.Error.Code, "msg", resp.Error.Msg, "details", resp.Error.Details)
	} else {
		h.log.Debug("CNI request", "command", req.Command, "container", req.ContainerID, "elapsed", time.Since(start))
	}
	// Label values come from a fixed set: a malformed request must not be
	// able to create series (or panic the registry with invalid UTF-8).
	cmd := req.Command
	if _, known := commands[cmd]; !known {
		cmd = "unknown"
	}
	h.duration.WithLabelValues(cmd, outcome).Observe(time.Since(start).Seconds())
	return resp
}

func (h *Handler) serve(ctx context.Context, req *Request) Response {
	p, err := Parse(req)
	if err != nil {
		return Response{Error: errorFor(req.Command, err)}
	}
	switch p.Command {
	case "ADD":
		res, err := h.backend.Add(ctx, p)
		if err != nil {
			return Response{Error: errorFor("ADD", err)}
		}
		res.CNIVersion = types100.ImplementedSpecVersion
		out, err := res.GetAsVersion(p.Conf.CNIVersion)
		if err != nil {
			return Response{Error: types.NewError(types.ErrIncompatibleCNIVersion, "convert result", err.Error())}
		}
		raw, err := json.Marshal(out)
		if err != nil {
			return Response{Error: types.NewError(types.ErrInternal, "encode result", err.Error())}
		}
		return Response{Result: raw}
	case "DEL":
		err = h.backend.Del(ctx, p)
	case "CHECK":
		err = h.backend.Check(ctx, p)
	case "GC":
		err = h.backend.GC(ctx, p, p.Conf.ValidAttachments)
	case "STATUS":
		err = h.backend.Status(ctx)
	}
	if err != nil {
		return Response{Error: errorFor(p.Command, err)}
	}
	return Response{}
}
