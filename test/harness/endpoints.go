package harness

import (
	"context"
	"fmt"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// WaitReadyEndpoints waits, up to a minute, until the EndpointSlices of
// Service namespace/svc list exactly want ready endpoints, as
// kube-controller-manager publishes them.
func (cp *ControlPlane) WaitReadyEndpoints(ctx context.Context, namespace, svc string, want int) error {
	got := -1
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		slices, err := cp.Client.DiscoveryV1().EndpointSlices(namespace).List(ctx,
			metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + svc})
		if err != nil {
			return false, nil // the API may be restarting; the deadline decides
		}
		got = 0
		for _, s := range slices.Items {
			for _, ep := range s.Endpoints {
				if ep.Conditions.Ready != nil && *ep.Conditions.Ready {
					got++
				}
			}
		}
		return got == want, nil
	})
	if err != nil {
		return fmt.Errorf("service %s/%s: %d ready endpoints, want %d: %w", namespace, svc, got, want, err)
	}
	return nil
}
