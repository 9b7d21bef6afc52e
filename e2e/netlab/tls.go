package netlab

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// TLSFiles are the PEM files of a test certificate authority and of the
// certificates it signed: ftpgate's, for its clients (the gateway's
// public addresses), the FTP server's (its addresses), and the same
// server's expired one.
type TLSFiles struct {
	CA                      string // the authority's certificate: what clients and ftpgate trust
	GatewayCert, GatewayKey string
	ServerCert, ServerKey   string
	ExpiredCert, ExpiredKey string // the server's addresses, expired an hour ago
}

// MakeTLSFiles writes a certificate authority, and certificates for the
// gateway and the server, into dir/tls. Keys are ECDSA P-256; the
// certificates hold the hosts' IP addresses and last a day (but the
// expired one).
func (h *Network) MakeTLSFiles() (*TLSFiles, error) {
	dir := filepath.Join(h.Dir, "tls")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "ftpgate test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	f := &TLSFiles{CA: filepath.Join(dir, "ca.pem")}
	if err := writePEM(f.CA, "CERTIFICATE", caDER); err != nil {
		return nil, err
	}
	leaf := func(name string, serial int64, ips []string, notAfter time.Time) (cert, key string, err error) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return "", "", err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: name},
			NotBefore:    now.Add(-2 * time.Hour),
			NotAfter:     notAfter,
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}
		for _, ip := range ips {
			tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			return "", "", err
		}
		kder, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			return "", "", err
		}
		cert, key = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
		if err := writePEM(cert, "CERTIFICATE", der); err != nil {
			return "", "", err
		}
		return cert, key, writePEM(key, "EC PRIVATE KEY", kder)
	}
	day := now.Add(24 * time.Hour)
	if f.GatewayCert, f.GatewayKey, err = leaf("gateway", 2, []string{GatewayOut, GatewayOut6}, day); err != nil {
		return nil, err
	}
	if f.ServerCert, f.ServerKey, err = leaf("server", 3, []string{ServerAddr, ServerAddr6}, day); err != nil {
		return nil, err
	}
	if f.ExpiredCert, f.ExpiredKey, err = leaf("expired", 4, []string{ServerAddr, ServerAddr6}, now.Add(-time.Hour)); err != nil {
		return nil, err
	}
	return f, nil
}

func writePEM(path, kind string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600)
}

// StartTLSServer runs an FTP server of kind as StartServer does, but
// requiring explicit TLS (AUTH TLS) for the anonymous user's login and
// data connections, with the certificate cert and key (PEM files). With
// reuse, vsftpd (require_ssl_reuse, its default) and proftpd (its
// default) refuse a data connection that does not resume the control
// connection's TLS session; pure-ftpd (-Y 3) has no such setting.
func (h *Network) StartTLSServer(kind ServerKind, port int, cert, key string, reuse bool) (*Server, error) {
	s, err := h.startServer(kind, port, &serverTLS{cert: cert, key: key, reuse: reuse})
	if err != nil {
		return nil, err
	}
	s.Version += " (TLS required)"
	return s, nil
}

// FTPSClients are the client matrix's programs speaking FTPS (explicit
// TLS, AUTH TLS, and encrypted data, PROT P), trusting the authority ca:
// curl and lftp resume the control connection's TLS session on their data
// connections; Python's ftplib does not.
func FTPSClients(ca string) []Client {
	lftpTLS := "set ftp:ssl-allow yes; set ftp:ssl-force yes; set ftp:ssl-protect-data yes; set ssl:ca-file " + ca + "; set ssl:verify-certificate yes"
	return []Client{
		{Name: "curl EPSV TLS", Passive: true, Want: "> EPSV", Avoid: "> PASV", argv: curl("--ssl-reqd", "--cacert", ca)},
		{Name: "lftp passive TLS", Passive: true, Want: "---> PASV", argv: lftp(lftpTLS + "; set ftp:passive-mode on")},
		{Name: "lftp active TLS", Want: "---> PORT", argv: lftp(lftpTLS + "; set ftp:passive-mode off")},
		{Name: "ftplib passive TLS", Passive: true, Want: "*cmd* 'PASV'", argv: ftplib("passive", "--tls", ca)},
		{Name: "ftplib active TLS", Want: "*cmd* 'PORT", argv: ftplib("active", "--tls", ca)},
	}
}

// CurlImplicit is curl speaking implicit FTPS (ftps://, TLS from the first
// byte), passive, trusting ca.
func CurlImplicit(ca string) Client {
	return Client{Name: "curl implicit TLS", Passive: true, Want: "> EPSV", argv: curlURL("ftps", "--cacert", ca)}
}
