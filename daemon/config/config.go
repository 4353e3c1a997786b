// Package config holds nodenet's TOML configuration (/etc/nodenet/config.toml):
// one typed struct per section with its defaults and validation, a strict
// decoder that reports every problem with its key path and line, and Diff for
// deciding what a SIGHUP reload changed.
package config

import (
	"bytes"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Config is the whole file. Every field carries a toml tag: decoding, Diff,
// the example-file test and unknown-key detection all walk these tags.
type Config struct {
	Node       Node       `toml:"node"`
	Kubernetes Kubernetes `toml:"kubernetes"`
	Network    Network    `toml:"network"`
	CNI        CNI        `toml:"cni"`
	Proxy      Proxy      `toml:"proxy"`
	Reconcile  Reconcile  `toml:"reconcile"`
	Log        Log        `toml:"log"`
	Admin      Admin      `toml:"admin"`
	Ingress    Ingress    `toml:"ingress"`
	Policy     Policy     `toml:"policy"`
}

// Node identifies this machine in the cluster.
type Node struct {
	// Name of the Node object; defaults to the lowercased hostname.
	Name string `toml:"name"`
	// Addresses overrides the Node's InternalIP addresses; empty means use
	// them as they are. At most one per family.
	Addresses []string `toml:"addresses"`
}

// Kubernetes configures the API client and informers.
type Kubernetes struct {
	Kubeconfig   string        `toml:"kubeconfig"`
	QPS          float64       `toml:"qps"`
	Burst        int           `toml:"burst"`
	ResyncPeriod time.Duration `toml:"resync_period"` // 0 disables informer resync
}

// Network describes the cluster's address plan.
type Network struct {
	ClusterCIDRs []string `toml:"cluster_cidrs"`
	ServiceCIDRs []string `toml:"service_cidrs"`
	MTU          int      `toml:"mtu"` // 0 = detect from the underlay
	// Backend routes pod traffic between nodes: host-gw or vxlan.
	Backend   string `toml:"backend"`
	VXLANVNI  int    `toml:"vxlan_vni"`
	VXLANPort int    `toml:"vxlan_port"`
}

// CNI configures pod networking on this node.
type CNI struct {
	ConfDir     string   `toml:"conf_dir"`     // where the runtime reads CNI configs
	ConfFile    string   `toml:"conf_file"`    // our conflist's file name in ConfDir
	NetworkName string   `toml:"network_name"` // the CNI network name
	Bridge      string   `toml:"bridge"`       // the pods' bridge
	StateDir    string   `toml:"state_dir"`    // IPAM allocations live below it
	PodCIDRs    []string `toml:"pod_cidrs"`    // overrides the Node's spec.podCIDRs
	// Chain lists plugin configs (JSON objects) run after nodenet, e.g. portmap.
	Chain []string `toml:"chain"`
	// LeakGrace: an address whose pod is gone is freed once it is this old.
	LeakGrace time.Duration `toml:"leak_grace"`
}

// Proxy configures the Service proxy (kube-proxy's job).
type Proxy struct {
	// NodePortAddresses limits NodePorts to local addresses in these CIDRs;
	// empty: every local address (kube-proxy's nodePortAddresses).
	NodePortAddresses []string `toml:"node_port_addresses"`
	// NodePortRange is the API server's --service-node-port-range; NodePorts
	// outside it are not programmed.
	NodePortRange string `toml:"node_port_range"`
	// MasqueradeAll masquerades all traffic to Services.
	MasqueradeAll bool `toml:"masquerade_all"`
}

// Reconcile tunes the coalescing runner that drives every component's sync.
type Reconcile struct {
	MinInterval   time.Duration `toml:"min_interval"`   // bursts within this coalesce
	RetryInterval time.Duration `toml:"retry_interval"` // after a failed sync
	MaxInterval   time.Duration `toml:"max_interval"`   // periodic full resync
}

// Log configures the process logger.
type Log struct {
	Level  string `toml:"level"`  // debug|info|warn|error
	Format string `toml:"format"` // text|json
}

// Admin configures the local HTTP listener and the CLI control socket.
type Admin struct {
	Listen        string `toml:"listen"` // "" disables /metrics, /healthz, /readyz
	ControlSocket string `toml:"control_socket"`
	Pprof         bool   `toml:"pprof"` // serve /debug/pprof/ on the admin listener
}

// hostname is a variable so tests do not depend on the machine they run on.
var hostname = os.Hostname

func defaultNode() Node {
	// An unreadable hostname leaves the name empty; Validate then asks the
	// operator to set node.name instead of us guessing.
	name, err := hostname()
	if err != nil {
		name = ""
	}
	return Node{Name: strings.ToLower(name), Addresses: []string{}}
}

func defaultKubernetes() Kubernetes {
	return Kubernetes{
		Kubeconfig:   "/etc/nodenet/kubeconfig",
		QPS:          50,
		Burst:        100,
		ResyncPeriod: 10 * time.Minute,
	}
}

func defaultNetwork() Network {
	return Network{
		ClusterCIDRs: []string{"10.244.0.0/16"},
		ServiceCIDRs: []string{"10.96.0.0/12"},
		MTU:          0,
		Backend:      "host-gw",
		VXLANVNI:     1,
		VXLANPort:    8472,
	}
}

func defaultProxy() Proxy {
	return Proxy{NodePortAddresses: []string{}, NodePortRange: "30000-32767"}
}

func defaultCNI() CNI {
	return CNI{
		ConfDir:     "/etc/cni/net.d",
		ConfFile:    "10-nodenet.conflist",
		NetworkName: "nodenet",
		Bridge:      "nodenet0",
		StateDir:    "/var/lib/nodenet",
		PodCIDRs:    []string{},
		Chain:       []string{},
		LeakGrace:   time.Minute,
	}
}

func defaultReconcile() Reconcile {
	return Reconcile{
		MinInterval:   100 * time.Millisecond,
		RetryInterval: time.Second,
		MaxInterval:   time.Minute,
	}
}

func defaultLog() Log { return Log{Level: "info", Format: "text"} }

func defaultAdmin() Admin {
	return Admin{Listen: "127.0.0.1:9490", ControlSocket: "/run/nodenet/nodenet.sock"}
}

// Defaults returns a Config with every default filled in; slices are fresh
// on each call so callers may modify them.
func Defaults() Config {
	return Config{
		Node:       defaultNode(),
		Kubernetes: defaultKubernetes(),
		Network:    defaultNetwork(),
		CNI:        defaultCNI(),
		Proxy:      defaultProxy(),
		Reconcile:  defaultReconcile(),
		Log:        defaultLog(),
		Admin:      defaultAdmin(),
		Ingress:    defaultIngress(),
		Policy:     defaultPolicy(),
	}
}

// Load reads path and parses it with Parse.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config %s: %w", path, err)
	}
	c, err := Parse(data)
	if err != nil {
		// Problems are one per line, so start them on their own line.
		return nil, fmt.Errorf("config %s:\n%w", path, err)
	}
	return c, nil
}

// Parse decodes data strictly onto Defaults() and validates the result. The
// error is a *Errors listing every syntax, type, unknown-key and validation
// problem found; on error the returned Config is nil.
func Parse(data []byte) (*Config, error) {
	c := Defaults()
	d, problems := decode(data, &c)
	if d == nil { // syntax error: nothing else can be trusted
		return nil, &Errors{Problems: problems}
	}
	for _, p := range c.problems() {
		key := baseKey(p.Key)
		// A key that failed to decode kept its default; checks against it
		// (e.g. burst >= qps) would only repeat the decode problem.
		if d.failed[key] {
			continue
		}
		p.Line, p.Column = d.position(key, key[strings.LastIndexByte(key, '.')+1:])
		problems = append(problems, p)
	}
	if len(problems) > 0 {
		return nil, newErrors(problems)
	}
	return &c, nil
}

// TOML renders the effective configuration, defaults included.
func (c *Config) TOML() string {
	var buf bytes.Buffer
	enc := toml.NewEncoder(&buf)
	enc.Indent = ""
	if err := enc.Encode(c); err != nil {
		// Only reachable if a field gets a type the encoder cannot handle;
		// say so in the output rather than render half a file.
		return fmt.Sprintf("# cannot render config: %v\n", err)
	}
	return buf.String()
}

// Diff returns the sorted dotted key paths of the leaves whose values differ
// between old and new. A nil Config compares as the zero Config.
func Diff(old, new *Config) []string {
	var a, b Config
	if old != nil {
		a = *old
	}
	if new != nil {
		b = *new
	}
	var changed []string
	walkLeaves(reflect.ValueOf(a), reflect.ValueOf(b), "", func(key string, x, y reflect.Value) {
		if !leafEqual(x, y) {
			changed = append(changed, key)
		}
	})
	slices.Sort(changed)
	return changed
}

// leafKeys returns the dotted path of every leaf key of Config in
// declaration order.
func leafKeys() []string {
	var keys []string
	v := reflect.ValueOf(Config{})
	walkLeaves(v, v, "", func(key string, _, _ reflect.Value) { keys = append(keys, key) })
	return keys
}

var durationType = reflect.TypeFor[time.Duration]()

// isTable reports whether a Go type is a TOML table (a nested section)
// rather than a leaf value.
func isTable(t reflect.Type) bool { return t.Kind() == reflect.Struct }

// tomlName returns the key a struct field is decoded from, or "" if the
// field is not part of the file.
func tomlName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
	if name == "-" {
		return ""
	}
	if name == "" {
		return f.Name
	}
	return name
}

// walkLeaves calls fn for each leaf field of the structs a and b (of the
// same type), recursing into nested tables.
func walkLeaves(a, b reflect.Value, prefix string, fn func(key string, x, y reflect.Value)) {
	t := a.Type()
	for i := range t.NumField() {
		name := tomlName(t.Field(i))
		if name == "" {
			continue
		}
		key := name
		if prefix != "" {
			key = prefix + "." + name
		}
		if isTable(t.Field(i).Type) {
			walkLeaves(a.Field(i), b.Field(i), key, fn)
			continue
		}
		fn(key, a.Field(i), b.Field(i))
	}
}

// leafEqual compares two leaf values; nil and empty slices are equal since
// both mean "none" in the file.
func leafEqual(x, y reflect.Value) bool {
	if x.Kind() == reflect.Slice {
		if x.Len() != y.Len() {
			return false
		}
		for i := range x.Len() {
			if !reflect.DeepEqual(x.Index(i).Interface(), y.Index(i).Interface()) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(x.Interface(), y.Interface())
}

// baseKey strips a list index: "network.cluster_cidrs[1]" -> "network.cluster_cidrs".
func baseKey(key string) string {
	if i := strings.IndexByte(key, '['); i >= 0 {
		return key[:i]
	}
	return key
}
