#!/usr/bin/env bash
# The suite's last step: nothing the tests made may be left on the machine,
# and the root network namespace must hold nothing of nodenet's.
set -uo pipefail
fail=0
say() { echo "leakcheck: $*"; fail=1; }

ns=$(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^nnt[0-9]+-' || true)
[ -z "$ns" ] || say "network namespaces left: $(echo $ns)"
dirs=$(ls -d /tmp/nnt[0-9]*-* 2>/dev/null || true)
[ -z "$dirs" ] || say "directories left: $(echo $dirs)"
procs=$(pgrep -af 'nodenet run|kube-apiserver|kube-controller-manager|test/cluster/.bin/.*/etcd' 2>/dev/null | grep -v pgrep || true)
[ -z "$procs" ] || say "processes left: $procs"
for save in iptables-save ip6tables-save iptables-legacy-save ip6tables-legacy-save; do
  command -v "$save" >/dev/null || continue
  n=$("$save" 2>/dev/null | grep -ci nodenet || true)
  [ "$n" = "0" ] || say "root namespace: $save shows $n nodenet lines"
done
links=$(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | grep -E '^(nn[0-9a-f]{11}|nodenet)' || true)
[ -z "$links" ] || say "root namespace links: $(echo $links)"
if [ $fail = 0 ]; then echo "leakcheck: clean"; fi
exit $fail
