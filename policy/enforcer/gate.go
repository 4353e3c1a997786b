package enforcer

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// admitTimeout bounds Admit when the caller's context has no deadline; the
// runtime retries a failed ADD.
const admitTimeout = 30 * time.Second

// admitPoll is how often Admit looks for a pod the informer has not
// delivered yet.
const admitPoll = 5 * time.Millisecond

// SetTrigger gives the component the function that requests a sync (its
// runner's Run). Without one, Admit cannot ask for a sync and only waits.
func (c *Component) SetTrigger(run func()) {
	c.mu.Lock()
	c.trigger = run
	c.mu.Unlock()
}

// Admit returns once pod namespace/name, whose interface and addresses the
// CNI ADD just set up, is covered by the rules in the kernel: at once when
// no NetworkPolicy can select it, else after a sync that started after
// the call succeeded. This is what keeps a new pod from being reported
// ready (and from serving) before the policies that isolate it are
// enforced. A pod unknown to the view in a namespace with policies is
// waited for: its labels decide.
func (c *Component) Admit(ctx context.Context, namespace, name string) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, admitTimeout)
		defer cancel()
	}
	for {
		nps, err := c.view.NetworkPolicies.NetworkPolicies(namespace).List(labels.Everything())
		if err != nil {
			return fmt.Errorf("policy: admit %s/%s: %w", namespace, name, err)
		}
		if len(nps) == 0 {
			return nil
		}
		pod, err := c.view.Pods.Pods(namespace).Get(name)
		if err == nil {
			if !selectedByAny(nps, pod) {
				return nil
			}
			break
		}
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("policy: admit %s/%s: %w", namespace, name, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("policy: pod %s/%s is not known yet and NetworkPolicies in %s may select it: %w",
				namespace, name, namespace, ctx.Err())
		case <-time.After(admitPoll):
		}
	}
	if err := c.waitSync(ctx); err != nil {
		return fmt.Errorf("policy: rules for pod %s/%s not in place: %w", namespace, name, err)
	}
	return nil
}

// selectedByAny reports whether one of nps selects pod. A selector that
// does not parse counts as selecting: waiting for one sync is harmless.
func selectedByAny(nps []*networkingv1.NetworkPolicy, pod *corev1.Pod) bool {
	for _, np := range nps {
		sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err != nil || sel.Matches(labels.Set(pod.Labels)) {
			return true
		}
	}
	return false
}

// waitSync requests a sync and waits for one that started after the
// request to succeed.
func (c *Component) waitSync(ctx context.Context) error {
	want := c.requested.Add(1)
	c.mu.Lock()
	trigger := c.trigger
	c.mu.Unlock()
	if trigger != nil {
		trigger()
	}
	for {
		c.mu.Lock()
		applied, done := c.applied, c.synced
		c.mu.Unlock()
		if applied >= want {
			return nil
		}
		select {
		case <-done:
		case <-ctx.Done():
			return errors.Join(ctx.Err(), c.lastErr())
		}
	}
}

// lastErr is the error of the latest failed sync, if the latest failed.
func (c *Component) lastErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.syncErr
}

// syncStarted returns the request generation a sync starting now covers.
func (c *Component) syncStarted() uint64 { return c.requested.Load() }

// syncEnded records a sync's outcome and wakes the waiters.
func (c *Component) syncEnded(gen uint64, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.syncErr = err
	if err != nil {
		return
	}
	c.applied = max(c.applied, gen)
	close(c.synced)
	c.synced = make(chan struct{})
}

// localAddrs returns IPAM's addresses of this node's pods by
// "namespace/name" (nil without a source).
func (c *Component) localAddrs() map[string][]netip.Addr {
	if c.opts.LocalAddrs == nil {
		return nil
	}
	return c.opts.LocalAddrs()
}
