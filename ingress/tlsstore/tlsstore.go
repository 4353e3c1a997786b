// Package tlsstore picks the certificate of each TLS handshake by SNI from
// the Ingresses' Secrets, falling back to a default certificate (from files,
// or self-signed at start). Certificates are swapped atomically, so a
// changed Secret applies to the next handshake without a restart.
package tlsstore

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Store holds the certificates.
type Store struct {
	certs atomic.Pointer[certSet]
	def   atomic.Pointer[tls.Certificate]

	mu    sync.Mutex // guards cache
	cache map[string]cached
}

type certSet struct {
	exact    map[string]*tls.Certificate
	wildcard map[string]*tls.Certificate // key: the parent of "*.parent"
	count    int
}

// cached is a parsed Secret, reused while its resourceVersion is unchanged.
type cached struct {
	version string
	cert    *tls.Certificate
	err     error
}

// New returns a store with no certificates; call SetDefault before serving.
func New() *Store {
	s := &Store{cache: map[string]cached{}}
	s.certs.Store(&certSet{})
	return s
}

// SetDefault loads the default certificate from PEM files, or generates a
// self-signed one when both paths are empty.
func (s *Store) SetDefault(certFile, keyFile string) error {
	var cert tls.Certificate
	var err error
	if certFile == "" && keyFile == "" {
		cert, err = SelfSigned("nodenet-ingress-default")
	} else {
		cert, err = tls.LoadX509KeyPair(certFile, keyFile)
	}
	if err != nil {
		return fmt.Errorf("ingress: default certificate: %w", err)
	}
	s.def.Store(&cert)
	return nil
}

// Update installs the certificates of hosts (TLS host -> Secret
// "ns/name"); secret looks a Secret up. It returns the Secrets that could
// not be used and why; their hosts get the default certificate.
func (s *Store) Update(hosts map[string]string, secret func(key string) *corev1.Secret) map[string]error {
	s.mu.Lock()
	defer s.mu.Unlock()
	set := &certSet{exact: map[string]*tls.Certificate{}, wildcard: map[string]*tls.Certificate{}}
	bad := map[string]error{}
	used := map[string]bool{}
	for host, key := range hosts {
		sec := secret(key)
		if sec == nil {
			continue // routes reports missing Secrets
		}
		used[key] = true
		c, ok := s.cache[key]
		if !ok || c.version != sec.ResourceVersion || sec.ResourceVersion == "" {
			c = cached{version: sec.ResourceVersion}
			cert, err := tls.X509KeyPair(sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey])
			if err != nil {
				c.err = fmt.Errorf("Secret %s: %w", key, err)
			} else {
				c.cert = &cert
			}
			s.cache[key] = c
		}
		if c.err != nil {
			bad[key] = c.err
			continue
		}
		if parent, ok := strings.CutPrefix(host, "*."); ok {
			set.wildcard[parent] = c.cert
		} else {
			set.exact[host] = c.cert
		}
		set.count++
	}
	for k := range s.cache {
		if !used[k] {
			delete(s.cache, k)
		}
	}
	s.certs.Store(set)
	return bad
}

// Count returns how many hosts have their own certificate.
func (s *Store) Count() int { return s.certs.Load().count }

// GetCertificate implements tls.Config.GetCertificate.
func (s *Store) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := s.certs.Load().lookup(strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))); c != nil {
		return c, nil
	}
	if c := s.def.Load(); c != nil {
		return c, nil
	}
	return nil, fmt.Errorf("ingress: no certificate for %q", hello.ServerName)
}

func (c *certSet) lookup(name string) *tls.Certificate {
	if name == "" {
		return nil
	}
	if cert := c.exact[name]; cert != nil {
		return cert
	}
	if i := strings.IndexByte(name, '.'); i > 0 {
		return c.wildcard[name[i+1:]]
	}
	return nil
}

// TLSConfig is the listeners' configuration: TLS 1.2 at least, HTTP/2
// preferred, certificates by SNI.
func (s *Store) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: s.GetCertificate,
		NextProtos:     []string{"h2", "http/1.1"},
	}
}

// SelfSigned returns a fresh ECDSA P-256 certificate for cn, valid a year.
func SelfSigned(cn string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"nodenet"}},
		DNSNames:     []string{cn},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}
