// Package systemd holds what installs nodenet on a node: the systemd unit
// (nodenet.service) that runs the daemon, and the RBAC manifest (rbac.yaml)
// that grants its Kubernetes identity what it reads and writes. The Go code
// here is only the tests that check those files.
package systemd
