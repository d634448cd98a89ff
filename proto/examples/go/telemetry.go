package main

// OpenTelemetry: each handler run (and each Sync/Finalize call) is a span parented by the core's
// span, whose W3C traceparent arrives in the call's gRPC metadata; a failed run records its
// error. Spans are exported over OTLP/gRPC when OTEL_EXPORTER_OTLP_ENDPOINT is set (service name
// from OTEL_SERVICE_NAME, default operon-go-example); otherwise nothing is installed: the global
// tracer is OpenTelemetry's no-op and the server has no interceptor.

import (
	"context"
	"errors"
	"log"
	"os"
	"reflect"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// defaultServiceName names the process in traces when OTEL_SERVICE_NAME is unset.
const defaultServiceName = "operon-go-example"

// tracer makes the handler spans: the global provider's (a no-op unless initTracing installed an
// exporting one).
func tracer() trace.Tracer {
	return otel.Tracer("example.invalid/operon/examples/go")
}

// initTracing starts exporting spans when the environment asks for it. It returns the shutdown
// function that flushes what is buffered (nil when tracing is off) and the server options that
// continue the caller's trace. A collector that is away costs dropped spans and a log line, never
// a failed call: the batch exporter sends in the background.
func initTracing(ctx context.Context) (func(context.Context) error, []grpc.ServerOption, error) {
	if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" {
		return nil, nil, nil
	}
	// The endpoint, its scheme (http:// = plaintext) and headers come from the OTEL_* variables.
	exporter, err := otlptracegrpc.New(ctx)
	if err != nil {
		return nil, nil, err
	}
	name := os.Getenv("OTEL_SERVICE_NAME")
	if name == "" {
		name = defaultServiceName
	}
	res, err := resource.Merge(resource.Default(),
		resource.NewSchemaless(attribute.String("service.name", name)))
	if err != nil {
		return nil, nil, err
	}
	// The batch's schedule delay honours OTEL_BSP_SCHEDULE_DELAY.
	provider := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter), sdktrace.WithResource(res))
	setGlobalTracing(provider, propagation.TraceContext{})
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Printf("tracing: %v", err) }))
	return provider.Shutdown, []grpc.ServerOption{
		grpc.UnaryInterceptor(continueTrace),
		grpc.StreamInterceptor(continueStreamTrace),
	}, nil
}

// setGlobalTracing installs the tracer provider and the propagator that handler spans use.
func setGlobalTracing(provider trace.TracerProvider, propagator propagation.TextMapPropagator) {
	otel.SetTracerProvider(provider)
	otel.SetTextMapPropagator(propagator)
}

// metadataCarrier reads the W3C trace context from incoming gRPC metadata (keys are lower case).
type metadataCarrier metadata.MD

func (c metadataCarrier) Get(key string) string {
	if values := metadata.MD(c).Get(key); len(values) > 0 {
		return values[0]
	}
	return ""
}

func (c metadataCarrier) Set(key, value string) { metadata.MD(c).Set(key, value) }

func (c metadataCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// withCallerTrace puts the caller's span (from the traceparent in the metadata) into ctx, so that
// spans started from ctx are its children.
func withCallerTrace(ctx context.Context) context.Context {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return ctx
	}
	return otel.GetTextMapPropagator().Extract(ctx, metadataCarrier(md))
}

func continueTrace(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	return handler(withCallerTrace(ctx), req)
}

type tracedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s tracedStream) Context() context.Context { return s.ctx }

func continueStreamTrace(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return handler(srv, tracedStream{ss, withCallerTrace(ss.Context())})
}

// objectAttributes are the attributes naming the object of a call.
func objectAttributes(object map[string]any) []attribute.KeyValue {
	meta, _ := object["metadata"].(map[string]any)
	text := func(key string) string {
		s, _ := meta[key].(string)
		return s
	}
	return []attribute.KeyValue{
		attribute.String("namespace", text("namespace")),
		attribute.String("name", text("name")),
		attribute.String("uid", text("uid")),
	}
}

// endSpan ends a run's span with its outcome; an error is recorded as an exception event (type
// and message) and makes the span's status Error.
func endSpan(span trace.Span, outcome string, err error) {
	span.SetAttributes(attribute.String("outcome", outcome))
	if err != nil {
		span.AddEvent("exception", trace.WithAttributes(
			attribute.String("exception.type", errorType(err)),
			attribute.String("exception.message", err.Error())))
		span.SetStatus(otelcodes.Error, err.Error())
	}
	span.End()
}

// errorType names an error's type for the exception event: the handler error's kind
// (TemporaryError, PermanentError) or the Go type.
func errorType(err error) string {
	var h *handlerError
	if errors.As(err, &h) {
		return h.kind
	}
	return reflect.TypeOf(err).String()
}
