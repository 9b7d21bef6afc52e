package main

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCertificatesReload: reload serves a renewed pair to new handshakes;
// a pair that no longer loads is refused with a log line, and the last
// good one stays.
func TestCertificatesReload(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	write := func(cert, key []byte) {
		t.Helper()
		if err := os.WriteFile(certFile, cert, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(keyFile, key, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var logs bytes.Buffer
	c := newCertificates(slog.New(slog.NewTextHandler(&logs, nil)))

	firstCert, firstKey := testCertificate(t)
	write(firstCert, firstKey)
	getCert, err := c.get(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	leaf := func() []byte {
		pair, err := getCert(nil)
		if err != nil {
			t.Fatal(err)
		}
		return pair.Certificate[0]
	}
	first := leaf()

	secondCert, secondKey := testCertificate(t)
	write(secondCert, secondKey)
	c.reload()
	second := leaf()
	if bytes.Equal(first, second) {
		t.Fatal("after reload, the old certificate is still served")
	}

	write([]byte("not a certificate"), secondKey)
	c.reload()
	if !bytes.Equal(leaf(), second) {
		t.Error("a pair that does not load replaced the good one")
	}
	if !strings.Contains(logs.String(), "certificate refused, the old one stays") {
		t.Errorf("no log line for the refused pair:\n%s", logs.String())
	}

	if _, err := c.get(filepath.Join(dir, "missing.crt"), keyFile); err == nil {
		t.Error("a missing certificate file was accepted")
	}
}
