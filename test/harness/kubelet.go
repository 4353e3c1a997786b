package harness

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containernetworking/cni/libcni"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
	"k8s.io/client-go/util/workqueue"
)

// Kubelet stands in for a node's kubelet and container runtime, as far as
// networking goes: it watches the Pods bound to the node, gives each a
// network namespace wired by the node's CNI config (plugins run inside the
// node namespace), runs a small workload on the declared container ports and
// reports the pod Running and Ready, so Services get endpoints. Deleted pods
// are torn down (CNI DEL) and finalized, as kubelet does.
//
// Stop it before the node's namespace goes: CNI DEL runs in there.
type Kubelet struct {
	LogPath string // the stand-in's log (plugin stderr, setups, teardowns, errors)

	n       *Node
	cni     *libcni.CNIConfig
	log     *log.Logger
	logFile *os.File
	factory informers.SharedInformerFactory
	pods    corelisters.PodLister
	queue   workqueue.TypedDelayingInterface[string] // namespace/name keys
	ctx     context.Context                          // cancelled by Stop
	cancel  context.CancelFunc
	workers sync.WaitGroup

	stopOnce sync.Once
	stopErr  error

	mu    sync.Mutex           // guards state and every podState in it
	state map[string]*podState // by namespace/name

	afterAdd atomic.Pointer[func(namespace, name string, ips []netip.Addr)]
}

// SetAfterAdd installs fn, run after each successful CNI ADD and before the
// pod's workload starts or its status is reported: the moment a runtime
// starts the containers. nil removes it.
func (k *Kubelet) SetAfterAdd(fn func(namespace, name string, ips []netip.Addr)) {
	if fn == nil {
		k.afterAdd.Store(nil)
		return
	}
	k.afterAdd.Store(&fn)
}

// podState is what the stand-in knows about one pod. Only the worker that
// holds the pod's key changes it (the work queue never hands a key to two
// workers at once), under Kubelet.mu so readers see it whole.
type podState struct {
	sb       *sandbox // nil while no sandbox is up
	reported bool     // sb's status was accepted by the API server
	lastErr  error    // last setup error, cleared when a sandbox comes up
	failures int      // setup failures in a row, for the backoff
	retryAt  time.Time
}

const (
	kubeletWorkers = 4
	backoffBase    = time.Second
	backoffMax     = 5 * time.Second
	notReadyPoll   = 200 * time.Millisecond // waiting for the CNI config
)

// StartKubelet starts a kubelet stand-in for node n, like a container runtime
// + kubelet would behave for networking. It returns once its pod cache has
// synced.
func (n *Node) StartKubelet(ctx context.Context) (*Kubelet, error) {
	logPath := filepath.Join(n.Dir, "kubelet.log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("kubelet %s: %w", n.Name, err)
	}
	cacheDir := filepath.Join(n.Dir, "kubelet-cni-cache")
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		f.Close()
		return nil, fmt.Errorf("kubelet %s: %w", n.Name, err)
	}
	logger := log.New(f, "", log.LstdFlags|log.Lmicroseconds)
	selector := fields.OneTermEqualSelector("spec.nodeName", n.Name).String()
	k := &Kubelet{
		LogPath: logPath,
		n:       n,
		cni:     libcni.NewCNIConfigWithCacheDir([]string{n.CNIBinDir}, cacheDir, &nodeExec{ns: n.NS, log: logger}),
		log:     logger,
		logFile: f,
		factory: informers.NewSharedInformerFactoryWithOptions(n.cp.Client, 0,
			informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.FieldSelector = selector })),
		queue: workqueue.NewTypedDelayingQueueWithConfig(workqueue.TypedDelayingQueueConfig[string]{Name: "kubelet-" + n.Name}),
		state: map[string]*podState{},
	}
	k.ctx, k.cancel = context.WithCancel(context.Background())
	podInformer := k.factory.Core().V1().Pods()
	k.pods = podInformer.Lister()
	// Handlers only name the pod; sync reads the current state itself.
	if _, err := podInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    k.enqueue,
		UpdateFunc: func(_, obj any) { k.enqueue(obj) },
		DeleteFunc: k.enqueue,
	}); err != nil {
		k.Stop()
		return nil, fmt.Errorf("kubelet %s: %w", n.Name, err)
	}
	k.factory.Start(k.ctx.Done())
	for typ, ok := range k.factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			k.Stop()
			return nil, fmt.Errorf("kubelet %s: %v cache did not sync: %w", n.Name, typ, ctx.Err())
		}
	}
	for range kubeletWorkers {
		k.workers.Add(1)
		go k.worker()
	}
	n.kubelet = k
	k.log.Printf("kubelet for node %s started (pods with %s)", n.Name, selector)
	return k, nil
}

func (k *Kubelet) enqueue(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		k.log.Printf("event without a key: %v", err)
		return
	}
	k.queue.Add(key)
}

func (k *Kubelet) worker() {
	defer k.workers.Done()
	for {
		key, quit := k.queue.Get()
		if quit {
			return
		}
		k.sync(key)
		k.queue.Done(key)
	}
}

// sync brings one pod's sandbox to what the pod's current state asks for.
// It requeues the key itself when it has to try again.
func (k *Kubelet) sync(key string) {
	if k.ctx.Err() != nil {
		return // stopping: Stop tears down what is left
	}
	namespace, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		k.log.Printf("bad key %q: %v", key, err)
		return
	}
	pod, err := k.pods.Pods(namespace).Get(name)
	if apierrors.IsNotFound(err) {
		pod = nil
	} else if err != nil {
		k.log.Printf("pod %s: read cache: %v", key, err)
		k.queue.AddAfter(key, backoffBase)
		return
	}
	st := k.podState(key)

	if pod == nil || pod.DeletionTimestamp != nil || terminal(pod) {
		k.killSandbox(key, st)
		switch {
		case pod == nil:
			k.mu.Lock()
			delete(k.state, key)
			k.mu.Unlock()
		case pod.DeletionTimestamp != nil:
			if err := k.finalize(pod); err != nil {
				k.log.Printf("pod %s: finalize deletion: %v", key, err)
				k.queue.AddAfter(key, backoffBase)
			}
		}
		return
	}
	if sb := k.sandboxOf(st); sb != nil && sb.UID != pod.UID {
		k.log.Printf("pod %s: replaced (uid %s -> %s)", key, sb.UID, pod.UID)
		k.killSandbox(key, st)
	}
	sb := k.sandboxOf(st)
	if sb == nil {
		if wait := time.Until(st.retryAt); wait > 0 {
			k.queue.AddAfter(key, wait)
			return
		}
		var err error
		if sb, err = k.setup(pod); err != nil {
			k.setupFailed(key, st, err)
			return
		}
		k.mu.Lock()
		st.sb, st.reported, st.lastErr, st.failures, st.retryAt = sb, false, nil, 0, time.Time{}
		k.mu.Unlock()
	}
	if !statusCurrent(pod, sb) {
		if err := k.reportStatus(sb); err != nil {
			if apierrors.IsNotFound(err) {
				return // the delete event follows
			}
			k.log.Printf("pod %s: report status: %v", key, err)
			k.queue.AddAfter(key, backoffBase)
			return
		}
	}
	k.mu.Lock()
	st.reported = true
	k.mu.Unlock()
}

// setupFailed records err and schedules the next try: 1s, 2s, 4s, then every
// 5s, as kubelet backs off sandbox creation; never gives up while the pod is
// there. Waiting for the CNI config is no failure: kubelet just waits for
// NetworkReady.
func (k *Kubelet) setupFailed(key string, st *podState, err error) {
	notReady := errors.Is(err, errNetworkNotReady)
	delay := notReadyPoll
	k.mu.Lock()
	quiet := notReady && errors.Is(st.lastErr, errNetworkNotReady) // said so already
	st.lastErr = err
	if !notReady {
		st.failures++
		delay = min(backoffBase<<min(st.failures-1, 8), backoffMax)
		st.retryAt = time.Now().Add(delay)
	}
	failures := st.failures
	k.mu.Unlock()
	if !quiet {
		k.log.Printf("pod %s: sandbox setup failed (%d in a row, retry in %s): %v", key, failures, delay, err)
	}
	k.queue.AddAfter(key, delay)
}

func (k *Kubelet) killSandbox(key string, st *podState) {
	k.mu.Lock()
	sb := st.sb
	st.sb, st.reported = nil, false
	k.mu.Unlock()
	if sb == nil {
		return
	}
	if err := k.teardown(sb); err != nil {
		k.mu.Lock()
		st.lastErr = err
		k.mu.Unlock()
	}
}

// finalize removes the Pod object once its sandbox is gone, as kubelet does
// after a graceful deletion: grace period 0, only this pod (UID precondition).
func (k *Kubelet) finalize(pod *corev1.Pod) error {
	if g := pod.DeletionGracePeriodSeconds; g != nil && *g == 0 {
		return nil // already finalized; only finalizers hold it
	}
	zero := int64(0)
	err := k.n.cp.Client.CoreV1().Pods(pod.Namespace).Delete(k.ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: &zero,
		Preconditions:      metav1.NewUIDPreconditions(string(pod.UID)),
	})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil // gone, or a new pod of that name
	}
	return err
}

func terminal(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
}

func (k *Kubelet) podState(key string) *podState {
	k.mu.Lock()
	defer k.mu.Unlock()
	st := k.state[key]
	if st == nil {
		st = &podState{}
		k.state[key] = st
	}
	return st
}

func (k *Kubelet) sandboxOf(st *podState) *sandbox {
	k.mu.Lock()
	defer k.mu.Unlock()
	return st.sb
}

// Stop tears down every sandbox (CNI DEL, then the namespace) without writing
// to the API server. It waits for busy workers, is idempotent, and once it
// returns no goroutine or namespace of the stand-in is left.
func (k *Kubelet) Stop() error {
	k.stopOnce.Do(func() {
		k.cancel()
		k.queue.ShutDown()
		k.workers.Wait()
		k.factory.Shutdown()
		k.mu.Lock()
		var sbs []*sandbox
		for _, st := range k.state {
			if st.sb != nil {
				sbs = append(sbs, st.sb)
				st.sb = nil
			}
		}
		k.mu.Unlock()
		errs := make([]error, len(sbs))
		var wg sync.WaitGroup
		for i, sb := range sbs {
			wg.Go(func() { errs[i] = k.teardown(sb) })
		}
		wg.Wait()
		k.stopErr = errors.Join(errs...)
		if k.stopErr != nil {
			k.stopErr = fmt.Errorf("stop kubelet %s: %w", k.n.Name, k.stopErr)
		}
		k.log.Printf("kubelet stopped (%d sandboxes torn down, err=%v)", len(sbs), k.stopErr)
		k.logFile.Close()
	})
	return k.stopErr
}

// Sandbox returns the pod's sandbox if one is up.
func (k *Kubelet) Sandbox(namespace, name string) (*Sandbox, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	st := k.state[namespace+"/"+name]
	if st == nil || st.sb == nil {
		return nil, false
	}
	s := st.sb.Sandbox
	return &s, true
}

// WaitRunning waits until the pod's sandbox is up and its Running status was
// reported to the API server.
func (k *Kubelet) WaitRunning(ctx context.Context, namespace, name string) (*Sandbox, error) {
	key := namespace + "/" + name
	var sb Sandbox
	err := wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(context.Context) (bool, error) {
		if k.ctx.Err() != nil {
			return false, errors.New("kubelet stopped")
		}
		k.mu.Lock()
		defer k.mu.Unlock()
		st := k.state[key]
		if st == nil || st.sb == nil || !st.reported {
			return false, nil
		}
		sb = st.sb.Sandbox
		return true, nil
	})
	if err != nil {
		return nil, fmt.Errorf("pod %s not running on %s: %w (last setup error: %v)\n%s",
			key, k.n.Name, err, k.LastError(namespace, name), k.Tail(20))
	}
	return &sb, nil
}

// Check runs CNI CHECK for the pod's sandbox, with the config and runtime
// arguments of its ADD.
func (k *Kubelet) Check(ctx context.Context, namespace, name string) error {
	k.mu.Lock()
	var sb *sandbox
	if st := k.state[namespace+"/"+name]; st != nil {
		sb = st.sb
	}
	k.mu.Unlock()
	if sb == nil {
		return fmt.Errorf("pod %s/%s has no sandbox on %s", namespace, name, k.n.Name)
	}
	if sb.hostNetwork {
		return nil
	}
	if err := k.cni.CheckNetworkList(ctx, sb.list, sb.rt); err != nil {
		return fmt.Errorf("CNI CHECK pod %s/%s: %w", namespace, name, err)
	}
	return nil
}

// LastError is the pod's last sandbox setup (or teardown) error, nil if none
// or once a sandbox came up.
func (k *Kubelet) LastError(namespace, name string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if st := k.state[namespace+"/"+name]; st != nil {
		return st.lastErr
	}
	return nil
}

// Tail returns the last n lines of the stand-in's log.
func (k *Kubelet) Tail(n int) string {
	b, _ := os.ReadFile(k.LogPath)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// reportStatus tells the API server the pod runs, as kubelet's status
// manager would: on the latest object, retried on conflicts.
func (k *Kubelet) reportStatus(sb *sandbox) error {
	pods := k.n.cp.Client.CoreV1().Pods(sb.Namespace)
	return retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		pod, err := pods.Get(k.ctx, sb.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if pod.UID != sb.UID {
			return apierrors.NewNotFound(corev1.Resource("pods"), sb.Name) // replaced: its own events follow
		}
		setRunning(pod, sb, k.n.IP.String())
		_, err = pods.UpdateStatus(k.ctx, pod, metav1.UpdateOptions{})
		return err
	})
}
