package harness

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// runningConditions are the conditions kubelet sets True on a running, ready
// pod; Ready is what the EndpointSlice controller looks at.
var runningConditions = []corev1.PodConditionType{
	corev1.PodScheduled,
	corev1.PodReadyToStartContainers,
	corev1.PodInitialized,
	corev1.ContainersReady,
	corev1.PodReady,
}

func containerID(sb *sandbox, i int) string {
	return fmt.Sprintf("harness://%s-%d", sb.ContainerID, i)
}

// setRunning edits pod's status in place (other fields, e.g. the immutable
// qosClass, stay) to say the pod runs in sb on a node with hostIP.
func setRunning(pod *corev1.Pod, sb *sandbox, hostIP string) {
	st := &pod.Status
	started := metav1.NewTime(sb.Created)
	st.Phase = corev1.PodRunning
	st.ObservedGeneration = pod.Generation
	st.HostIP, st.HostIPs = hostIP, []corev1.HostIP{{IP: hostIP}}
	st.PodIP, st.PodIPs = sb.IPs[0].String(), nil
	for _, ip := range sb.IPs {
		st.PodIPs = append(st.PodIPs, corev1.PodIP{IP: ip.String()})
	}
	if st.StartTime == nil {
		st.StartTime = &started
	}
	now := metav1.Now()
	for _, t := range runningConditions {
		c := corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: now, ObservedGeneration: pod.Generation}
		replaced := false
		for i := range st.Conditions {
			if st.Conditions[i].Type == t {
				if st.Conditions[i].Status == corev1.ConditionTrue {
					c.LastTransitionTime = st.Conditions[i].LastTransitionTime
				}
				st.Conditions[i], replaced = c, true
			}
		}
		if !replaced {
			st.Conditions = append(st.Conditions, c)
		}
	}
	st.InitContainerStatuses = nil
	for i, c := range pod.Spec.InitContainers {
		st.InitContainerStatuses = append(st.InitContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: "harness://" + c.Image,
			ContainerID: containerID(sb, len(pod.Spec.Containers)+i),
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: 0, Reason: "Completed", StartedAt: started, FinishedAt: started,
			}},
		})
	}
	st.ContainerStatuses = nil
	yes := true
	for i, c := range pod.Spec.Containers {
		st.ContainerStatuses = append(st.ContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: "harness://" + c.Image,
			ContainerID: containerID(sb, i),
			Ready:       true,
			Started:     &yes,
			State:       corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: started}},
		})
	}
}

// statusCurrent tells whether pod's status already says it runs in sb, so a
// sync after our own status write changes nothing.
func statusCurrent(pod *corev1.Pod, sb *sandbox) bool {
	st := pod.Status
	if st.Phase != corev1.PodRunning || st.PodIP != sb.IPs[0].String() || len(st.PodIPs) != len(sb.IPs) ||
		len(st.ContainerStatuses) != len(pod.Spec.Containers) {
		return false
	}
	for _, t := range runningConditions {
		ok := false
		for _, c := range st.Conditions {
			ok = ok || c.Type == t && c.Status == corev1.ConditionTrue
		}
		if !ok {
			return false
		}
	}
	ids := map[string]bool{}
	for i := range pod.Spec.Containers {
		ids[containerID(sb, i)] = true
	}
	for _, cs := range st.ContainerStatuses {
		if !ids[cs.ContainerID] || !cs.Ready {
			return false
		}
	}
	return true
}
