package main

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
)

// certificates holds the certificate pairs that listeners serve to TLS
// clients, by their files, and re-reads them on SIGHUP (reload): a pair
// that no longer loads is refused with a log line and the old one stays.
// Safe for concurrent use.
type certificates struct {
	log   *slog.Logger
	mu    sync.Mutex
	pairs map[[2]string]*atomic.Pointer[tls.Certificate]
}

func newCertificates(log *slog.Logger) *certificates {
	return &certificates{log: log, pairs: map[[2]string]*atomic.Pointer[tls.Certificate]{}}
}

// get loads the pair of certFile and keyFile, once, and returns a
// tls.Config.GetCertificate that serves its latest good version.
func (c *certificates) get(certFile, keyFile string) (func(*tls.ClientHelloInfo) (*tls.Certificate, error), error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := [2]string{certFile, keyFile}
	p := c.pairs[k]
	if p == nil {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("loading certificate %s and key %s: %w", certFile, keyFile, err)
		}
		p = new(atomic.Pointer[tls.Certificate])
		p.Store(&pair)
		c.pairs[k] = p
	}
	return func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return p.Load(), nil }, nil
}

// reload re-reads every pair.
func (c *certificates) reload() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, p := range c.pairs {
		pair, err := tls.LoadX509KeyPair(k[0], k[1])
		if err != nil {
			c.log.Error("reload: certificate refused, the old one stays", "cert", k[0], "key", k[1], "err", err)
			continue
		}
		p.Store(&pair)
		c.log.Info("certificate reloaded", "cert", k[0])
	}
}

// tlsVersion is the crypto/tls constant of a configured minimum version.
func tlsVersion(v string) uint16 {
	if v == "1.3" {
		return tls.VersionTLS13
	}
	return tls.VersionTLS12
}
