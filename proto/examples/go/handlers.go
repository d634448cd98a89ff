package main

// Change handlers (HandlerService.Invoke) for one resource, declared on the command line:
//
//	--resource GROUP/VERSION/PLURAL --handler KIND:ID[,OPTION=VALUE...]
//
// KIND is create|update|delete|resume; options: retries=N, backoff=SECS (announced in the
// manifest), fail_temporarily=N (answer a TemporaryError while the object's retry count is below
// N: N=1 fails the first attempt on every object and succeeds on the second) and delay=SECS (the
// delay of those errors, default 1). The object's spec.behaviour.<handler id> overrides them, as
// in the Rust example (proto/examples/rust): fail_temporarily (a number, or true = always),
// delay, message, fail_permanently (true) and result (any JSON, the Success result that goes to
// status.<handler id>).
//
// Admission handlers (served as webhooks by the core, see proto/operon/v1/handler.proto,
// "Admission"): KIND validate|mutate, options operations=OP[|OP...] (CREATE, UPDATE, DELETE,
// CONNECT), subresource=NAME (or *), ignore_failures=true|false. A validate handler denies an
// object whose spec.field is "not-allowed" (code 422); a mutate handler sets spec.injected to 123.
// Both add a warning naming themselves.

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "example.invalid/operon/sdk/go/gen/operonv1"
)

// changeHandler is one handler as declared on the command line.
type changeHandler struct {
	id              string
	kind            pb.HandlerKind
	options         *pb.Options
	failTemporarily uint32
	delay           time.Duration
}

var kinds = map[string]pb.HandlerKind{
	"create":   pb.HandlerKind_HANDLER_KIND_CREATE,
	"update":   pb.HandlerKind_HANDLER_KIND_UPDATE,
	"delete":   pb.HandlerKind_HANDLER_KIND_DELETE,
	"resume":   pb.HandlerKind_HANDLER_KIND_RESUME,
	"validate": pb.HandlerKind_HANDLER_KIND_VALIDATE,
	"mutate":   pb.HandlerKind_HANDLER_KIND_MUTATE,
}

var reasons = map[pb.Reason]string{
	pb.Reason_REASON_CREATE: "create",
	pb.Reason_REASON_UPDATE: "update",
	pb.Reason_REASON_DELETE: "delete",
	pb.Reason_REASON_RESUME: "resume",
}

// parseResource parses GROUP/VERSION/PLURAL (or VERSION/PLURAL for the core group).
func parseResource(value string) (*pb.ResourceSelector, error) {
	parts := strings.Split(value, "/")
	switch {
	case len(parts) == 3 && parts[1] != "" && parts[2] != "":
		return &pb.ResourceSelector{Group: parts[0], Version: parts[1], Name: parts[2]}, nil
	case len(parts) == 2 && parts[0] != "" && parts[1] != "":
		return &pb.ResourceSelector{Version: parts[0], Name: parts[1]}, nil
	}
	return nil, fmt.Errorf("expected GROUP/VERSION/PLURAL, got %q", value)
}

func seconds(key, value string) (time.Duration, error) {
	s, err := strconv.ParseFloat(value, 64)
	if err != nil || s < 0 || math.IsInf(s, 0) {
		return 0, fmt.Errorf("%s must be a non-negative number of seconds, got %q", key, value)
	}
	return time.Duration(s * float64(time.Second)), nil
}

// parseHandler parses KIND:ID[,OPTION=VALUE...].
func parseHandler(value string) (changeHandler, error) {
	kind, rest, ok := strings.Cut(value, ":")
	if !ok {
		return changeHandler{}, fmt.Errorf("expected KIND:ID[,OPTION=VALUE...], got %q", value)
	}
	h := changeHandler{options: &pb.Options{}, delay: time.Second}
	if h.kind, ok = kinds[kind]; !ok {
		return h, fmt.Errorf("unknown handler kind %q (expected create|update|delete|resume|validate|mutate)", kind)
	}
	parts := strings.Split(rest, ",")
	if h.id = parts[0]; h.id == "" {
		return h, fmt.Errorf("the handler id is empty in %q", value)
	}
	for _, option := range parts[1:] {
		key, v, ok := strings.Cut(option, "=")
		if !ok {
			return h, fmt.Errorf("expected OPTION=VALUE, got %q", option)
		}
		switch key {
		case "retries", "fail_temporarily":
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				return h, fmt.Errorf("%s must be a whole number, got %q", key, v)
			}
			if key == "retries" {
				r := uint32(n)
				h.options.Retries = &r
			} else {
				h.failTemporarily = uint32(n)
			}
		case "backoff", "delay":
			d, err := seconds(key, v)
			if err != nil {
				return h, err
			}
			if key == "backoff" {
				h.options.Backoff = durationpb.New(d)
			} else {
				h.delay = d
			}
		case "operations":
			h.options.Operations = strings.Split(v, "|")
		case "subresource":
			h.options.Subresource = &v
		case "ignore_failures":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return h, fmt.Errorf("%s must be true or false, got %q", key, v)
			}
			h.options.IgnoreFailures = b
		default:
			return h, fmt.Errorf("unknown option %q (expected retries, backoff, fail_temporarily, delay, "+
				"operations, subresource, ignore_failures)", key)
		}
	}
	return h, nil
}

// handlerError is a handler's failure, as its outcome says: recorded on the run's span.
type handlerError struct {
	kind    string
	message string
}

func (e *handlerError) Error() string { return e.message }

// run decides the outcome of one run of h for the object at attempt retry+1: a pure function of
// the handler's options, the object's spec.behaviour.<id> and the retry count. It returns the
// outcome, its ledger name and the error it stands for (nil on success).
func (h changeHandler) run(body map[string]any, retry uint32) (*pb.Outcome, string, error) {
	spec, _ := body["spec"].(map[string]any)
	all, _ := spec["behaviour"].(map[string]any)
	b, _ := all[h.id].(map[string]any)
	failures, delay := h.failTemporarily, h.delay
	switch v := b["fail_temporarily"].(type) {
	case bool:
		if v {
			failures = math.MaxUint32
		} else {
			failures = 0
		}
	case float64:
		failures = uint32(max(0, min(v, math.MaxUint32)))
	}
	if d, ok := b["delay"].(float64); ok && d >= 0 {
		delay = time.Duration(d * float64(time.Second))
	}
	message, ok := b["message"].(string)
	if !ok {
		message = fmt.Sprintf("%s: attempt %d fails on purpose", h.id, retry+1)
	}
	if b["fail_permanently"] == true {
		return &pb.Outcome{Result: &pb.Outcome_PermanentError{PermanentError: &pb.PermanentError{Message: message}}},
			"permanent", &handlerError{"PermanentError", message}
	}
	if retry < failures {
		return &pb.Outcome{Result: &pb.Outcome_TemporaryError{TemporaryError: &pb.TemporaryError{
				Message: message, Delay: durationpb.New(delay)}}},
			"temporary", &handlerError{"TemporaryError", message}
	}
	success := &pb.Success{}
	if result, ok := b["result"]; ok {
		success.ResultJson, _ = json.Marshal(result)
	}
	return &pb.Outcome{Result: &pb.Outcome_Success{Success: success}}, "success", nil
}

// admit answers one admission review for an admission handler: a pure function of the object.
func (h changeHandler) admit(body map[string]any) *pb.InvokeResponse {
	warning := fmt.Sprintf("%s: checked by the Go example.", h.id)
	spec, _ := body["spec"].(map[string]any)
	if h.kind == pb.HandlerKind_HANDLER_KIND_VALIDATE && spec["field"] == "not-allowed" {
		code := int32(422)
		message := fmt.Sprintf("%s: spec.field may not be \"not-allowed\".", h.id)
		return &pb.InvokeResponse{
			Outcome:       &pb.Outcome{Result: &pb.Outcome_PermanentError{PermanentError: &pb.PermanentError{Message: message}}},
			Warnings:      []string{warning},
			AdmissionCode: &code,
		}
	}
	response := &pb.InvokeResponse{
		Outcome:  &pb.Outcome{Result: &pb.Outcome_Success{Success: &pb.Success{}}},
		Warnings: []string{warning},
	}
	if h.kind == pb.HandlerKind_HANDLER_KIND_MUTATE {
		response.PatchJson = []byte(`{"spec":{"injected":123}}`)
	}
	return response
}

func (e *example) Invoke(ctx context.Context, req *pb.InvokeRequest) (*pb.InvokeResponse, error) {
	var h *changeHandler
	for i := range e.cfg.handlers {
		if e.cfg.handlers[i].id == req.HandlerId {
			h = &e.cfg.handlers[i]
		}
	}
	if h == nil {
		return nil, status.Errorf(codes.NotFound, "no handler %q", req.HandlerId)
	}
	body, err := parse("body_json", req.BodyJson)
	if err != nil {
		return nil, err
	}
	if req.Admission != nil {
		if h.kind != pb.HandlerKind_HANDLER_KIND_VALIDATE && h.kind != pb.HandlerKind_HANDLER_KIND_MUTATE {
			return nil, status.Errorf(codes.InvalidArgument, "handler %q is not an admission handler", h.id)
		}
		response := h.admit(body)
		label := "allowed"
		if response.AdmissionCode != nil {
			label = "denied"
		}
		e.record(h.id, "admission", 0, body, label, nil)
		return response, nil
	}
	reason := reasons[req.Reason]
	_, span := tracer().Start(ctx, "handler "+h.id, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(append(objectAttributes(body),
			attribute.String("handler.id", h.id),
			attribute.Int64("attempt", int64(req.Retry)+1),
			attribute.Int64("retry", int64(req.Retry)),
			attribute.String("reason", reason),
			attribute.String("attempt_id", req.AttemptId))...))
	outcome, label, failure := h.run(body, req.Retry)
	endSpan(span, label, failure)
	extra := map[string]any{"attempt_id": req.AttemptId}
	if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get("traceparent")) > 0 {
		extra["traceparent"] = md.Get("traceparent")[0]
	}
	e.record(h.id, reason, req.Retry, body, label, extra)
	return &pb.InvokeResponse{Outcome: outcome}, nil
}
