package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc/metadata"

	pb "example.invalid/operon/sdk/go/gen/operonv1"
)

func TestParseHandler(t *testing.T) {
	h, err := parseHandler("create:flaky,retries=3,backoff=0.5,fail_temporarily=1,delay=2")
	if err != nil {
		t.Fatal(err)
	}
	if h.id != "flaky" || h.kind != pb.HandlerKind_HANDLER_KIND_CREATE || h.options.GetRetries() != 3 ||
		h.options.Backoff.AsDuration() != 500*time.Millisecond || h.failTemporarily != 1 || h.delay != 2*time.Second {
		t.Fatalf("parsed %+v", h)
	}
	for _, bad := range []string{"flaky", "timer:x", "create:", "create:x,retries=-1", "create:x,delay=s", "create:x,what=1"} {
		if _, err := parseHandler(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	if r, err := parseResource("v1/pods"); err != nil || r.Group != "" || r.Name != "pods" {
		t.Errorf("v1/pods: %v %v", r, err)
	}
	if _, err := parseResource("e2e.operon.dev/v1/"); err == nil {
		t.Error("an empty plural parsed")
	}
}

func object(t *testing.T, raw string) map[string]any {
	var o map[string]any
	if err := json.Unmarshal([]byte(raw), &o); err != nil {
		t.Fatal(err)
	}
	return o
}

func TestRunFailsTheFirstAttemptsThenSucceeds(t *testing.T) {
	h, _ := parseHandler("create:flaky,fail_temporarily=1")
	plain := object(t, `{"spec": {}}`)
	out, label, err := h.run(plain, 0)
	if label != "temporary" || err == nil || out.GetTemporaryError().Delay.AsDuration() != time.Second {
		t.Fatalf("retry 0: %v %s %v", out, label, err)
	}
	if out, label, err = h.run(plain, 1); label != "success" || err != nil || out.GetSuccess() == nil {
		t.Fatalf("retry 1: %v %s %v", out, label, err)
	}
	// The object's spec.behaviour.<id> overrides the flags.
	scripted := object(t, `{"spec": {"behaviour": {"flaky": {"fail_temporarily": 2, "delay": 3,
		"message": "not ready yet", "result": {"attempts": 3}}}}}`)
	out, _, err = h.run(scripted, 1)
	if err == nil || err.Error() != "not ready yet" || out.GetTemporaryError().Delay.AsDuration() != 3*time.Second {
		t.Fatalf("scripted retry 1: %v %v", out, err)
	}
	if out, _, _ = h.run(scripted, 2); string(out.GetSuccess().ResultJson) != `{"attempts":3}` {
		t.Fatalf("scripted retry 2: %v", out)
	}
	permanent := object(t, `{"spec": {"behaviour": {"flaky": {"fail_permanently": true}}}}`)
	if out, label, _ = h.run(permanent, 0); label != "permanent" || out.GetPermanentError() == nil {
		t.Fatalf("permanent: %v", out)
	}
}

// The span of a run continues the caller's trace from the traceparent in the metadata and records
// the error of a failed run.
func TestInvokeContinuesTheCallersTrace(t *testing.T) {
	recorder := tracetest.NewSpanRecorder()
	provider := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(recorder))
	defer func() { _ = provider.Shutdown(context.Background()) }()
	setGlobalTracing(provider, propagation.TraceContext{})

	h, _ := parseHandler("create:flaky,fail_temporarily=1")
	e := &example{cfg: config{handlers: []changeHandler{h}}}
	const parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	ctx := withCallerTrace(metadata.NewIncomingContext(context.Background(), metadata.Pairs("traceparent", parent)))
	body := []byte(`{"metadata": {"namespace": "ns", "name": "obj", "uid": "u"}}`)
	resp, err := e.Invoke(ctx, &pb.InvokeRequest{HandlerId: "flaky", BodyJson: body, Retry: 0})
	if err != nil || resp.Outcome.GetTemporaryError() == nil {
		t.Fatalf("invoke: %v %v", resp, err)
	}
	spans := recorder.Ended()
	if len(spans) != 1 {
		t.Fatalf("%d spans", len(spans))
	}
	s := spans[0]
	if s.Name() != "handler flaky" || s.Parent().TraceID().String() != "0af7651916cd43dd8448eb211c80319c" ||
		s.Parent().SpanID().String() != "b7ad6b7169203331" || !s.Parent().IsRemote() {
		t.Fatalf("span %s, parent %v", s.Name(), s.Parent())
	}
	if s.Status().Code.String() != "Error" || len(s.Events()) != 1 || s.Events()[0].Name != "exception" {
		t.Fatalf("status %v, events %v", s.Status(), s.Events())
	}
	attrs := map[string]string{}
	for _, kv := range s.Attributes() {
		attrs[string(kv.Key)] = kv.Value.Emit()
	}
	if attrs["handler.id"] != "flaky" || attrs["attempt"] != "1" || attrs["name"] != "obj" || attrs["namespace"] != "ns" {
		t.Fatalf("attributes %v", attrs)
	}
	if _, err := e.Invoke(ctx, &pb.InvokeRequest{HandlerId: "nope", BodyJson: body}); err == nil {
		t.Fatal("an unknown handler was invoked")
	}
}

// Sync calls continue the caller's trace too; a failing sync records its error.
func TestSyncContinuesTheCallersTrace(t *testing.T) {
	recorder := tracetest.NewSpanRecorder()
	provider := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(recorder))
	defer func() { _ = provider.Shutdown(context.Background()) }()
	setGlobalTracing(provider, propagation.TraceContext{})

	e := &example{cfg: config{serveSync: true, parent: "e2e.operon.dev/v1/sites"}}
	const parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	ctx := withCallerTrace(metadata.NewIncomingContext(context.Background(), metadata.Pairs("traceparent", parent)))
	ok := []byte(`{"metadata": {"namespace": "ns", "name": "site"}, "spec": {"entries": [{"name": "a"}]}}`)
	failing := []byte(`{"metadata": {"namespace": "ns", "name": "site"}, "spec": {"fail": "broken"}}`)
	if resp, err := e.Sync(ctx, &pb.SyncRequest{ParentJson: ok}); err != nil || len(resp.ChildrenJson) != 2 {
		t.Fatalf("sync: %v %v", resp, err)
	}
	if resp, err := e.Sync(ctx, &pb.SyncRequest{ParentJson: failing}); err != nil || resp.Error != "broken" {
		t.Fatalf("failing sync: %v %v", resp, err)
	}
	spans := recorder.Ended()
	if len(spans) != 2 {
		t.Fatalf("%d spans", len(spans))
	}
	for i, s := range spans {
		if s.Name() != "sync sites" || s.Parent().SpanID().String() != "b7ad6b7169203331" {
			t.Fatalf("span %s, parent %v", s.Name(), s.Parent())
		}
		if failed := s.Status().Code.String() == "Error"; failed != (i == 1) {
			t.Fatalf("span %d: status %v", i, s.Status())
		}
	}
	manifest, err := e.Describe(ctx, &pb.DescribeRequest{})
	if err != nil || len(manifest.Syncs) != 1 || len(manifest.Handlers) != 0 {
		t.Fatalf("describe: %v %v", manifest, err)
	}
}

// Admission handlers: declared with their webhook options; a validate handler denies
// spec.field "not-allowed" with code 422, a mutate handler answers a merge patch.
func TestAdmissionHandlers(t *testing.T) {
	v, err := parseHandler("validate:check,operations=CREATE|UPDATE,subresource=*,ignore_failures=true")
	if err != nil {
		t.Fatal(err)
	}
	if v.kind != pb.HandlerKind_HANDLER_KIND_VALIDATE || len(v.options.Operations) != 2 ||
		v.options.GetSubresource() != "*" || !v.options.IgnoreFailures {
		t.Fatalf("validate: %+v", v)
	}
	m, err := parseHandler("mutate:inject")
	if err != nil {
		t.Fatal(err)
	}
	e := &example{cfg: config{handlers: []changeHandler{v, m}}}
	review := &pb.AdmissionCall{RequestJson: []byte(`{"uid": "u", "operation": "CREATE"}`)}
	bad := []byte(`{"metadata": {"name": "x"}, "spec": {"field": "not-allowed"}}`)
	good := []byte(`{"metadata": {"name": "x"}, "spec": {"field": "value"}}`)
	ctx := context.Background()
	resp, err := e.Invoke(ctx, &pb.InvokeRequest{HandlerId: "check", BodyJson: bad, Admission: review})
	if err != nil || resp.GetOutcome().GetPermanentError() == nil || resp.GetAdmissionCode() != 422 ||
		!strings.Contains(resp.GetOutcome().GetPermanentError().GetMessage(), "not-allowed") {
		t.Fatalf("denial: %v %v", resp, err)
	}
	resp, err = e.Invoke(ctx, &pb.InvokeRequest{HandlerId: "check", BodyJson: good, Admission: review})
	if err != nil || resp.GetOutcome().GetSuccess() == nil || resp.AdmissionCode != nil || len(resp.Warnings) != 1 {
		t.Fatalf("admission: %v %v", resp, err)
	}
	resp, err = e.Invoke(ctx, &pb.InvokeRequest{HandlerId: "inject", BodyJson: good, Admission: review})
	if err != nil || string(resp.GetPatchJson()) != `{"spec":{"injected":123}}` {
		t.Fatalf("mutation: %v %v", resp, err)
	}
	if _, err := parseHandler("validate:x,ignore_failures=maybe"); err == nil {
		t.Fatal("a bad flag was accepted")
	}
}
