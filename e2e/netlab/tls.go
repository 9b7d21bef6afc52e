package netlab

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
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

// StartVsftpdTLS runs a vsftpd that requires TLS (explicit, AUTH TLS) for
// the anonymous user's login and data, at port, from the network's own
// configuration, with the server certificate of f. reuse sets
// require_ssl_reuse (vsftpd's default: YES): a data connection must resume
// the control connection's TLS session.
func (h *Network) StartVsftpdTLS(port int, f *TLSFiles, reuse bool) (*Server, error) {
	yes := map[bool]string{true: "YES", false: "NO"}
	extra := fmt.Sprintf(`ssl_enable=YES
allow_anon_ssl=YES
force_anon_logins_ssl=YES
force_anon_data_ssl=YES
require_ssl_reuse=%s
ssl_ciphers=HIGH
rsa_cert_file=%s
rsa_private_key_file=%s
`, yes[reuse], f.ServerCert, f.ServerKey)
	s := &Server{Kind: Vsftpd, Port: port, PassiveFirst: serverSpecs[Vsftpd].passiveFirst, PassiveLast: serverSpecs[Vsftpd].passiveLast}
	s.Version = "vsftpd (TLS required)"
	for i, name := range []string{"vsftpd.conf", "vsftpd6.conf"} {
		if i == 1 && h.ServerIP6 == "" {
			break
		}
		text, err := os.ReadFile(filepath.Join(h.Dir, name))
		if err != nil {
			return nil, fmt.Errorf("netlab: the network's vsftpd configuration: %w", err)
		}
		tag := fmt.Sprintf("-tls-%d", port)
		conf := strings.NewReplacer(
			"listen_port=21\n", fmt.Sprintf("listen_port=%d\n", port),
			".log\n", tag+".log\n",
		).Replace(string(text)) + extra
		path := filepath.Join(h.Dir, strings.TrimSuffix(name, ".conf")+tag+".conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			return nil, err
		}
		p, err := h.Server.Start("vsftpd", path)
		if err != nil {
			return nil, err
		}
		s.Procs = append(s.Procs, p)
		s.Logs = append(s.Logs, filepath.Join(h.Dir, strings.TrimSuffix(name, ".conf")+tag+".log"))
	}
	return s, h.waitServer(s, h.serverIPs())
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
