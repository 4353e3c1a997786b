package policy

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/nodenet/nodenet/test/harness"
)

// confWorld is what the conformance cases share: two nodes, the namespaces
// x, y, z and their nine pods, set up once; cases only add policies and
// labels, which reset removes again.
type confWorld struct {
	c    *harness.Cluster
	p    *prober
	node [nPods]int // index into c.Nodes of each pod's node

	// Only the test goroutine uses the fields below.
	last      *truth                     // the matrix the rules last converged to
	addedNS   map[string]map[string]bool // namespace -> label keys a case added
	addedPods map[string]map[string]bool // pod key -> label keys a case added
	converged []time.Duration            // per checked step, until the first agreeing round
}

// newConfWorld starts the nodes, creates the namespaces and pods (round
// robin over the nodes: x/a on the first, x/b on the second, ...) and waits
// until every pod runs. All of it goes when t ends.
func newConfWorld(t *testing.T) *confWorld {
	t.Helper()
	ctx := context.Background()
	w := &confWorld{
		c:         suite.StartCluster(t, "cf", 2, nil),
		p:         &prober{},
		last:      allowAll(),
		addedNS:   map[string]map[string]bool{},
		addedPods: map[string]map[string]bool{},
	}
	// Registered after the cluster's cleanups, so it runs first, while the
	// kubelets still finalize the pods. Waiting for the namespaces to go
	// lets a later test of this package create namespaces of these names.
	t.Cleanup(func() {
		if err := deleteNamespaces(confNamespaces); err != nil {
			t.Error(err)
		}
	})
	for _, ns := range confNamespaces {
		if err := createNamespace(ctx, ns); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, nPods)
	for i, key := range confPods {
		w.node[i] = i % len(w.c.Nodes)
		wg.Go(func() {
			sb, err := w.startPod(ctx, key, w.node[i])
			w.p.pods[i], errs[i] = sb, err
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return w
}

// createNamespace creates ns labelled ns=<name>, waiting while a namespace
// of that name from an earlier test is still being deleted.
func createNamespace(ctx context.Context, name string) error {
	obj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"ns": name}}}
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := suite.CP.Client.CoreV1().Namespaces().Create(ctx, obj, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return false, nil
		}
		return err == nil, err
	})
	if err != nil {
		return fmt.Errorf("create namespace %s: %w", name, err)
	}
	return nil
}

func deleteNamespaces(names []string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nss := suite.CP.Client.CoreV1().Namespaces()
	for _, ns := range names {
		if err := nss.Delete(ctx, ns, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete namespace %s: %w", ns, err)
		}
	}
	err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		for _, ns := range names {
			if _, err := nss.Get(ctx, ns, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("namespaces %v not gone: %w", names, err)
	}
	return nil
}

// confPod serves TCP and UDP on 80 and 81, named serve-<port>-<proto> as
// upstream does. The name "web" means TCP 80 on pods a, TCP 81 on pods b
// and nothing on pods c, so that a named port must be resolved on each
// destination pod.
func confPod(namespace, name, node string) *corev1.Pod {
	var ports []corev1.ContainerPort
	for _, s := range confServices {
		ports = append(ports, corev1.ContainerPort{
			Name: fmt.Sprintf("serve-%d-%s", s.port, strings.ToLower(string(s.proto))), ContainerPort: int32(s.port), Protocol: s.proto})
	}
	switch name {
	case "a":
		ports = append(ports, corev1.ContainerPort{Name: "web", ContainerPort: 80, Protocol: corev1.ProtocolTCP})
	case "b":
		ports = append(ports, corev1.ContainerPort{Name: "web", ContainerPort: 81, Protocol: corev1.ProtocolTCP})
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: map[string]string{"pod": name}},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			TerminationGracePeriodSeconds: new(int64),
			Containers:                    []corev1.Container{{Name: "serve", Image: "none", Ports: ports}},
		},
	}
}

// startPod creates the pod on node and waits until it runs.
func (w *confWorld) startPod(ctx context.Context, key string, node int) (*harness.Sandbox, error) {
	sb, err := w.createPod(ctx, key, node, 50*time.Millisecond)
	if err != nil {
		return nil, err
	}
	return w.waitRunning(ctx, sb, node)
}

// createPod creates the pod on node and returns its sandbox as soon as it
// is up (CNI ADD done, workload serving), polling every poll: the sandbox
// of exactly this pod object, as a pod of the same name may just have been
// deleted.
func (w *confWorld) createPod(ctx context.Context, key string, node int, poll time.Duration) (*harness.Sandbox, error) {
	ns, name, _ := strings.Cut(key, "/")
	n := w.c.Nodes[node].Name
	pod, err := suite.CP.Client.CoreV1().Pods(ns).Create(ctx, confPod(ns, name, n), metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create pod %s: %w", key, err)
	}
	k := w.c.Kubelets[n]
	var sb *harness.Sandbox
	err = wait.PollUntilContextTimeout(ctx, poll, time.Minute, true, func(context.Context) (bool, error) {
		var ok bool
		sb, ok = k.Sandbox(ns, name)
		return ok && sb.UID == pod.UID, nil
	})
	if err != nil {
		return nil, fmt.Errorf("pod %s: no sandbox on %s: %w (last error: %v)", key, n, err, k.LastError(ns, name))
	}
	return sb, nil
}

// waitRunning waits until the kubelet reported sb's pod running.
func (w *confWorld) waitRunning(ctx context.Context, sb *harness.Sandbox, node int) (*harness.Sandbox, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	running, err := w.c.Kubelets[w.c.Nodes[node].Name].WaitRunning(ctx, sb.Namespace, sb.Name)
	if err != nil {
		return nil, err
	}
	if running.UID != sb.UID {
		return nil, fmt.Errorf("pod %s/%s: running sandbox of uid %s, want %s", sb.Namespace, sb.Name, running.UID, sb.UID)
	}
	return running, nil
}

// reset deletes every policy of x, y and z, takes away the labels cases
// added, and waits until everything reaches everything again, so that no
// case can pass on rules a previous one left.
func (w *confWorld) reset(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	for _, ns := range confNamespaces {
		if err := suite.CP.Client.NetworkingV1().NetworkPolicies(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
			t.Fatalf("reset: delete policies of %s: %v", ns, err)
		}
	}
	for ns, keys := range w.addedNS {
		if err := patchLabels(ctx, "", ns, keys); err != nil {
			t.Fatalf("reset: %v", err)
		}
	}
	for key, keys := range w.addedPods {
		ns, name, _ := strings.Cut(key, "/")
		if err := patchLabels(ctx, ns, name, keys); err != nil {
			t.Fatalf("reset: %v", err)
		}
	}
	clear(w.addedNS)
	clear(w.addedPods)
	w.check(t, "reset: no policies, everything reaches everything", allowAll())
}

// patchLabels removes the label keys from a pod (namespace set) or a
// namespace (namespace empty).
func patchLabels(ctx context.Context, namespace, name string, keys map[string]bool) error {
	labels := map[string]any{}
	for k := range keys {
		labels[k] = nil
	}
	return mergeLabels(ctx, namespace, name, labels)
}

// mergeLabels merge-patches labels (a nil value removes the key).
func mergeLabels(ctx context.Context, namespace, name string, labels map[string]any) error {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": labels}})
	if err != nil {
		return err
	}
	if namespace == "" {
		_, err = suite.CP.Client.CoreV1().Namespaces().Patch(ctx, name, "application/merge-patch+json", patch, metav1.PatchOptions{})
	} else {
		_, err = suite.CP.Client.CoreV1().Pods(namespace).Patch(ctx, name, "application/merge-patch+json", patch, metav1.PatchOptions{})
	}
	if err != nil {
		return fmt.Errorf("label %s/%s with %v: %w", namespace, name, labels, err)
	}
	return nil
}
