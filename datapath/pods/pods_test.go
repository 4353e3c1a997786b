package pods

import (
	"encoding/json"
	"net"
	"net/netip"
	"sync"
	"testing"

	"github.com/nodenet/nodenet/datapath/podnet"
)

func TestResult(t *testing.T) {
	att := podnet.Attachment{
		NetNS: "/var/run/netns/p", IfName: "eth0",
		Addrs:    []netip.Prefix{netip.MustParsePrefix("10.244.1.5/24"), netip.MustParsePrefix("fd00:1::5/64")},
		Gateways: []netip.Addr{netip.MustParseAddr("10.244.1.1"), netip.MustParseAddr("fd00:1::1")},
	}
	mac, _ := net.ParseMAC("02:00:00:00:00:01")
	res := result(att, podnet.Result{HostVeth: "nnabc", HostMAC: mac, PodMAC: mac})
	b, _ := json.Marshal(res)
	want := `{"cniVersion":"1.1.0","interfaces":[{"mac":"02:00:00:00:00:01","name":"nnabc"},{"mac":"02:00:00:00:00:01","name":"eth0","sandbox":"/var/run/netns/p"}],"ips":[{"address":"10.244.1.5/24","gateway":"10.244.1.1","interface":1},{"address":"fd00:1::5/64","gateway":"fd00:1::1","interface":1}],"routes":[{"dst":"0.0.0.0/0","gw":"10.244.1.1"},{"dst":"::/0","gw":"fd00:1::1"}]}`
	if string(b) != want {
		t.Errorf("result:\n got %s\nwant %s", b, want)
	}
}

func TestGatewayFor(t *testing.T) {
	gws := []netip.Prefix{netip.MustParsePrefix("10.244.1.1/24"), netip.MustParsePrefix("fd00:1::1/64")}
	for addr, want := range map[string]string{"10.244.1.9": "10.244.1.1", "fd00:1::9": "fd00:1::1", "10.244.2.9": ""} {
		got, ok := gatewayFor(gws, netip.MustParseAddr(addr))
		if (want == "") == ok || (ok && got.String() != want) {
			t.Errorf("gatewayFor(%s) = %v %v, want %q", addr, got, ok, want)
		}
	}
}

func TestKeyedMutexSerialisesOneKey(t *testing.T) {
	var k keyedMutex
	var mu sync.Mutex
	inside := map[string]int{}
	var wg sync.WaitGroup
	for i := range 200 {
		key := []string{"a", "b"}[i%2]
		wg.Go(func() {
			defer k.lock(key)()
			mu.Lock()
			inside[key]++
			if inside[key] > 1 {
				t.Errorf("two holders of %s", key)
			}
			mu.Unlock()
			mu.Lock()
			inside[key]--
			mu.Unlock()
		})
	}
	wg.Wait()
	if len(k.locks) != 0 {
		t.Errorf("lock entries left: %d", len(k.locks))
	}
}
