#!/usr/bin/env bash
# Builds the peer of `make bench-policy`, kube-router (the version go.mod
# requires; its network policy controller is what runs), from source
# through the Go module proxy. The binary is cached in .bin/<version>/;
# prints its path.
set -euo pipefail
cd "$(dirname "$0")"
version=$(awk '$1=="github.com/cloudnativelabs/kube-router/v2"{print $2; exit} $2=="github.com/cloudnativelabs/kube-router/v2"{print $3; exit}' go.mod)
out=".bin/${version}/kube-router"
if [ ! -x "$out" ]; then
  echo "building kube-router ($version)" >&2
  mkdir -p "$(dirname "$out")"
  CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$out.tmp" github.com/cloudnativelabs/kube-router/v2/cmd/kube-router
  mv "$out.tmp" "$out"
fi
echo "$PWD/$out"
