package controller

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/klog/v2/ktesting"
)

// TestSelfSignedCertificate: the generated certificate serves TLS for its host and verifies
// against itself.
func TestSelfSignedCertificate(t *testing.T) {
	logger, _ := ktesting.NewTestContext(t)
	cfg, err := metricsTLS(logger, "", "", "node-a")
	if err != nil {
		t.Fatal(err)
	}
	leaf := cfg.Certificates[0].Leaf
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "node-a", Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Fatalf("self-signed certificate for node-a: %v", err)
	}
	if d := time.Until(leaf.NotAfter); d < 364*24*time.Hour {
		t.Fatalf("valid for %v, want a year", d)
	}
}

// TestCertificateFilesReloaded: a mounted certificate is served, and a changed one is served on
// the next handshake; a broken replacement keeps the previous one.
func TestCertificateFilesReloaded(t *testing.T) {
	logger, _ := ktesting.NewTestContext(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	write := func(host string, mod time.Time) *x509.Certificate {
		pair, err := selfSigned(host, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		writePEM(t, certFile, "CERTIFICATE", pair.Certificate[0])
		der, err := x509.MarshalPKCS8PrivateKey(pair.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		writePEM(t, keyFile, "PRIVATE KEY", der)
		for _, f := range []string{certFile, keyFile} {
			if err := os.Chtimes(f, mod, mod); err != nil {
				t.Fatal(err)
			}
		}
		return pair.Leaf
	}
	base := time.Now().Add(-time.Hour)
	first := write("first", base)
	cfg, err := metricsTLS(logger, certFile, keyFile, "ignored")
	if err != nil {
		t.Fatal(err)
	}
	served := func() *x509.Certificate {
		c, err := cfg.GetCertificate(&tls.ClientHelloInfo{})
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return leaf
	}
	if !served().Equal(first) {
		t.Fatal("the mounted certificate is not the one served")
	}
	second := write("second", base.Add(time.Minute))
	if !served().Equal(second) {
		t.Fatal("the changed certificate is not served")
	}
	if err := os.WriteFile(keyFile, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(keyFile, base.Add(2*time.Minute), base.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if !served().Equal(second) {
		t.Fatal("a broken key replaced the served certificate")
	}
	if _, err := metricsTLS(logger, certFile, keyFile, "ignored"); err == nil {
		t.Fatal("a broken key file accepted at start")
	}
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkSelfSigned: the metrics certificate generated at every start.
//
//	go test ./controller -run '^$' -bench SelfSigned
func BenchmarkSelfSigned(b *testing.B) {
	for b.Loop() {
		if _, err := selfSigned("node-a", time.Now()); err != nil {
			b.Fatal(err)
		}
	}
}
