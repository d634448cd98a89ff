package main

import (
	"context"
	"encoding/json"
	"flag"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	operon "example.invalid/operon/sdk/go"
	pb "example.invalid/operon/sdk/go/gen/operonv1"
)

func object(t *testing.T, raw string) operon.Object {
	t.Helper()
	o, err := operon.ParseObject([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func encode(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestSitesOwnAConfigMapAndAServicePerEntry(t *testing.T) {
	parent := object(t, `{"metadata": {"name": "site"}, "spec": {"entries": [
		{"name": "a", "port": 8080, "data": {"value": "1", "n": 2}}, {"port": 81}]}}`)
	current := map[operon.GVR][]operon.Object{configMaps: {object(t, `{"metadata": {"name": "site-a"}}`)}}
	r, err := sites(context.Background(), operon.NewTestSyncCtx(parent, current))
	if err != nil {
		t.Fatal(err)
	}
	if got := encode(t, r.Status); got != `{"currentChildren":1,"desiredChildren":4}` {
		t.Errorf("status: %s", got)
	}
	want := `[{"apiVersion":"v1","data":{"n":"2","port":"8080","value":"1"},"kind":"ConfigMap",` +
		`"metadata":{"labels":{"app.kubernetes.io/name":"site-a"},"name":"site-a"}},` +
		`{"apiVersion":"v1","kind":"Service","metadata":{"labels":{"app.kubernetes.io/name":"site-a"},"name":"site-a"},` +
		`"spec":{"ports":[{"name":"http","port":8080,"targetPort":8080}],"selector":{"app.kubernetes.io/name":"site-a"}}},` +
		`{"apiVersion":"v1","data":{"port":"81"},"kind":"ConfigMap",` +
		`"metadata":{"labels":{"app.kubernetes.io/name":"site-entry"},"name":"site-entry"}},` +
		`{"apiVersion":"v1","kind":"Service","metadata":{"labels":{"app.kubernetes.io/name":"site-entry"},"name":"site-entry"},` +
		`"spec":{"ports":[{"name":"http","port":81,"targetPort":81}],"selector":{"app.kubernetes.io/name":"site-entry"}}}]`
	if got := encode(t, r.Children); got != want {
		t.Errorf("children:\n got %s\nwant %s", got, want)
	}
}

// The test knobs of the parent's spec.
func TestSiteKnobs(t *testing.T) {
	sync := func(spec string) operon.SyncResult {
		r, err := sites(context.Background(), operon.NewTestSyncCtx(object(t, `{"metadata": {"name": "s"}, "spec": `+spec+`}`), nil))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := sync(`{"prefix": "p", "childNamespace": "elsewhere", "childStatus": true, "entries": [{"name": "x"}]}`)
	cm, _ := r.Children[0].(map[string]any)
	if got := encode(t, cm["metadata"]); got != `{"labels":{"app.kubernetes.io/name":"p-x"},"name":"p-x","namespace":"elsewhere"}` {
		t.Errorf("prefix and childNamespace: %s", got)
	}
	if got := encode(t, cm["status"]); got != `{"phase":"Ready"}` {
		t.Errorf("childStatus: %s", got)
	}
	if r := sync(`{"nullStatus": true, "entries": [{"name": "x"}]}`); r.Status != nil || len(r.Children) != 2 {
		t.Errorf("nullStatus: %+v", r)
	}
	if r := sync(`{}`); encode(t, r.Children) != "[]" || encode(t, r.Status) != `{"currentChildren":0,"desiredChildren":0}` {
		t.Errorf("no entries: %+v", r)
	}
	failing := operon.NewTestSyncCtx(object(t, `{"metadata": {"name": "s"}, "spec": {"fail": "boom"}}`), nil)
	if _, err := sites(context.Background(), failing); err == nil || err.Error() != "boom" {
		t.Errorf("fail: %v", err)
	}
	for hold, want := range map[bool]string{true: `{"finalizing":true,"held":true}`, false: `{"finalizing":true,"held":false}`} {
		parent := object(t, `{"metadata": {"name": "s"}, "spec": {"holdFinalize": `+encode(t, hold)+`}}`)
		f, err := finalizeSite(context.Background(), operon.NewTestSyncCtx(parent, nil))
		if err != nil || f.Finalized == hold || encode(t, f.Status) != want || f.RetryAfter != time.Second {
			t.Errorf("finalize (hold %v): %+v %v", hold, f, err)
		}
	}
}

func TestCommandLineMistakes(t *testing.T) {
	for _, args := range [][]string{
		{"--handler", "create:x"},
		{"--handler", "create:x", "--resource", "e2e.operon.dev/v1/"},
		{"--resource", "e2e.operon.dev/v1/widgets"},
		{"--configmaps", "inplace"},
		{"--parent", "sites"},
		{"--handler", "timer:x"},
	} {
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		if _, err := configure(fs, args); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
}

// describe serves the App of args on a free port and answers its manifest.
func describe(t *testing.T, args ...string) *pb.Manifest {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	_ = lis.Close()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	app, err := configure(fs, append([]string{"--listen", addr}, args...))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- app.Serve(ctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-served; err != nil {
			t.Error(err)
		}
	})
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	call, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	m, err := pb.NewHandlerServiceClient(conn).Describe(call, &pb.DescribeRequest{ContractRevision: operon.ContractRevision},
		grpc.WaitForReady(true))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// The command line becomes the manifest: the handlers with their options, the sync unless only
// handlers are asked for.
func TestTheCommandLineIsTheManifest(t *testing.T) {
	m := describe(t, "--configmaps", "OnDelete", "--services", "RollingRecreate", "--finalize", "--resync", "5")
	if len(m.Handlers) != 0 || len(m.Syncs) != 1 {
		t.Fatalf("the sync alone: %v", m)
	}
	s := m.Syncs[0]
	if s.Id != "sites" || s.Parent.Name != "sites" || !s.Finalize || s.ResyncPeriod.AsDuration() != 5*time.Second ||
		s.Children[0].UpdateStrategy != pb.UpdateStrategy_UPDATE_STRATEGY_ON_DELETE ||
		s.Children[1].UpdateStrategy != pb.UpdateStrategy_UPDATE_STRATEGY_ROLLING_RECREATE {
		t.Errorf("sync: %v", s)
	}
	m = describe(t, "--resource", "v1/pods", "--handler", "create:flaky,retries=3,backoff=0.5,fail_temporarily=1",
		"--handler", "validate:check,operations=CREATE|UPDATE,subresource=*,ignore_failures=true", "--handler", "mutate:inject")
	if len(m.Syncs) != 0 || len(m.Handlers) != 3 {
		t.Fatalf("the handlers alone: %v", m)
	}
	create, validate, mutate := m.Handlers[0], m.Handlers[1], m.Handlers[2]
	if create.Id != "flaky" || create.Kind != pb.HandlerKind_HANDLER_KIND_CREATE || create.Resource.Name != "pods" ||
		create.Resource.Group != "" || create.Options.GetRetries() != 3 || create.Options.Backoff.AsDuration() != 500*time.Millisecond {
		t.Errorf("create: %v", create)
	}
	if validate.Kind != pb.HandlerKind_HANDLER_KIND_VALIDATE || strings.Join(validate.Options.Operations, "|") != "CREATE|UPDATE" ||
		validate.Options.GetSubresource() != "*" || !validate.Options.IgnoreFailures {
		t.Errorf("validate: %v", validate)
	}
	if mutate.Id != "inject" || mutate.Kind != pb.HandlerKind_HANDLER_KIND_MUTATE {
		t.Errorf("mutate: %v", mutate)
	}
	if m := describe(t, "--resource", "v1/pods", "--handler", "create:x", "--parent", "e2e.operon.dev/v1/plainsites"); len(m.Handlers) != 1 ||
		len(m.Syncs) != 1 || m.Syncs[0].Parent.Name != "plainsites" {
		t.Errorf("handlers and a sync: %v", m)
	}
}

// A mistake the SDK finds in the registrations stops the service before it listens.
func TestAnOptionThatDoesNotApplyIsRefused(t *testing.T) {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	app, err := configure(fs, []string{"--resource", "v1/pods", "--handler", "validate:x,retries=1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := app.Serve(context.Background()); err == nil || !strings.Contains(err.Error(), "Retries does not apply") {
		t.Errorf("served: %v", err)
	}
}
