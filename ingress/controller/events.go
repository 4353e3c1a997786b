package controller

import (
	"log/slog"
	"sync"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/nodenet/nodenet/daemon/view"
	"github.com/nodenet/nodenet/ingress/routes"
)

// eventSource names nodenet's ingress in Events.
const eventSource = "nodenet-ingress"

// events turns problems into Warning Events. Only the status leader
// reports, so N nodes do not repeat each Event N times; each distinct
// problem is reported once while it lasts.
type events struct {
	log         *slog.Logger
	broadcaster record.EventBroadcaster
	recorder    record.EventRecorder
	leader      atomic.Bool

	mu   sync.Mutex // guards sent and last
	sent map[string]bool
	last func() // repeats the last report, for a new leader
}

func newEvents(client kubernetes.Interface, node string, log *slog.Logger) *events {
	e := &events{log: log, sent: map[string]bool{}}
	if client != nil {
		e.broadcaster = record.NewBroadcaster()
		e.broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
		e.recorder = e.broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: eventSource, Host: node})
	}
	return e
}

func (e *events) stop() {
	if e.broadcaster != nil {
		e.broadcaster.Shutdown()
	}
}

// setLeader turns reporting on or off; a new leader reports the current
// problems afresh at once.
func (e *events) setLeader(on bool) {
	e.leader.Store(on)
	e.mu.Lock()
	e.sent = map[string]bool{}
	last := e.last
	e.mu.Unlock()
	if on && last != nil {
		last()
	}
}

// report sends a Warning for each problem not reported yet, and forgets
// the problems that went away, so they are reported again if they return.
func (e *events) report(v *view.View, problems []routes.Problem, badCerts map[string]error, secrets map[string]*corev1.Secret) {
	e.mu.Lock()
	e.last = func() { e.report(v, problems, badCerts, secrets) }
	e.mu.Unlock()
	type pending struct {
		obj            runtime.Object
		uid            string // a re-created object is reported again
		reason, msg    string
		kind, ns, name string
	}
	var todo []pending
	for _, p := range problems {
		ing, err := v.Ingresses.Ingresses(p.Namespace).Get(p.Name)
		if err != nil {
			continue
		}
		todo = append(todo, pending{ing, string(ing.UID), p.Reason, p.Message, "Ingress", p.Namespace, p.Name})
	}
	for key, err := range badCerts {
		if s := secrets[key]; s != nil {
			todo = append(todo, pending{s, string(s.UID), "InvalidCertificate", err.Error() + "; the default certificate is served instead", "Secret", s.Namespace, s.Name})
		}
	}
	leader := e.leader.Load() && e.recorder != nil
	e.mu.Lock()
	defer e.mu.Unlock()
	now := map[string]bool{}
	for _, p := range todo {
		k := p.kind + "/" + p.ns + "/" + p.name + "/" + p.uid + "/" + p.reason + "/" + p.msg
		now[k] = true
		if e.sent[k] {
			continue
		}
		e.log.Warn("ingress problem", "kind", p.kind, "namespace", p.ns, "name", p.name, "reason", p.reason, "problem", p.msg)
		if leader {
			e.recorder.Event(p.obj, corev1.EventTypeWarning, p.reason, p.msg)
		}
	}
	e.sent = now
}
