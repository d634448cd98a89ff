package operon

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	pb "example.invalid/operon/sdk/go/gen/operonv1"
)

// pki writes a CA, a server certificate for 127.0.0.1 and a client certificate into dir.
func pki(t *testing.T, dir string) (caPool *x509.CertPool, client tls.Certificate) {
	t.Helper()
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	write := func(name, kind string, der []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	caKey := key()
	caTemplate := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	write("ca.crt", "CERTIFICATE", caDER)
	issue := func(serial int64, usage x509.ExtKeyUsage, certFile, keyFile string) tls.Certificate {
		k := key()
		template := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: certFile},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
		der, err := x509.CreateCertificate(rand.Reader, template, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, _ := x509.MarshalECPrivateKey(k)
		write(certFile, "CERTIFICATE", der)
		write(keyFile, "EC PRIVATE KEY", keyDER)
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, certFile), filepath.Join(dir, keyFile))
		if err != nil {
			t.Fatal(err)
		}
		return pair
	}
	issue(2, x509.ExtKeyUsageServerAuth, "server.crt", "server.key")
	client = issue(3, x509.ExtKeyUsageClientAuth, "client.crt", "client.key")
	caPool = x509.NewCertPool()
	caPool.AddCert(ca)
	return caPool, client
}

func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	caPool, clientCert := pki(t, dir)
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	app := New("tls").OnCreate(widgets, reconcile).Logger(slog.New(slog.NewTextHandler(io.Discard, nil)))
	app.Flags(fs)
	err := fs.Parse([]string{"--tls-cert", filepath.Join(dir, "server.crt"), "--tls-key", filepath.Join(dir, "server.key"),
		"--tls-client-ca", filepath.Join(dir, "ca.crt"), "--ledger", filepath.Join(dir, "ledger")})
	if err != nil {
		t.Fatal(err)
	}
	tlsConfig, err := app.cfg.tlsConfig()
	if err != nil || tlsConfig.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Fatalf("tls config: %v %v", tlsConfig, err)
	}
	b, _ := app.build()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- app.serve(ctx, b, lis, tlsConfig) }()
	defer func() { cancel(); <-stopped }()

	describe := func(certs []tls.Certificate) error {
		creds := credentials.NewTLS(&tls.Config{RootCAs: caPool, Certificates: certs, MinVersion: tls.VersionTLS12})
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(creds))
		if err != nil {
			return err
		}
		defer func() { _ = conn.Close() }()
		_, err = pb.NewHandlerServiceClient(conn).Describe(call(t), &pb.DescribeRequest{ContractRevision: ContractRevision})
		return err
	}
	if err := describe([]tls.Certificate{clientCert}); err != nil {
		t.Errorf("with the client certificate: %v", err)
	}
	if err := describe(nil); err == nil {
		t.Error("a client without a certificate was served")
	}
}

func TestTLSFlagsGoTogether(t *testing.T) {
	for _, c := range []config{{tlsCert: "a"}, {tlsKey: "b"}, {tlsClientCA: "c"}} {
		if _, err := c.tlsConfig(); err == nil || !strings.Contains(err.Error(), "go together") {
			t.Errorf("%+v: %v", c, err)
		}
	}
	if c, err := (&config{}).tlsConfig(); c != nil || err != nil {
		t.Errorf("plaintext: %v %v", c, err)
	}
	if _, err := (&config{tlsCert: "/nonexistent", tlsKey: "/nonexistent"}).tlsConfig(); err == nil {
		t.Error("missing files")
	}
}

func TestFlagsFromTheEnvironment(t *testing.T) {
	t.Setenv("OPERON_HANDLER_LISTEN", "127.0.0.1:7777")
	t.Setenv("OPERON_HANDLER_SHUTDOWN_GRACE", "3s")
	app := New("env")
	app.Flags(flag.NewFlagSet("test", flag.ContinueOnError))
	if app.cfg.listen != "127.0.0.1:7777" || app.cfg.grace != 3*time.Second || app.cfg.err != nil {
		t.Errorf("config: %+v", app.cfg)
	}
	t.Setenv("OPERON_HANDLER_SHUTDOWN_GRACE", "soon")
	app.Flags(flag.NewFlagSet("test", flag.ContinueOnError))
	if err := app.OnCreate(widgets, reconcile).Serve(context.Background()); err == nil ||
		!strings.Contains(err.Error(), "OPERON_HANDLER_SHUTDOWN_GRACE") {
		t.Errorf("a bad environment variable: %v", err)
	}
}

func TestServeRefusesMistakesBeforeListening(t *testing.T) {
	err := New("x").OnCreate(GVR{}, reconcile).Serve(context.Background())
	if err == nil || !strings.Contains(err.Error(), "the resource is empty") {
		t.Errorf("%v", err)
	}
}
