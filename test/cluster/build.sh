#!/usr/bin/env bash
# Builds the test control plane (etcd, kube-apiserver, kube-controller-manager,
# kubectl, and kube-proxy for benchmarks) and the reference CNI plugins
# (bridge, host-local, portmap v1.9.1) from source through the Go module proxy. Binaries are cached in .bin/<version>/ so later runs reuse them.
set -euo pipefail
cd "$(dirname "$0")"
version=$(awk '$1=="k8s.io/kubernetes"{print $2; exit}' go.mod)
out=".bin/${version}"
mkdir -p "$out"
want=(etcd kube-apiserver kube-controller-manager kubectl kube-proxy bridge host-local portmap)
missing=()
for b in "${want[@]}"; do [ -x "$out/$b" ] || missing+=("$b"); done
[ ${#missing[@]} -eq 0 ] && { echo "$PWD/$out"; exit 0; }
export CGO_ENABLED=0
for b in "${missing[@]}"; do
  case "$b" in
    etcd) pkg=./etcd ;;
    bridge) pkg=github.com/containernetworking/plugins/plugins/main/bridge ;;
    host-local) pkg=github.com/containernetworking/plugins/plugins/ipam/host-local ;;
    portmap) pkg=github.com/containernetworking/plugins/plugins/meta/portmap ;;
    *) pkg=k8s.io/kubernetes/cmd/$b ;;
  esac
  echo "building $b ($version)" >&2
  go build -trimpath -ldflags='-s -w' -o "$out/$b.tmp" "$pkg"
  mv "$out/$b.tmp" "$out/$b"
done
echo "$PWD/$out"
