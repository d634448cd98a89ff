package operon

// Serving: the command line, TLS, the gRPC server with the handler services, the standard
// health service and server reflection, the optional plaintext health-only listener, and the
// graceful stop on SIGTERM/SIGINT.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	pb "example.invalid/operon/sdk/go/gen/operonv1"
)

// config is what the command line and the environment say.
type config struct {
	listen       string
	healthListen string // the plaintext health-only listener ("": none)
	ledger       string
	tlsCert      string
	tlsKey       string
	tlsClientCA  string
	grace        time.Duration
	// err: an environment variable that does not parse (reported by Serve).
	err error
}

// env returns the environment variable's value, or def.
func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

// Flags registers the service's command-line flags on fs, each defaulting to its environment
// variable: --listen (OPERON_HANDLER_LISTEN, default 127.0.0.1:50051), --health-listen
// (OPERON_HANDLER_HEALTH_LISTEN, default none), --ledger (OPERON_HANDLER_LEDGER), --tls-cert,
// --tls-key, --tls-client-ca (OPERON_HANDLER_TLS_CERT, …_KEY, …_CLIENT_CA) and --shutdown-grace
// (OPERON_HANDLER_SHUTDOWN_GRACE, default 10s). Call it before fs.Parse when the operator has
// flags of its own (fs.Set configures them in code); otherwise Serve parses the command line
// itself.
func (a *App) Flags(fs *flag.FlagSet) {
	c := &config{}
	fs.StringVar(&c.listen, "listen", env("OPERON_HANDLER_LISTEN", "127.0.0.1:50051"),
		"the gRPC address to listen on; port 0 picks one; \"listening on ADDR\" is printed on stdout (env OPERON_HANDLER_LISTEN)")
	fs.StringVar(&c.healthListen, "health-listen", env("OPERON_HANDLER_HEALTH_LISTEN", ""),
		"also serve the gRPC health service (grpc.health.v1) alone on this HOST:PORT, in plaintext whatever the TLS of --listen: for the kubelet's grpc probes, e.g. 0.0.0.0:50052 (env OPERON_HANDLER_HEALTH_LISTEN)")
	fs.StringVar(&c.ledger, "ledger", env("OPERON_HANDLER_LEDGER", ""),
		"append one JSON line per handler run to this file (env OPERON_HANDLER_LEDGER)")
	fs.StringVar(&c.tlsCert, "tls-cert", env("OPERON_HANDLER_TLS_CERT", ""),
		"serve TLS with this certificate (PEM); needs --tls-key (env OPERON_HANDLER_TLS_CERT)")
	fs.StringVar(&c.tlsKey, "tls-key", env("OPERON_HANDLER_TLS_KEY", ""), "the private key (PEM) of --tls-cert (env OPERON_HANDLER_TLS_KEY)")
	fs.StringVar(&c.tlsClientCA, "tls-client-ca", env("OPERON_HANDLER_TLS_CLIENT_CA", ""),
		"require mutual TLS: clients (the core) must present a certificate signed by this CA (PEM) (env OPERON_HANDLER_TLS_CLIENT_CA)")
	grace := DefaultShutdownGrace
	if v := env("OPERON_HANDLER_SHUTDOWN_GRACE", ""); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			c.err = fmt.Errorf("OPERON_HANDLER_SHUTDOWN_GRACE: %w", err)
		}
		grace = d
	}
	fs.DurationVar(&c.grace, "shutdown-grace", grace,
		"on SIGTERM/SIGINT, how long calls in flight may take to finish (env OPERON_HANDLER_SHUTDOWN_GRACE)")
	a.cfg = c
}

// DefaultShutdownGrace is how long calls in flight may take to finish after SIGTERM/SIGINT.
const DefaultShutdownGrace = 10 * time.Second

// tlsConfig loads the server's TLS configuration (nil: plaintext).
func (c *config) tlsConfig() (*tls.Config, error) {
	switch {
	case c.tlsCert == "" && c.tlsKey == "" && c.tlsClientCA == "":
		return nil, nil
	case c.tlsCert == "" || c.tlsKey == "":
		return nil, errors.New("--tls-cert and --tls-key go together (and --tls-client-ca needs them)")
	}
	cert, err := tls.LoadX509KeyPair(c.tlsCert, c.tlsKey)
	if err != nil {
		return nil, fmt.Errorf("loading --tls-cert/--tls-key: %w", err)
	}
	config := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if c.tlsClientCA != "" {
		pem, err := os.ReadFile(c.tlsClientCA)
		if err != nil {
			return nil, fmt.Errorf("reading --tls-client-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-client-ca %s holds no PEM certificate", c.tlsClientCA)
		}
		config.ClientCAs = pool
		config.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return config, nil
}

// Serve checks the registrations, then serves them until ctx is done or the process gets
// SIGTERM or SIGINT, then stops gracefully: the health service answers NOT_SERVING, daemons
// are cancelled (the core restarts them elsewhere), calls in flight get --shutdown-grace to
// finish, and buffered spans are exported. With --health-listen, the health service alone is
// also served there in plaintext, from before the handlers are served until they are stopped.
// Unless Flags bound the flags to the operator's own FlagSet, Serve parses os.Args itself (-h
// prints them and returns nil).
//
// # Errors
// Registration mistakes (all of them, joined), a bad command line, TLS files that cannot be
// loaded, an address that cannot be bound (--listen or --health-listen), or a server failure.
func (a *App) Serve(ctx context.Context) error {
	app, err := a.build()
	if err != nil {
		return err
	}
	if a.cfg == nil {
		fs := flag.NewFlagSet(os.Args[0], flag.ContinueOnError)
		a.Flags(fs)
		if err := fs.Parse(os.Args[1:]); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil
			}
			return err
		}
		if fs.NArg() > 0 {
			return fmt.Errorf("unexpected arguments: %q", fs.Args())
		}
	}
	if a.cfg.err != nil {
		return a.cfg.err
	}
	tlsConfig, err := a.cfg.tlsConfig()
	if err != nil {
		return err
	}
	lis, healthLis, err := a.cfg.bind()
	if err != nil {
		return err
	}
	return a.serve(ctx, app, lis, healthLis, tlsConfig)
}

// bind listens on --listen and, when given, on --health-listen (healthLis nil: none); on an
// error, neither is left open.
func (c *config) bind() (lis, healthLis net.Listener, err error) {
	if c.healthListen != "" {
		if _, _, err := net.SplitHostPort(c.healthListen); err != nil {
			return nil, nil, fmt.Errorf("--health-listen %q: want HOST:PORT: %w", c.healthListen, err)
		}
	}
	if lis, err = net.Listen("tcp", c.listen); err != nil {
		return nil, nil, err
	}
	if c.healthListen != "" {
		if healthLis, err = net.Listen("tcp", c.healthListen); err != nil {
			_ = lis.Close()
			return nil, nil, fmt.Errorf("--health-listen %s: %w", c.healthListen, err)
		}
	}
	return lis, healthLis, nil
}

// serve serves app on lis (and the health service alone on healthLis, when not nil) until ctx
// is done or a signal comes. It closes both listeners.
func (a *App) serve(ctx context.Context, app *built, lis, healthLis net.Listener, tlsConfig *tls.Config) error {
	ctx, stopSignals := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
	defer stopSignals()
	// One health service for both servers: NOT_SERVING until the handlers are served.
	services := servedServices(app)
	healthServer := health.NewServer()
	setHealth(healthServer, services, healthpb.HealthCheckResponse_NOT_SERVING)
	stopHealthOnly := func() {}
	if healthLis != nil {
		stopHealthOnly = a.serveHealthOnly(healthServer, healthLis)
	}
	defer stopHealthOnly() // on every return; the drain below stops it once the handlers are stopped
	ledger, err := openLedger(a.cfg.ledger)
	if err != nil {
		_ = lis.Close()
		return fmt.Errorf("opening --ledger: %w", err)
	}
	defer ledger.close()
	flush, err := initTracing(ctx, app.name, func(f string, args ...any) { a.log.Warn(fmt.Sprintf(f, args...)) })
	if err != nil {
		_ = lis.Close()
		return fmt.Errorf("cannot export traces: %w", err)
	}

	stopping, stopDaemons := context.WithCancel(context.Background())
	defer stopDaemons()
	server := newServer(app, &runtimeState{
		app: app, log: a.log, ledger: ledger, answers: newAnswers(rememberedAttempts), stopping: stopping,
	}, tlsConfig, healthServer)
	fmt.Printf("listening on %s\n", lis.Addr())
	a.log.Info("Serving.", "service", app.name, "address", lis.Addr().String(), "tls", tlsConfig != nil,
		"handlers", len(app.handlers), "syncs", len(app.syncs), "tasks", len(app.tasks))

	served := make(chan error, 1)
	setHealth(healthServer, services, healthpb.HealthCheckResponse_SERVING)
	go func() { served <- server.Serve(lis) }()
	select {
	case err := <-served:
		healthServer.Shutdown()
		flushSpans(a, flush)
		return err
	case <-ctx.Done():
	}

	a.log.Info("Stopping: draining the calls in flight.", "grace", a.cfg.grace.String())
	healthServer.Shutdown() // NOT_SERVING from now on
	stopDaemons()
	drained := make(chan struct{})
	go func() {
		server.GracefulStop()
		close(drained)
	}()
	select {
	case <-drained:
	case <-time.After(a.cfg.grace):
		a.log.Warn("Calls still in flight after the grace period; stopping anyway.")
		server.Stop()
		<-drained
	}
	stopHealthOnly() // after NOT_SERVING and the drain: a probe saw the drain, not a refused port
	flushSpans(a, flush)
	a.log.Info("Stopped.")
	return nil
}

func flushSpans(a *App, flush func(context.Context) error) {
	if flush == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := flush(ctx); err != nil {
		a.log.Warn("Flushing traces failed.", "error", err)
	}
}

// serveHealthOnly serves healthServer alone (no handler service, no reflection) on lis, in
// plaintext: for the kubelet's grpc probes, which speak neither TLS nor mutual TLS. The
// returned func stops it (at once: an open Watch does not hold it) and waits for it; it may be
// called more than once.
func (a *App) serveHealthOnly(healthServer *health.Server, lis net.Listener) (stop func()) {
	server := grpc.NewServer()
	healthpb.RegisterHealthServer(server, healthServer)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := server.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			a.log.Warn("The health service (--health-listen) failed; the handlers are still served.", "error", err)
		}
	}()
	a.log.Info("Serving the health service.", "address", lis.Addr().String(), "tls", false)
	var once sync.Once
	return func() {
		once.Do(server.Stop)
		<-done
	}
}

// servedServices names the operon.v1 services that app serves (their health is told).
func servedServices(app *built) []string {
	services := []string{pb.HandlerService_ServiceDesc.ServiceName}
	if len(app.syncs) > 0 {
		services = append(services, pb.SyncService_ServiceDesc.ServiceName)
	}
	if len(app.tasks) > 0 {
		services = append(services, pb.TaskService_ServiceDesc.ServiceName)
	}
	return services
}

// setHealth sets status for the whole server ("") and for every one of services.
func setHealth(h *health.Server, services []string, status healthpb.HealthCheckResponse_ServingStatus) {
	h.SetServingStatus("", status)
	for _, name := range services {
		h.SetServingStatus(name, status)
	}
}

// newServer makes the gRPC server with the handler services, healthServer and reflection.
func newServer(app *built, state *runtimeState, tlsConfig *tls.Config, healthServer *health.Server) *grpc.Server {
	options := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(continueTrace),
		grpc.ChainStreamInterceptor(continueStreamTrace),
	}
	if tlsConfig != nil {
		options = append(options, grpc.Creds(credentials.NewTLS(tlsConfig)))
	}
	server := grpc.NewServer(options...)
	pb.RegisterHandlerServiceServer(server, &handlerServer{runtimeState: state})
	if len(app.syncs) > 0 {
		pb.RegisterSyncServiceServer(server, &syncServer{runtimeState: state})
	}
	if len(app.tasks) > 0 {
		pb.RegisterTaskServiceServer(server, &taskServer{runtimeState: state})
	}
	healthpb.RegisterHealthServer(server, healthServer)
	reflection.Register(server)
	return server
}
