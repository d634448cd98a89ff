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
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

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
	go func() { stopped <- app.serve(ctx, b, lis, nil, tlsConfig) }()
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

// plaintext is a client of addr without TLS, as the kubelet's grpc probes are.
func plaintext(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// healthOf polls the overall health at conn until it is want (or fails the test after 10 s);
// every answer before must be a status, not an error.
func healthOf(t *testing.T, conn *grpc.ClientConn, want healthpb.HealthCheckResponse_ServingStatus) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := healthpb.NewHealthClient(conn).Check(call(t), &healthpb.HealthCheckRequest{})
		switch {
		case err != nil:
			t.Fatalf("health, waiting for %v: %v", want, err)
		case r.Status == want:
			return
		case time.Now().After(deadline):
			t.Fatalf("health is %v, not %v", r.Status, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The kubelet's grpc probes speak no TLS: with mutual TLS on --listen, --health-listen answers
// the same health in plaintext (and nothing else), NOT_SERVING while the calls in flight drain,
// and closes with the handler server.
func TestHealthListenServesPlaintextBesideTLS(t *testing.T) {
	dir := t.TempDir()
	caPool, clientCert := pki(t, dir)
	started, release := make(chan struct{}), make(chan struct{})
	var released sync.Once
	releaseCall := func() { released.Do(func() { close(release) }) }
	t.Cleanup(releaseCall) // a failed test does not leave the handler, and so serve, blocked
	app := New("tls").
		OnUpdate(widgets, func(context.Context, *Ctx) (any, error) {
			close(started)
			<-release
			return nil, nil
		}, ID("slow")).
		Logger(slog.New(slog.NewTextHandler(io.Discard, nil)))
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	app.Flags(fs)
	err := fs.Parse([]string{"--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0",
		"--tls-cert", filepath.Join(dir, "server.crt"), "--tls-key", filepath.Join(dir, "server.key"),
		"--tls-client-ca", filepath.Join(dir, "ca.crt"), "--shutdown-grace", "10s"})
	if err != nil {
		t.Fatal(err)
	}
	tlsConfig, err := app.cfg.tlsConfig()
	if err != nil {
		t.Fatal(err)
	}
	b, err := app.build()
	if err != nil {
		t.Fatal(err)
	}
	lis, healthLis, err := app.cfg.bind()
	if err != nil || healthLis == nil {
		t.Fatalf("bind: %v %v", healthLis, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopped := make(chan error, 1)
	go func() { stopped <- app.serve(ctx, b, lis, healthLis, tlsConfig) }()

	probe := plaintext(t, healthLis.Addr().String())
	healthOf(t, probe, healthpb.HealthCheckResponse_SERVING)
	for _, service := range []string{"operon.v1.HandlerService", "operon.v1.SyncService"} {
		r, err := healthpb.NewHealthClient(probe).Check(call(t), &healthpb.HealthCheckRequest{Service: service})
		if service == "operon.v1.HandlerService" && (err != nil || r.Status != healthpb.HealthCheckResponse_SERVING) {
			t.Errorf("health of %s: %v %v", service, r, err)
		}
		if service == "operon.v1.SyncService" && status.Code(err) != codes.NotFound {
			t.Errorf("health of a service not served: %v %v", r, err)
		}
	}
	// Only the health service: no handler service, no reflection, on the plaintext port.
	if _, err := pb.NewHandlerServiceClient(probe).Describe(call(t), &pb.DescribeRequest{ContractRevision: ContractRevision}); status.Code(err) != codes.Unimplemented {
		t.Errorf("the health port serves the handlers: %v", err)
	}
	// And the handler port itself cannot be probed in plaintext.
	if _, err := healthpb.NewHealthClient(plaintext(t, lis.Addr().String())).Check(call(t), &healthpb.HealthCheckRequest{}); err == nil {
		t.Error("the TLS port answered a plaintext probe")
	}
	watch, err := healthpb.NewHealthClient(probe).Watch(call(t), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := watch.Recv(); err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("watch: %v %v", r, err)
	}

	// A call in flight over mutual TLS holds the drain.
	creds := credentials.NewTLS(&tls.Config{RootCAs: caPool, Certificates: []tls.Certificate{clientCert}, MinVersion: tls.VersionTLS12})
	core, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = core.Close() }()
	invoked := make(chan error, 1)
	go func() {
		_, err := pb.NewHandlerServiceClient(core).Invoke(call(t), invoke("slow", 0, "s0"))
		invoked <- err
	}()
	select {
	case <-started:
	case err := <-invoked:
		t.Fatalf("invoke: %v", err)
	}

	// The stop begins: NOT_SERVING on the health port while the handler server drains.
	cancel()
	if r, err := watch.Recv(); err != nil || r.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("watch while draining: %v %v", r, err)
	}
	healthOf(t, probe, healthpb.HealthCheckResponse_NOT_SERVING)
	select {
	case err := <-stopped:
		t.Fatalf("stopped before the call in flight finished: %v", err)
	default:
	}

	// Drained: the health port closes with the handler server.
	releaseCall()
	if err := <-invoked; err != nil {
		t.Errorf("the call in flight: %v", err)
	}
	if err := <-stopped; err != nil {
		t.Errorf("serve: %v", err)
	}
	if r, err := healthpb.NewHealthClient(probe).Check(call(t), &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("the health port after the stop: %v %v", r, err)
	}
	if _, err := net.Dial("tcp", healthLis.Addr().String()); err == nil {
		t.Error("the health port still accepts connections")
	}
}

// A serve that fails before the handlers are served closes the health port too.
func TestHealthPortClosesWhenServeFails(t *testing.T) {
	healthLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	app := New("starting").OnCreate(widgets, reconcile).Logger(slog.New(slog.NewTextHandler(io.Discard, nil)))
	// A ledger that cannot be opened: serve fails after the health port started, before the
	// handlers are served.
	app.cfg = &config{ledger: filepath.Join(t.TempDir(), "missing", "ledger"), grace: time.Second}
	b, _ := app.build()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := app.serve(context.Background(), b, lis, healthLis, nil); err == nil || !strings.Contains(err.Error(), "--ledger") {
		t.Errorf("serve: %v", err)
	}
	if _, err := net.Dial("tcp", healthLis.Addr().String()); err == nil {
		t.Error("the health port is left open")
	}
}

func TestHealthListenRefusesABadAddress(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = taken.Close() }()
	for _, addr := range []string{"50052", "localhost", "127.0.0.1:notaport", "127.0.0.1:99999", taken.Addr().String()} {
		app := New("bad").OnCreate(widgets, reconcile).Logger(slog.New(slog.NewTextHandler(io.Discard, nil)))
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		app.Flags(fs)
		if err := fs.Parse([]string{"--listen", "127.0.0.1:0", "--health-listen", addr}); err != nil {
			t.Fatal(err)
		}
		err := app.Serve(context.Background())
		if err == nil || !strings.Contains(err.Error(), "--health-listen") || !strings.Contains(err.Error(), addr) {
			t.Errorf("--health-listen %s: %v", addr, err)
		}
	}
	// From the environment, as the other flags.
	t.Setenv("OPERON_HANDLER_HEALTH_LISTEN", "nowhere")
	app := New("env").OnCreate(widgets, reconcile).Logger(slog.New(slog.NewTextHandler(io.Discard, nil)))
	app.Flags(flag.NewFlagSet("test", flag.ContinueOnError))
	app.cfg.listen = "127.0.0.1:0"
	if err := app.Serve(context.Background()); err == nil || !strings.Contains(err.Error(), `--health-listen "nowhere"`) {
		t.Errorf("OPERON_HANDLER_HEALTH_LISTEN=nowhere: %v", err)
	}
}
