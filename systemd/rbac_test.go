package systemd_test

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// knownVerbs are the verbs of the Kubernetes resource API; anything else in a
// rule is a typo that RBAC would silently accept and never match.
var knownVerbs = []string{"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}

// wantGrants is everything nodenet may do: "group/resource" (core group
// written as "core") -> verbs, sorted. Adding a grant means adding it here.
var wantGrants = map[string][]string{
	"core/nodes":                         {"get", "list", "watch"},
	"core/namespaces":                    {"get", "list", "watch"},
	"core/pods":                          {"get", "list", "watch"},
	"core/services":                      {"get", "list", "watch"},
	"discovery.k8s.io/endpointslices":    {"get", "list", "watch"},
	"networking.k8s.io/networkpolicies":  {"get", "list", "watch"},
	"networking.k8s.io/ingresses":        {"get", "list", "watch"},
	"networking.k8s.io/ingressclasses":   {"get", "list", "watch"},
	"core/secrets":                       {"list", "watch"},
	"core/events":                        {"create", "patch"},
	"events.k8s.io/events":               {"create", "patch"},
	"networking.k8s.io/ingresses/status": {"patch", "update"},
}

// decodeRBAC splits rbac.yaml into its documents and decodes each strictly
// (an unknown or misspelt field is an error) into its rbac/v1 type.
func decodeRBAC(t *testing.T) ([]rbacv1.ClusterRole, []rbacv1.ClusterRoleBinding) {
	roles, bindings, _, _ := decodeAll(t)
	return roles, bindings
}

// decodeAll also returns the namespaced Roles and RoleBindings.
func decodeAll(t *testing.T) ([]rbacv1.ClusterRole, []rbacv1.ClusterRoleBinding, []rbacv1.Role, []rbacv1.RoleBinding) {
	t.Helper()
	b, err := os.ReadFile("rbac.yaml")
	if err != nil {
		t.Fatalf("read rbac.yaml: %v", err)
	}
	var roles []rbacv1.ClusterRole
	var bindings []rbacv1.ClusterRoleBinding
	var nsRoles []rbacv1.Role
	var nsBindings []rbacv1.RoleBinding
	for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		if tm.APIVersion != rbacv1.SchemeGroupVersion.String() {
			t.Fatalf("document %d: apiVersion %q, want %q", i, tm.APIVersion, rbacv1.SchemeGroupVersion)
		}
		switch tm.Kind {
		case "ClusterRole":
			var r rbacv1.ClusterRole
			if err := yaml.UnmarshalStrict([]byte(doc), &r); err != nil {
				t.Fatalf("document %d (ClusterRole): %v", i, err)
			}
			roles = append(roles, r)
		case "ClusterRoleBinding":
			var rb rbacv1.ClusterRoleBinding
			if err := yaml.UnmarshalStrict([]byte(doc), &rb); err != nil {
				t.Fatalf("document %d (ClusterRoleBinding): %v", i, err)
			}
			bindings = append(bindings, rb)
		case "Role":
			var r rbacv1.Role
			if err := yaml.UnmarshalStrict([]byte(doc), &r); err != nil {
				t.Fatalf("document %d (Role): %v", i, err)
			}
			nsRoles = append(nsRoles, r)
		case "RoleBinding":
			var rb rbacv1.RoleBinding
			if err := yaml.UnmarshalStrict([]byte(doc), &rb); err != nil {
				t.Fatalf("document %d (RoleBinding): %v", i, err)
			}
			nsBindings = append(nsBindings, rb)
		default:
			t.Fatalf("document %d: unexpected kind %q", i, tm.Kind)
		}
	}
	if len(roles) != 1 || len(bindings) != 1 {
		t.Fatalf("got %d ClusterRoles and %d ClusterRoleBindings, want 1 of each", len(roles), len(bindings))
	}
	return roles, bindings, nsRoles, nsBindings
}

func TestRBACBinding(t *testing.T) {
	_, bindings := decodeRBAC(t)
	b := bindings[0]
	if b.Name != "nodenet" {
		t.Errorf("ClusterRoleBinding name %q, want nodenet", b.Name)
	}
	wantRef := rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "nodenet"}
	if diff := cmp.Diff(wantRef, b.RoleRef); diff != "" {
		t.Errorf("roleRef (-want +got):\n%s", diff)
	}
	wantSubjects := []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: "nodenet:nodes"}}
	if diff := cmp.Diff(wantSubjects, b.Subjects); diff != "" {
		t.Errorf("subjects (-want +got):\n%s", diff)
	}
}

func TestRBACRules(t *testing.T) {
	roles, _ := decodeRBAC(t)
	r := roles[0]
	if r.Name != "nodenet" {
		t.Errorf("ClusterRole name %q, want nodenet", r.Name)
	}
	if r.AggregationRule != nil {
		t.Error("ClusterRole has an aggregationRule: its rules would come from other roles")
	}
	got := map[string][]string{}
	for i, rule := range r.Rules {
		for field, values := range map[string][]string{
			"apiGroups": rule.APIGroups, "resources": rule.Resources, "verbs": rule.Verbs,
			"resourceNames": rule.ResourceNames, "nonResourceURLs": rule.NonResourceURLs,
		} {
			for _, v := range values {
				if strings.Contains(v, "*") {
					t.Errorf("rule %d: %s grants a wildcard %q", i, field, v)
				}
			}
		}
		if len(rule.NonResourceURLs) > 0 {
			t.Errorf("rule %d: nonResourceURLs %v: nodenet needs none", i, rule.NonResourceURLs)
		}
		if len(rule.ResourceNames) > 0 {
			t.Errorf("rule %d: resourceNames %v: update wantGrants and this test to allow them", i, rule.ResourceNames)
		}
		for _, v := range rule.Verbs {
			if !slices.Contains(knownVerbs, v) {
				t.Errorf("rule %d: unknown verb %q", i, v)
			}
		}
		if len(rule.APIGroups) == 0 || len(rule.Resources) == 0 || len(rule.Verbs) == 0 {
			t.Errorf("rule %d grants nothing: %+v", i, rule)
		}
		for _, g := range rule.APIGroups {
			if g == "" {
				g = "core"
			}
			for _, res := range rule.Resources {
				key := g + "/" + res
				got[key] = append(got[key], rule.Verbs...)
			}
		}
	}
	for key, verbs := range got {
		slices.Sort(verbs)
		got[key] = slices.Compact(verbs)
	}
	if diff := cmp.Diff(wantGrants, got); diff != "" {
		t.Errorf("grants (-want +got):\n%s", diff)
	}
	// Spelled out because they are the tempting mistakes.
	for key, verb := range map[string]string{
		"core/pods/status": "patch", "core/secrets": "get", "core/pods": "delete",
	} {
		if slices.Contains(got[key], verb) {
			t.Errorf("%s %s must not be granted", verb, key)
		}
	}
}

// TestRBACLeaseRole: the ingress status Lease, and nothing else, in its
// namespace only.
func TestRBACLeaseRole(t *testing.T) {
	_, _, roles, bindings := decodeAll(t)
	if len(roles) != 1 || len(bindings) != 1 {
		t.Fatalf("got %d Roles and %d RoleBindings, want 1 of each", len(roles), len(bindings))
	}
	r, b := roles[0], bindings[0]
	want := []rbacv1.PolicyRule{
		{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"create"}},
		{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, ResourceNames: []string{"nodenet-ingress-status"}, Verbs: []string{"get", "update"}},
	}
	if r.Namespace != "kube-system" || r.Name != "nodenet-ingress-status" {
		t.Errorf("Role %s/%s, want kube-system/nodenet-ingress-status", r.Namespace, r.Name)
	}
	if diff := cmp.Diff(want, r.Rules); diff != "" {
		t.Errorf("Role rules (-want +got):\n%s", diff)
	}
	wantRef := rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: r.Name}
	wantSubjects := []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: "nodenet:nodes"}}
	if b.Namespace != r.Namespace || !cmp.Equal(wantRef, b.RoleRef) || !cmp.Equal(wantSubjects, b.Subjects) {
		t.Errorf("RoleBinding %s/%s refs %+v for %+v", b.Namespace, b.Name, b.RoleRef, b.Subjects)
	}
}
