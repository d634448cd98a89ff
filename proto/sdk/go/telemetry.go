package operon

// OpenTelemetry: every call continues the core's trace. The core puts the W3C traceparent in
// every call's metadata; an interceptor extracts it into the call's context (always, so that an
// operator's own tracer provider sees it too), and each handler run is a span child of the
// core's span. Spans are exported over OTLP/gRPC when OTEL_EXPORTER_OTLP_ENDPOINT is set
// (service name: OTEL_SERVICE_NAME, default the App's name; the other OTEL_* variables apply);
// otherwise the global tracer provider is left alone (OpenTelemetry's no-op unless the operator
// installs one).

import (
	"context"
	"os"

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

const instrumentation = "example.invalid/operon/sdk/go"

func tracer() trace.Tracer { return otel.Tracer(instrumentation) }

// initTracing installs an exporting tracer provider when the environment asks for one. It
// returns the function that flushes and stops it (nil when tracing is off). A collector that
// is away costs dropped spans and a log line, never a failed call: the batch exporter sends in
// the background.
func initTracing(ctx context.Context, serviceName string, logf func(string, ...any)) (func(context.Context) error, error) {
	if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" {
		return nil, nil
	}
	exporter, err := otlptracegrpc.New(ctx)
	if err != nil {
		return nil, err
	}
	name := os.Getenv("OTEL_SERVICE_NAME")
	if name == "" {
		name = serviceName
	}
	res, err := resource.Merge(resource.Default(),
		resource.NewSchemaless(attribute.String("service.name", name)))
	if err != nil {
		return nil, err
	}
	provider := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter), sdktrace.WithResource(res))
	otel.SetTracerProvider(provider)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { logf("tracing: %v", err) }))
	return provider.Shutdown, nil
}

// metadataCarrier reads the W3C trace context from incoming gRPC metadata.
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

// withCallerTrace puts the caller's span context (from the traceparent in the metadata) into
// ctx, so that spans started from ctx are its children.
func withCallerTrace(ctx context.Context) context.Context {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return ctx
	}
	return propagation.TraceContext{}.Extract(ctx, metadataCarrier(md))
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

// objectAttributes name the object of a call.
func objectAttributes(o Object) []attribute.KeyValue {
	return []attribute.KeyValue{
		attribute.String("namespace", o.Namespace()),
		attribute.String("name", o.Name()),
		attribute.String("uid", o.UID()),
	}
}

// startSpan starts the server span of one run.
func startSpan(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	return tracer().Start(ctx, name, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attrs...))
}

// endSpan ends a run's span with its outcome; an error is recorded as an exception event and
// makes the span's status Error.
func endSpan(span trace.Span, result outcome, err error) {
	span.SetAttributes(attribute.String("outcome", string(result)))
	if err != nil {
		span.AddEvent("exception", trace.WithAttributes(
			attribute.String("exception.type", errorType(err)),
			attribute.String("exception.message", err.Error())))
		span.SetStatus(otelcodes.Error, err.Error())
	}
	span.End()
}
