// Package view is nodenet's one in-process picture of the cluster: shared
// informers for every kind a component reads, listers to read them, and
// "something changed" signals. Components never get objects pushed to them;
// they are told to look again (level-triggered).
package view

import (
	"context"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	networkinglisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"
)

// Kind names an object kind the view watches.
type Kind string

// The kinds the view watches.
const (
	Nodes           Kind = "Node"
	Namespaces      Kind = "Namespace"
	Pods            Kind = "Pod"
	Services        Kind = "Service"
	EndpointSlices  Kind = "EndpointSlice"
	NetworkPolicies Kind = "NetworkPolicy"
	Ingresses       Kind = "Ingress"
	IngressClasses  Kind = "IngressClass"
	Secrets         Kind = "Secret"
)

// AllKinds lists every kind, in display order.
var AllKinds = []Kind{Nodes, Namespaces, Pods, Services, EndpointSlices, NetworkPolicies, Ingresses, IngressClasses, Secrets}

// TLSSecretSelector limits the Secret informer to TLS secrets: nodenet never
// needs (or caches) any other secret.
const TLSSecretSelector = "type=" + string(corev1.SecretTypeTLS)

// View holds the informers and their listers.
type View struct {
	Nodes           corelisters.NodeLister
	Namespaces      corelisters.NamespaceLister
	Pods            corelisters.PodLister
	Services        corelisters.ServiceLister
	EndpointSlices  discoverylisters.EndpointSliceLister
	NetworkPolicies networkinglisters.NetworkPolicyLister
	Ingresses       networkinglisters.IngressLister
	IngressClasses  networkinglisters.IngressClassLister
	Secrets         corelisters.SecretLister

	log       *slog.Logger
	factory   informers.SharedInformerFactory
	secrets   informers.SharedInformerFactory
	informers map[Kind]cache.SharedIndexInformer
	health    *Health

	mu   sync.Mutex        // guards subs
	subs map[Kind][]func() // called on every add, update and delete of that kind
}

// New builds the informers; nothing runs until Start.
func New(client kubernetes.Interface, resync time.Duration, health *Health, log *slog.Logger) *View {
	strip := informers.WithTransform(stripManagedFields)
	f := informers.NewSharedInformerFactoryWithOptions(client, resync, strip)
	sf := informers.NewSharedInformerFactoryWithOptions(client, resync, strip,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.FieldSelector = TLSSecretSelector }))
	v := &View{
		Nodes:           f.Core().V1().Nodes().Lister(),
		Namespaces:      f.Core().V1().Namespaces().Lister(),
		Pods:            f.Core().V1().Pods().Lister(),
		Services:        f.Core().V1().Services().Lister(),
		EndpointSlices:  f.Discovery().V1().EndpointSlices().Lister(),
		NetworkPolicies: f.Networking().V1().NetworkPolicies().Lister(),
		Ingresses:       f.Networking().V1().Ingresses().Lister(),
		IngressClasses:  f.Networking().V1().IngressClasses().Lister(),
		Secrets:         sf.Core().V1().Secrets().Lister(),
		log:             log,
		factory:         f,
		secrets:         sf,
		health:          health,
		subs:            map[Kind][]func(){},
		informers: map[Kind]cache.SharedIndexInformer{
			Nodes:           f.Core().V1().Nodes().Informer(),
			Namespaces:      f.Core().V1().Namespaces().Informer(),
			Pods:            f.Core().V1().Pods().Informer(),
			Services:        f.Core().V1().Services().Informer(),
			EndpointSlices:  f.Discovery().V1().EndpointSlices().Informer(),
			NetworkPolicies: f.Networking().V1().NetworkPolicies().Informer(),
			Ingresses:       f.Networking().V1().Ingresses().Informer(),
			IngressClasses:  f.Networking().V1().IngressClasses().Informer(),
			Secrets:         sf.Core().V1().Secrets().Informer(),
		},
	}
	for kind, inf := range v.informers {
		kind := kind
		_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { v.notify(kind) },
			UpdateFunc: func(any, any) { v.notify(kind) },
			DeleteFunc: func(any) { v.notify(kind) },
		})
		_ = inf.SetWatchErrorHandlerWithContext(func(ctx context.Context, r *cache.Reflector, err error) {
			health.WatchFailed(kind, err)
			cache.DefaultWatchErrorHandler(ctx, r, err)
		})
	}
	return v
}

// stripManagedFields drops server-side-apply bookkeeping nobody here reads;
// it is often the larger part of an object.
func stripManagedFields(obj any) (any, error) {
	if m, ok := obj.(metav1.ObjectMetaAccessor); ok {
		m.GetObjectMeta().SetManagedFields(nil)
	}
	return obj, nil
}

// Subscribe calls fn on every change of any of kinds. fn must not block: it
// should only mark its component dirty.
func (v *View) Subscribe(fn func(), kinds ...Kind) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, k := range kinds {
		v.subs[k] = append(v.subs[k], fn)
	}
}

func (v *View) notify(kind Kind) {
	v.health.Contact()
	v.mu.Lock()
	subs := v.subs[kind]
	v.mu.Unlock()
	for _, fn := range subs {
		fn()
	}
}

// Start runs the informers until ctx is done.
func (v *View) Start(ctx context.Context) {
	v.factory.Start(ctx.Done())
	v.secrets.Start(ctx.Done())
}

// WaitForSync blocks until every informer has synced or ctx is done.
func (v *View) WaitForSync(ctx context.Context) bool {
	syncs := make([]cache.InformerSynced, 0, len(v.informers))
	for _, inf := range v.informers {
		syncs = append(syncs, inf.HasSynced)
	}
	return cache.WaitForCacheSync(ctx.Done(), syncs...)
}

// KindState is one informer's state.
type KindState struct {
	Kind    Kind `json:"kind"`
	Synced  bool `json:"synced"`
	Objects int  `json:"objects"`
}

// State returns every informer's sync state and object count.
func (v *View) State() []KindState {
	out := make([]KindState, 0, len(AllKinds))
	for _, k := range AllKinds {
		inf := v.informers[k]
		out = append(out, KindState{Kind: k, Synced: inf.HasSynced(), Objects: len(inf.GetStore().ListKeys())})
	}
	return out
}
