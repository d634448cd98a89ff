//go:build unix

package operon

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// The health port is served first, NOT_SERVING while the service starts: here the start is held
// by a ledger that is a FIFO (opening it for writing blocks until it has a reader).
func TestHealthIsNotServingWhileStarting(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "ledger")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	app := New("starting").OnCreate(widgets, reconcile).Logger(slog.New(slog.NewTextHandler(io.Discard, nil)))
	app.cfg = &config{ledger: fifo, grace: time.Second}
	b, err := app.build()
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	healthLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopped := make(chan error, 1)
	go func() { stopped <- app.serve(ctx, b, lis, healthLis, nil) }()

	probe := plaintext(t, healthLis.Addr().String())
	for _, service := range []string{"", "operon.v1.HandlerService"} {
		r, err := healthpb.NewHealthClient(probe).Check(call(t), &healthpb.HealthCheckRequest{Service: service})
		if err != nil || r.Status != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Errorf("health of %q while starting: %v %v", service, r, err)
		}
	}

	reader, err := os.OpenFile(fifo, os.O_RDONLY, 0) // the start goes on
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = reader.Close() }()
	healthOf(t, probe, healthpb.HealthCheckResponse_SERVING)
	cancel()
	if err := <-stopped; err != nil {
		t.Errorf("serve: %v", err)
	}
}
