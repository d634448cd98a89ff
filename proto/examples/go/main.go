// Command operon-sync-example-go is the example sync operator, and a few change handlers, as an
// Operon handler service in Go (grpc-go). The sync operator (declared unless --handler is given
// without --parent): a parent (by default sites.e2e.operon.dev) owns, for every entry of
// spec.entries ({name, port, data}), a ConfigMap and a Service named <prefix>-<entry name>
// (prefix: spec.prefix, else the parent's name). The status counts the desired and the current
// children. It behaves exactly like the Rust example (proto/examples/rust-sync); the end-to-end
// tests drive both. Test knobs in the parent's spec: fail (answer this error), childNamespace
// (put the children there), childStatus (give the children a status), nullStatus (leave the
// status alone), holdFinalize (Finalize answers "not yet"). The change handlers (--resource,
// --handler): see handlers.go. Every call continues the core's trace when
// OTEL_EXPORTER_OTLP_ENDPOINT is set: see telemetry.go.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "example.invalid/operon/sdk/go/gen/operonv1"
)

var strategies = map[string]pb.UpdateStrategy{
	"OnDelete":        pb.UpdateStrategy_UPDATE_STRATEGY_ON_DELETE,
	"Recreate":        pb.UpdateStrategy_UPDATE_STRATEGY_RECREATE,
	"InPlace":         pb.UpdateStrategy_UPDATE_STRATEGY_IN_PLACE,
	"RollingRecreate": pb.UpdateStrategy_UPDATE_STRATEGY_ROLLING_RECREATE,
	"RollingInPlace":  pb.UpdateStrategy_UPDATE_STRATEGY_ROLLING_IN_PLACE,
}

type config struct {
	// serveSync: declare the sync registration of --parent.
	serveSync  bool
	parent     string
	configmaps pb.UpdateStrategy
	services   pb.UpdateStrategy
	finalize   bool
	resync     int64
	// The change handlers of --handler, for the resource of --resource.
	resource *pb.ResourceSelector
	handlers []changeHandler
}

// example serves both services: HandlerService (Describe, Invoke) and SyncService.
type example struct {
	pb.UnimplementedHandlerServiceServer
	pb.UnimplementedSyncServiceServer
	cfg    config
	mu     sync.Mutex
	ledger *os.File
}

func core(name string) *pb.ResourceSelector {
	return &pb.ResourceSelector{Version: "v1", Name: name}
}

func (e *example) Describe(context.Context, *pb.DescribeRequest) (*pb.Manifest, error) {
	manifest := &pb.Manifest{ServiceName: "example-go", ContractRevision: 1}
	for _, h := range e.cfg.handlers {
		manifest.Handlers = append(manifest.Handlers,
			&pb.Handler{Id: h.id, Kind: h.kind, Resource: e.cfg.resource, Options: h.options})
	}
	if !e.cfg.serveSync {
		return manifest, nil
	}
	parts := strings.SplitN(e.cfg.parent, "/", 3)
	if len(parts) != 3 {
		return nil, status.Errorf(codes.Internal, "bad --parent %q (GROUP/VERSION/PLURAL)", e.cfg.parent)
	}
	group, version, plural := parts[0], parts[1], parts[2]
	reg := &pb.SyncRegistration{
		Id:     "sites",
		Parent: &pb.ResourceSelector{Group: group, Version: version, Name: plural},
		Children: []*pb.ChildType{
			{Resource: core("configmaps"), UpdateStrategy: e.cfg.configmaps},
			{Resource: core("services"), UpdateStrategy: e.cfg.services},
		},
		Finalize: e.cfg.finalize,
	}
	if e.cfg.resync > 0 {
		reg.ResyncPeriod = durationpb.New(time.Duration(e.cfg.resync) * time.Second)
	}
	manifest.Syncs = []*pb.SyncRegistration{reg}
	return manifest, nil
}

// record appends one ledger line for a call of handler (or "sync", "finalize") on object.
func (e *example) record(handler, reason string, retry uint32, object map[string]any, outcome string, extra map[string]any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ledger == nil {
		return
	}
	m, _ := object["metadata"].(map[string]any)
	entry := map[string]any{
		"ts": float64(time.Now().UnixNano()) / 1e9, "handler": handler, "uid": m["uid"],
		"namespace": m["namespace"], "name": m["name"], "generation": m["generation"],
		"reason": reason, "retry": retry, "outcome": outcome,
	}
	for k, v := range extra {
		entry[k] = v
	}
	line, _ := json.Marshal(entry)
	_, _ = e.ledger.Write(append(line, '\n'))
}

// desired is a pure function of the parent and its children: the status and the children.
func desired(parent map[string]any, children []*pb.ChildGroup) (any, []map[string]any) {
	spec, _ := parent["spec"].(map[string]any)
	meta, _ := parent["metadata"].(map[string]any)
	prefix, ok := spec["prefix"].(string)
	if !ok {
		prefix, _ = meta["name"].(string)
	}
	entries, _ := spec["entries"].([]any)
	out := []map[string]any{}
	for _, raw := range entries {
		entry, _ := raw.(map[string]any)
		entryName, ok := entry["name"].(string)
		if !ok {
			entryName = "entry"
		}
		child := prefix + "-" + entryName
		port := int64(80)
		if p, ok := entry["port"].(float64); ok {
			port = int64(p)
		}
		metadata := map[string]any{"name": child, "labels": map[string]any{"app.kubernetes.io/name": child}}
		if ns, ok := spec["childNamespace"].(string); ok {
			metadata["namespace"] = ns
		}
		data := map[string]any{"port": fmt.Sprint(port)}
		if extra, ok := entry["data"].(map[string]any); ok {
			for k, v := range extra {
				if s, ok := v.(string); ok {
					data[k] = s
				} else {
					b, _ := json.Marshal(v)
					data[k] = string(b)
				}
			}
		}
		cm := map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}
		if spec["childStatus"] == true {
			cm["status"] = map[string]any{"phase": "Ready"}
		}
		out = append(out, cm, map[string]any{
			"apiVersion": "v1", "kind": "Service", "metadata": metadata,
			"spec": map[string]any{
				"selector": map[string]any{"app.kubernetes.io/name": child},
				"ports":    []any{map[string]any{"name": "http", "port": port, "targetPort": port}},
			},
		})
	}
	current := 0
	for _, g := range children {
		current += len(g.ObjectsJson)
	}
	if spec["nullStatus"] == true {
		return nil, out
	}
	return map[string]any{"desiredChildren": len(out), "currentChildren": current}, out
}

func parse(field string, raw []byte) (map[string]any, error) {
	var object map[string]any
	if err := json.Unmarshal(raw, &object); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%s is not JSON: %v", field, err)
	}
	return object, nil
}

// callSpan starts the span of a Sync or Finalize call on parent (a no-op without tracing).
func callSpan(ctx context.Context, call string, parent map[string]any) trace.Span {
	_, span := tracer().Start(ctx, call+" sites", trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(append(objectAttributes(parent), attribute.String("sync.id", "sites"))...))
	return span
}

func (e *example) Sync(ctx context.Context, req *pb.SyncRequest) (*pb.SyncResponse, error) {
	parent, err := parse("parent_json", req.ParentJson)
	if err != nil {
		return nil, err
	}
	span := callSpan(ctx, "sync", parent)
	spec, _ := parent["spec"].(map[string]any)
	if message, ok := spec["fail"].(string); ok {
		endSpan(span, "error", &handlerError{"SyncError", message})
		e.record("sync", "sync", 0, parent, "error", nil)
		return &pb.SyncResponse{Error: message}, nil
	}
	resp, err := syncResponse(desired(parent, req.Children))
	if err != nil {
		endSpan(span, "error", err)
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	endSpan(span, "success", nil)
	e.record("sync", "sync", 0, parent, "success", nil)
	return resp, nil
}

func syncResponse(st any, children []map[string]any) (*pb.SyncResponse, error) {
	resp := &pb.SyncResponse{}
	var err error
	if resp.StatusJson, err = json.Marshal(st); err != nil {
		return nil, err
	}
	for _, c := range children {
		b, err := json.Marshal(c)
		if err != nil {
			return nil, err
		}
		resp.ChildrenJson = append(resp.ChildrenJson, b)
	}
	return resp, nil
}

func (e *example) Finalize(ctx context.Context, req *pb.SyncRequest) (*pb.FinalizeResponse, error) {
	parent, err := parse("parent_json", req.ParentJson)
	if err != nil {
		return nil, err
	}
	span := callSpan(ctx, "finalize", parent)
	spec, _ := parent["spec"].(map[string]any)
	hold := spec["holdFinalize"] == true
	outcome := "success"
	if hold {
		outcome = "held"
	}
	endSpan(span, outcome, nil)
	e.record("finalize", "finalize", 0, parent, outcome, nil)
	st, _ := json.Marshal(map[string]any{"finalizing": true, "held": hold})
	return &pb.FinalizeResponse{StatusJson: st, Finalized: !hold, ResyncAfter: durationpb.New(time.Second)}, nil
}

func main() {
	listen := flag.String("listen", "127.0.0.1:50051", "address to serve on")
	ledger := flag.String("ledger", "", "append one JSON line per call here")
	parent := flag.String("parent", "e2e.operon.dev/v1/sites", "the parent resource: GROUP/VERSION/PLURAL")
	configmaps := flag.String("configmaps", "InPlace", "update strategy of the ConfigMaps")
	services := flag.String("services", "InPlace", "update strategy of the Services")
	finalize := flag.Bool("finalize", false, "hold a finalizer on parents and answer Finalize")
	resync := flag.Int64("resync", 0, "resync period in seconds (0: none)")
	resource := flag.String("resource", "", "the resource of the change handlers: GROUP/VERSION/PLURAL")
	var handlers []changeHandler
	flag.Func("handler", "a change handler: KIND:ID[,OPTION=VALUE...] (repeatable; see handlers.go)", func(v string) error {
		h, err := parseHandler(v)
		handlers = append(handlers, h)
		return err
	})
	flag.Parse()

	parentSet := false
	flag.Visit(func(f *flag.Flag) { parentSet = parentSet || f.Name == "parent" })
	cfg := config{
		serveSync: len(handlers) == 0 || parentSet, parent: *parent, finalize: *finalize, resync: *resync,
		handlers: handlers,
	}
	if len(handlers) > 0 {
		r, err := parseResource(*resource)
		if err != nil {
			log.Fatalf("--resource: %v", err)
		}
		cfg.resource = r
	} else if *resource != "" {
		log.Fatal("--resource needs at least one --handler")
	}
	var ok bool
	if cfg.configmaps, ok = strategies[*configmaps]; !ok {
		log.Fatalf("unknown update strategy %q", *configmaps)
	}
	if cfg.services, ok = strategies[*services]; !ok {
		log.Fatalf("unknown update strategy %q", *services)
	}
	e := &example{cfg: cfg}
	if *ledger != "" {
		f, err := os.OpenFile(*ledger, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			log.Fatal(err)
		}
		e.ledger = f
	}
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	shutdownTracing, options, err := initTracing(context.Background())
	if err != nil {
		log.Fatalf("cannot export traces: %v", err)
	}
	server := grpc.NewServer(options...)
	pb.RegisterHandlerServiceServer(server, e)
	pb.RegisterSyncServiceServer(server, e)
	fmt.Printf("listening on %s\n", lis.Addr())
	_ = os.Stdout.Sync()
	go func() {
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
		<-stop
		server.GracefulStop()
	}()
	if err := server.Serve(lis); err != nil {
		log.Fatal(err)
	}
	if shutdownTracing != nil {
		// Export what is buffered before exiting.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := shutdownTracing(ctx); err != nil {
			log.Printf("flushing traces: %v", err)
		}
	}
}
