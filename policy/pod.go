package policy

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"
)

// PodFromCore converts an API pod. ok is false for pods that cannot be
// targets or peers: finished ones (their IP may already be reused),
// hostNetwork ones (their addresses are the node's) and pods without an
// IP yet.
func PodFromCore(p *corev1.Pod) (pod Pod, ok bool) {
	pod = Pod{Namespace: p.Namespace, Name: p.Name, Labels: p.Labels, Node: p.Spec.NodeName, HostNetwork: p.Spec.HostNetwork}
	for _, ip := range p.Status.PodIPs {
		if a, err := netip.ParseAddr(ip.IP); err == nil {
			pod.IPs = append(pod.IPs, a.Unmap())
		}
	}
	for _, c := range p.Spec.Containers {
		pod.Ports = append(pod.Ports, c.Ports...)
	}
	// Sidecars (restartable init containers) serve for the pod's life too.
	for _, c := range p.Spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			pod.Ports = append(pod.Ports, c.Ports...)
		}
	}
	finished := p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
	return pod, !finished && !pod.HostNetwork && len(pod.IPs) > 0
}
