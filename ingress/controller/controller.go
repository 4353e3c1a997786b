// Package controller is the daemon's "ingress" component: on any change of
// Ingresses, IngressClasses, Services, EndpointSlices, TLS Secrets or Nodes
// it compiles a new route table (ingress/routes), swaps it into the proxy
// (ingress/proxy) and the certificates into the TLS store, and makes sure
// the listeners (ingress/server) run. Problems with Ingresses become
// Warning Events and one node, elected through a Lease, writes the
// Ingresses' status.
package controller

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"

	corev1 "k8s.io/api/core/v1"

	"github.com/nodenet/nodenet/daemon/config"
	"github.com/nodenet/nodenet/daemon/view"
	"github.com/nodenet/nodenet/ingress/proxy"
	"github.com/nodenet/nodenet/ingress/routes"
	"github.com/nodenet/nodenet/ingress/server"
	"github.com/nodenet/nodenet/ingress/tlsstore"
)

// Options configure the component.
type Options struct {
	Node   string
	Config config.Ingress
	// Client writes Events and Ingress status; nil: neither is written.
	Client   kubernetes.Interface
	Registry prometheus.Registerer
	Log      *slog.Logger
	// NewLogger builds a logger like Log writing to w; with it, access log
	// lines go to stderr in batches (one write per burst). Nil: through Log.
	NewLogger func(w io.Writer) *slog.Logger
}

// Component is the ingress controller of one node.
type Component struct {
	view    *view.View
	node    string
	client  kubernetes.Interface
	log     *slog.Logger
	metrics *proxy.Metrics
	handler *proxy.Handler
	certs   *tlsstore.Store
	server  *server.Server
	events  *events
	status  *statusWriter

	mu        sync.Mutex // guards the fields below
	cfg       config.Ingress
	listening bool // listeners started (after the first sync)
	listenErr string
	problems  int
	badCerts  map[string]error
}

// New builds the component; listeners open on its first sync.
func New(v *view.View, o Options) (*Component, error) {
	log := o.Log.With("component", "ingress")
	c := &Component{view: v, node: o.Node, client: o.Client, log: log, cfg: o.Config,
		metrics: proxy.NewMetrics(o.Registry), certs: tlsstore.New()}
	if err := c.certs.SetDefault(o.Config.DefaultCertificate, o.Config.DefaultKey); err != nil {
		return nil, err
	}
	hopts, err := handlerOptions(o.Config)
	if err != nil {
		return nil, err
	}
	c.handler = proxy.New(hopts, c.metrics, log)
	if o.NewLogger != nil {
		lb := &proxy.LineBuffer{W: os.Stderr}
		c.handler.UseAccessLogger(o.NewLogger(lb).With("component", "ingress"), lb.Flush)
	}
	c.server = server.New(c.handler, c.certs.TLSConfig(), c.connState, log)
	c.events = newEvents(o.Client, o.Node, log)
	c.status = newStatusWriter(v, o.Client, o.Node, log)
	c.status.events = c.events
	c.status.setConfig(o.Config)
	return c, nil
}

func handlerOptions(cfg config.Ingress) (proxy.Options, error) {
	body, err := config.ParseSize(cfg.MaxBodySize)
	if err != nil {
		return proxy.Options{}, fmt.Errorf("ingress: max_body_size: %w", err)
	}
	port := 0
	if _, p, err := net.SplitHostPort(cfg.HTTPSListen); err == nil {
		port, _ = strconv.Atoi(p)
	}
	return proxy.Options{LeastRequests: cfg.LoadBalancing == config.LeastRequests, MaxBodySize: body,
		EjectionTime: cfg.EjectionTime, AccessLog: cfg.AccessLog, HTTPSPort: port}, nil
}

func serverOptions(cfg config.Ingress) server.Options {
	o := server.Options{HTTPListen: cfg.HTTPListen, HTTPSListen: cfg.HTTPSListen, ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout: cfg.IdleTimeout, MaxHeaderBytes: cfg.MaxHeaderBytes}
	if !cfg.Enabled {
		o.HTTPListen, o.HTTPSListen = "", ""
	}
	return o
}

func (c *Component) connState(_ net.Conn, s http.ConnState) {
	switch s {
	case http.StateNew:
		c.metrics.Active.Inc()
	case http.StateClosed, http.StateHijacked:
		c.metrics.Active.Dec()
	}
}

// Name implements the daemon's Component.
func (c *Component) Name() string { return "ingress" }

// Watches implements the daemon's Component.
func (c *Component) Watches() []view.Kind {
	return []view.Kind{view.Ingresses, view.IngressClasses, view.Services, view.EndpointSlices, view.Secrets, view.Nodes}
}

// LiveKeys implements the daemon's Component: every ingress key applies live.
func (c *Component) LiveKeys() []string { return []string{"ingress"} }

// Reconfigure implements the daemon's Component.
func (c *Component) Reconfigure(cfg *config.Config) error {
	in := cfg.Ingress
	hopts, err := handlerOptions(in)
	if err != nil {
		return err
	}
	c.mu.Lock()
	old := c.cfg
	c.cfg = in
	listening := c.listening
	c.mu.Unlock()
	c.handler.SetOptions(hopts)
	c.status.setConfig(in)
	var errs []error
	if old.DefaultCertificate != in.DefaultCertificate || old.DefaultKey != in.DefaultKey {
		errs = append(errs, c.certs.SetDefault(in.DefaultCertificate, in.DefaultKey))
	}
	if listening {
		errs = append(errs, c.applyListeners(in))
	}
	return errors.Join(errs...)
}

// Sync compiles the table and swaps it in; the listeners open after the
// first table is in place, so no request is answered from an empty one.
func (c *Component) Sync(ctx context.Context, full bool) error {
	c.mu.Lock()
	cfg := c.cfg
	c.mu.Unlock()
	in, err := c.input(cfg.Enabled)
	if err != nil {
		return fmt.Errorf("ingress: %w", err)
	}
	table, problems := routes.Build(in)
	secrets := map[string]*corev1.Secret{}
	for _, s := range in.Secrets {
		secrets[s.Namespace+"/"+s.Name] = s
	}
	bad := c.certs.Update(table.Certs, func(k string) *corev1.Secret { return secrets[k] })
	c.handler.Swap(table)
	c.events.report(c.view, problems, bad, secrets)
	c.status.kick(table.Served)

	c.mu.Lock()
	c.problems, c.badCerts = len(problems), bad
	listening, listenErr := c.listening, c.listenErr
	c.mu.Unlock()
	// Listeners open once, then are retried on every sync while one
	// could not bind: a taken port must not stop the daemon.
	if !listening || listenErr != "" || full {
		if err := c.applyListeners(cfg); err != nil && !strings.Contains(listenErr, err.Error()) {
			c.log.Error("ingress listener unavailable; retrying on each sync", "err", err)
		}
	}
	c.log.Debug("ingress table swapped", "ingresses", len(table.Served), "routes", len(table.Routes),
		"certificates", c.certs.Count(), "problems", len(problems))
	return nil
}

func (c *Component) applyListeners(cfg config.Ingress) error {
	err := c.server.Apply(serverOptions(cfg))
	c.mu.Lock()
	c.listening = true
	c.listenErr = ""
	if err != nil {
		c.listenErr = err.Error()
	}
	c.mu.Unlock()
	return err
}

func (c *Component) input(enabled bool) (routes.Input, error) {
	if !enabled {
		return routes.Input{}, nil
	}
	var in routes.Input
	var err error
	if in.Ingresses, err = c.view.Ingresses.List(labels.Everything()); err != nil {
		return in, err
	}
	if in.Classes, err = c.view.IngressClasses.List(labels.Everything()); err != nil {
		return in, err
	}
	if in.Services, err = c.view.Services.List(labels.Everything()); err != nil {
		return in, err
	}
	if in.Slices, err = c.view.EndpointSlices.List(labels.Everything()); err != nil {
		return in, err
	}
	if in.Secrets, err = c.view.Secrets.List(labels.Everything()); err != nil {
		return in, err
	}
	return in, nil
}

// Run elects the status writer until ctx ends.
func (c *Component) Run(ctx context.Context) { c.status.run(ctx) }

// Close stops the listeners, letting requests in flight finish until ctx ends.
func (c *Component) Close(ctx context.Context) error {
	err := c.server.Shutdown(ctx)
	c.handler.Close()
	c.events.stop()
	return err
}

// Handler is the proxy, for tests that serve it themselves.
func (c *Component) Handler() http.Handler { return c.handler }

// Addrs returns the bound listener addresses ("" when not listening).
func (c *Component) Addrs() (httpAddr, httpsAddr string) { return c.server.Addrs() }

// Details implements the daemon's Component.
func (c *Component) Details() map[string]string {
	c.mu.Lock()
	cfg, problems, listenErr, bad := c.cfg, c.problems, c.listenErr, c.badCerts
	c.mu.Unlock()
	t := c.handler.Table()
	h, s := c.server.Addrs()
	d := map[string]string{
		"enabled":      strconv.FormatBool(cfg.Enabled),
		"listeners":    listeners(h, s),
		"ingresses":    strconv.Itoa(len(t.Served)),
		"routes":       strconv.Itoa(len(t.Routes)),
		"certificates": fmt.Sprintf("%d hosts with their own certificate; default: %s", c.certs.Count(), defaultCert(cfg)),
		"problems":     strconv.Itoa(problems),
		"status":       c.status.describe(),
	}
	if listenErr != "" {
		d["listener_error"] = listenErr
	}
	if len(bad) > 0 {
		var keys []string
		for k := range bad {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		d["invalid_certificates"] = strings.Join(keys, ", ")
	}
	return d
}

func listeners(h, s string) string {
	var out []string
	if h != "" {
		out = append(out, "http "+h)
	}
	if s != "" {
		out = append(out, "https "+s)
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}

func defaultCert(cfg config.Ingress) string {
	if cfg.DefaultCertificate == "" {
		return "self-signed"
	}
	return cfg.DefaultCertificate
}
