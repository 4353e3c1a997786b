#!/bin/bash
# restore-floor.sh: what the kernel and iptables-restore alone take for the
# smallest change a proxy can make at scale. In a throwaway network
# namespace per backend (nft, legacy) it restores N Service chains (default
# 10,000) of 10 DNAT rules each, dispatched from a chain hooked in
# PREROUTING and OUTPUT, then times `iptables-restore --noflush` of one of
# those chains, unchanged, three times. No agent runs; nothing outside the
# namespaces is touched. Needs root, iptables (both backends), python3.
set -euo pipefail
N=${N:-10000}
work=$(mktemp -d)
namespaces=()
cleanup() {
	for ns in "${namespaces[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT

python3 - "$N" >"$work/full" <<'PY'
import sys
n = int(sys.argv[1])
out = ["*nat", ":NNF-SERVICES - [0:0]"] + [":NNF-SVC-%05d - [0:0]" % i for i in range(n)]
out += ["-A PREROUTING -j NNF-SERVICES", "-A OUTPUT -j NNF-SERVICES"]
out += ["-A NNF-SERVICES -d 10.%d.%d.%d/32 -p tcp -m tcp --dport 80 -j NNF-SVC-%05d"
        % (96 + i // 65536, (i // 256) % 256, i % 256, i) for i in range(n)]
for i in range(n):
    for j in range(10):
        stat = "-m statistic --mode random --probability %.11f " % (1.0 / (10 - j)) if j < 9 else ""
        out.append('-A NNF-SVC-%05d -p tcp -m comment --comment "ns/svc-%d:http -> 10.244.%d.%d:8080" %s-j DNAT --to-destination 10.244.%d.%d:8080'
                   % (i, i, j, i % 250, stat, j, i % 250))
print("\n".join(out + ["COMMIT"]))
PY
chain=$(printf 'NNF-SVC-%05d' $((N / 2)))
{ printf '*nat\n:%s - [0:0]\n' "$chain"; grep -- "^-A $chain " "$work/full"; printf 'COMMIT\n'; } >"$work/one"

ms() { python3 -c "import sys; print('%.1f' % ((float(sys.argv[2]) - float(sys.argv[1])) * 1000))" "$@"; }
printf '%-8s %-28s %s\n' backend what ms
for mode in nft legacy; do
	ns="nnfloor$$-$mode"
	ip netns add "$ns"
	namespaces+=("$ns")
	s=$(date +%s.%N)
	ip netns exec "$ns" "iptables-$mode-restore" -w <"$work/full"
	printf '%-8s %-28s %s\n' "$mode" "restore of $N chains" "$(ms "$s" "$(date +%s.%N)")"
	for k in 1 2 3; do
		s=$(date +%s.%N)
		ip netns exec "$ns" "iptables-$mode-restore" -w --noflush <"$work/one"
		printf '%-8s %-28s %s\n' "$mode" "one-chain --noflush #$k" "$(ms "$s" "$(date +%s.%N)")"
	done
done
