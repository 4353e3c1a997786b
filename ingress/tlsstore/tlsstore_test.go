package tlsstore

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func secretFor(t *testing.T, name, version, cn string) *corev1.Secret {
	t.Helper()
	cert, err := SelfSigned(cn)
	if err != nil {
		t.Fatal(err)
	}
	key, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, ResourceVersion: version},
		Type: corev1.SecretTypeTLS, Data: map[string][]byte{
			corev1.TLSCertKey:       pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}),
			corev1.TLSPrivateKeyKey: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}),
		}}
}

func cnOf(t *testing.T, s *Store, sni string) string {
	t.Helper()
	c, err := s.GetCertificate(&tls.ClientHelloInfo{ServerName: sni})
	if err != nil {
		t.Fatalf("GetCertificate(%q): %v", sni, err)
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf.Subject.CommonName
}

func TestSNI(t *testing.T) {
	s := New()
	if err := s.SetDefault("", ""); err != nil {
		t.Fatal(err)
	}
	secrets := map[string]*corev1.Secret{
		"default/a":   secretFor(t, "a", "1", "a.test"),
		"default/w":   secretFor(t, "w", "1", "wild.test"),
		"default/bad": {ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "bad"}, Data: map[string][]byte{"tls.crt": []byte("junk")}},
	}
	lookup := func(k string) *corev1.Secret { return secrets[k] }
	bad := s.Update(map[string]string{"a.test": "default/a", "*.wild.test": "default/w", "b.test": "default/bad", "c.test": "default/missing"}, lookup)
	if len(bad) != 1 || bad["default/bad"] == nil {
		t.Errorf("bad = %v, want default/bad only", bad)
	}
	for sni, want := range map[string]string{
		"a.test": "a.test", "A.Test.": "a.test", "x.wild.test": "wild.test", "y.x.wild.test": "nodenet-ingress-default",
		"wild.test": "nodenet-ingress-default", "b.test": "nodenet-ingress-default", "": "nodenet-ingress-default",
	} {
		if got := cnOf(t, s, sni); got != want {
			t.Errorf("SNI %q: certificate %q, want %q", sni, got, want)
		}
	}
	if s.Count() != 2 {
		t.Errorf("Count = %d", s.Count())
	}

	// A changed Secret applies at the next handshake; an unchanged
	// resourceVersion is not parsed again.
	secrets["default/a"] = secretFor(t, "a", "2", "a2.test")
	s.Update(map[string]string{"a.test": "default/a"}, lookup)
	if got := cnOf(t, s, "a.test"); got != "a2.test" {
		t.Errorf("after the Secret changed: %q, want a2.test", got)
	}
	if got := cnOf(t, s, "x.wild.test"); got != "nodenet-ingress-default" {
		t.Errorf("removed host still served its certificate: %q", got)
	}
}

func TestDefaultFromFiles(t *testing.T) {
	dir := t.TempDir()
	sec := secretFor(t, "d", "1", "default.example")
	crt, key := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	os.WriteFile(crt, sec.Data[corev1.TLSCertKey], 0o600)
	os.WriteFile(key, sec.Data[corev1.TLSPrivateKeyKey], 0o600)
	s := New()
	if err := s.SetDefault(crt, key); err != nil {
		t.Fatal(err)
	}
	if got := cnOf(t, s, "unknown.test"); got != "default.example" {
		t.Errorf("default = %q", got)
	}
	if err := s.SetDefault(crt, filepath.Join(dir, "missing")); err == nil {
		t.Error("SetDefault with a missing key file succeeded")
	}
	if got := cnOf(t, s, "unknown.test"); got != "default.example" {
		t.Errorf("a failed SetDefault replaced the default: %q", got)
	}
}

func TestTLSConfigMinVersion(t *testing.T) {
	c := New().TLSConfig()
	if c.MinVersion != tls.VersionTLS12 || c.NextProtos[0] != "h2" {
		t.Errorf("config = min %x, protos %v", c.MinVersion, c.NextProtos)
	}
}
