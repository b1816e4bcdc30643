package controller

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"os"
	"sync"
	"time"

	"k8s.io/klog/v2"
)

// metricsTLS returns the metrics endpoint's TLS configuration: the certificate and key files when
// given (re-read when either file changes, so a rotated Secret needs no restart), else a
// self-signed certificate for host generated now (kept in memory only).
//
// The self-signed certificate has an ECDSA P-256 key: generating it takes about 1.4 ms
// (BenchmarkSelfSigned), where client-go's util/cert (two RSA 2048 keys) took about 400 ms on the
// test machine, at every start of every node's controller.
func metricsTLS(logger klog.Logger, certFile, keyFile, host string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
	if certFile == "" {
		pair, err := selfSigned(host, time.Now())
		if err != nil {
			return nil, fmt.Errorf("generate the metrics endpoint's self-signed certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
		return cfg, nil
	}
	fc := &fileCert{logger: logger, certFile: certFile, keyFile: keyFile}
	if err := fc.load(); err != nil {
		return nil, err
	}
	cfg.GetCertificate = fc.get
	return cfg, nil
}

// fileCert is a certificate read from files, reloaded when their modification times change.
type fileCert struct {
	logger            klog.Logger
	certFile, keyFile string
	mu                sync.Mutex
	pair              *tls.Certificate
	certMod, keyMod   time.Time
}

func (f *fileCert) load() error {
	cm, km, err := f.modTimes()
	if err != nil {
		return err
	}
	pair, err := tls.LoadX509KeyPair(f.certFile, f.keyFile)
	if err != nil {
		return fmt.Errorf("metrics certificate %q and key %q: %w", f.certFile, f.keyFile, err)
	}
	f.pair, f.certMod, f.keyMod = &pair, cm, km
	return nil
}

func (f *fileCert) modTimes() (certMod, keyMod time.Time, err error) {
	ci, err := os.Stat(f.certFile)
	if err != nil {
		return time.Time{}, time.Time{}, fmt.Errorf("metrics certificate: %w", err)
	}
	ki, err := os.Stat(f.keyFile)
	if err != nil {
		return time.Time{}, time.Time{}, fmt.Errorf("metrics key: %w", err)
	}
	return ci.ModTime(), ki.ModTime(), nil
}

// get serves the current pair; a pair that fails to reload leaves the previous one in use.
func (f *fileCert) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if cm, km, err := f.modTimes(); err == nil && (!cm.Equal(f.certMod) || !km.Equal(f.keyMod)) {
		if err := f.load(); err != nil {
			f.certMod, f.keyMod = cm, km // once per change, not once per handshake
			f.logger.Error(err, "Metrics certificate not reloaded, serving the previous one")
		}
	}
	return f.pair, nil
}

// selfSigned returns a self-signed serving certificate for host (a DNS name or an IP), valid from
// an hour before now for a year.
func selfSigned(host string, now time.Time) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: host},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
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
