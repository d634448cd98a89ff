package operon

// HandlerService: Describe answers the manifest, Invoke runs change, event, timer and admission
// handlers, Match evaluates When filters. gRPC status codes only for calls that make no sense
// (an unknown handler: NotFound; a body that is not a JSON object: InvalidArgument; a core that
// speaks an older contract: FailedPrecondition); handler errors are outcomes.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "example.invalid/operon/sdk/go/gen/operonv1"
)

// runtimeState is what the services share: the checked App and the effects around handlers.
type runtimeState struct {
	app     *built
	log     *slog.Logger
	ledger  *ledger
	answers *answers
	// stopping is cancelled when the service shuts down (daemons end).
	stopping context.Context
}

type handlerServer struct {
	pb.UnimplementedHandlerServiceServer
	*runtimeState
}

// checkRevision refuses a core that speaks an older contract than this SDK.
func checkRevision(req *pb.DescribeRequest) error {
	if req.ContractRevision >= ContractRevision {
		return nil
	}
	return fmt.Errorf("this handler service (Operon Go SDK) needs handler contract revision %d or "+
		"newer, and the core (version %q) speaks revision %d: upgrade the core (`operon --version` "+
		"prints its revision)", ContractRevision, req.CoreVersion, req.ContractRevision)
}

func (s *handlerServer) Describe(_ context.Context, req *pb.DescribeRequest) (*pb.Manifest, error) {
	if err := checkRevision(req); err != nil {
		s.log.Error("Refusing the core.", "error", err)
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	s.log.Info("Described to the core.", "core_version", req.CoreVersion,
		"contract_revision", req.ContractRevision, "handlers", len(s.app.manifest.Handlers),
		"syncs", len(s.app.manifest.Syncs), "tasks", len(s.app.manifest.Tasks))
	return s.app.manifest, nil
}

var reasons = map[pb.Reason]Reason{
	pb.Reason_REASON_CREATE: ReasonCreate,
	pb.Reason_REASON_UPDATE: ReasonUpdate,
	pb.Reason_REASON_DELETE: ReasonDelete,
	pb.Reason_REASON_RESUME: ReasonResume,
}

// ledgerReason names the cause of a run in the ledger and spans.
func ledgerReason(r *registration, reason Reason) string {
	if reason != ReasonNone {
		return string(reason)
	}
	return kindNames[r.kind]
}

func resolved(r *pb.ResolvedResource) Resource {
	if r == nil {
		return Resource{}
	}
	return Resource{Group: r.Group, Version: r.Version, Plural: r.Plural, Kind: r.Kind, Namespaced: r.Namespaced}
}

// newCtx builds a handler's Ctx from the request; errors are InvalidArgument.
func (s *runtimeState) newCtx(r *registration, req *pb.InvokeRequest) (*Ctx, error) {
	body, err := parseObject(req.BodyJson)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "body_json: %v", err)
	}
	old, err := decodeJSON(req.OldJson)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "old_json: %v", err)
	}
	newer, err := decodeJSON(req.NewJson)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "new_json: %v", err)
	}
	diff, err := parseDiff(req.DiffJson)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "diff_json: %v", err)
	}
	c := &Ctx{
		Handler: r.id, Reason: reasons[req.Reason], Object: body, Old: old, New: newer, Diff: diff,
		EventType: req.EventType, Resource: resolved(req.Resource), AttemptID: req.AttemptId,
		retry: int(req.Retry),
	}
	if req.Started != nil {
		c.Started = req.Started.AsTime()
	}
	if req.Admission != nil {
		if c.Admission, err = admission(req.Admission); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "admission.request_json: %v", err)
		}
	}
	c.Log = s.log.With("handler", r.id, "namespace", body.Namespace(), "name", body.Name(),
		"retry", c.retry)
	return c, nil
}

// admission reads the review of an admission call.
func admission(call *pb.AdmissionCall) (*Admission, error) {
	request, err := parseObject(call.RequestJson)
	if err != nil {
		return nil, err
	}
	return &Admission{
		Operation: request.String("operation"), Subresource: request.String("subResource"),
		DryRun: request.Bool("dryRun"), UserInfo: request.Map("userInfo"), Headers: call.Headers,
		Request: request,
	}, nil
}

func (s *runtimeState) findHandler(req *pb.InvokeRequest) (*registration, error) {
	if req.Admission != nil {
		r := s.app.find(req.HandlerId, req.Resource, req.Reason, callAdmission)
		if r == nil {
			return nil, status.Errorf(codes.NotFound,
				"no admission (validate or mutate) handler %q in this service", req.HandlerId)
		}
		return r, nil
	}
	r := s.app.find(req.HandlerId, req.Resource, req.Reason, callInvoke)
	if r == nil {
		return nil, status.Errorf(codes.NotFound, "no handler %q in this service", req.HandlerId)
	}
	return r, nil
}

// matches evaluates r's When filter (true without one); a panic is an error.
func matches(r *registration, c *Ctx) (ok bool, err error) {
	if r.opts.when == nil {
		return true, nil
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("the When filter panicked: %v", p)
		}
	}()
	return r.opts.when(c), nil
}

func (s *handlerServer) Match(_ context.Context, req *pb.InvokeRequest) (*pb.MatchResponse, error) {
	r, err := s.findHandler(req)
	if err != nil {
		return nil, err
	}
	if r.opts.when == nil {
		return &pb.MatchResponse{Matched: true}, nil
	}
	c, err := s.newCtx(r, req)
	if err != nil {
		return nil, err
	}
	ok, err := matches(r, c)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &pb.MatchResponse{Matched: ok}, nil
}

func (s *handlerServer) Invoke(ctx context.Context, req *pb.InvokeRequest) (*pb.InvokeResponse, error) {
	r, err := s.findHandler(req)
	if err != nil {
		return nil, err
	}
	response, replayed, err := s.answers.do(ctx, req.AttemptId, func() (*pb.InvokeResponse, error) {
		return s.invoke(ctx, r, req)
	})
	if replayed {
		s.log.Info("Answered a repeated attempt from the cache.", "handler", r.id,
			"attempt_id", req.AttemptId, "retry", req.Retry)
	}
	return response, err
}

// invoke runs r for one call and answers its outcome.
func (s *runtimeState) invoke(ctx context.Context, r *registration, req *pb.InvokeRequest) (*pb.InvokeResponse, error) {
	c, err := s.newCtx(r, req)
	if err != nil {
		return nil, err
	}
	begun := time.Now()
	reason := ledgerReason(r, c.Reason)
	if c.Admission != nil {
		reason = "admission"
	}
	ctx, span := startSpan(ctx, "handler "+r.id, append(objectAttributes(c.Object),
		attribute.String("handler.id", r.id),
		attribute.Int64("attempt", int64(c.retry)+1),
		attribute.Int64("retry", int64(c.retry)),
		attribute.String("reason", reason),
		attribute.String("attempt_id", c.AttemptID))...)
	var (
		answer *pb.Outcome
		result outcome
		failed error
	)
	ok, werr := matches(r, c)
	switch {
	case werr != nil:
		answer, result, failed = arbitrary(werr.Error(), "panic"), outcomeArbitrary, werr
	case !ok:
		answer, result = notMatched(), outcomeNotMatched
	default:
		value, herr := runHandler(ctx, r.handler, c)
		answer, result, failed = toOutcome(value, herr)
	}
	response := &pb.InvokeResponse{Outcome: answer}
	patch, events, warnings, perr := c.collected()
	if perr != nil && failed == nil {
		failed = fmt.Errorf("the handler's patch cannot be encoded as JSON: %w", perr)
		answer, result = arbitrary(failed.Error(), "PatchError"), outcomeArbitrary
		response.Outcome = answer
	} else if result != outcomeNotMatched {
		response.PatchJson = patch
		response.Events = wireEvents(events)
	}
	if c.Admission != nil {
		result = admitted(response, result, failed, warnings)
	}
	endSpan(span, result, failed)
	s.ledger.record(run{
		handler: r.id, reason: reason, retry: c.retry, object: c.Object, outcome: result,
		attemptID: c.AttemptID, eventType: c.EventType, started: begun,
	})
	logOutcome(c.Log, result, failed)
	return response, nil
}

// admitted completes an admission handler's answer: its warnings, and the HTTP code of a
// [Deny]; it returns the outcome for the ledger and the span (allowed, denied, not_matched).
func admitted(response *pb.InvokeResponse, result outcome, failed error, warnings []string) outcome {
	response.Warnings = warnings
	var denied *AdmissionError
	if errors.As(failed, &denied) {
		code := int32(http.StatusInternalServerError)
		if denied.Code > 0 {
			code = int32(denied.Code)
		}
		response.AdmissionCode = &code
	}
	switch {
	case result == outcomeNotMatched:
		return result
	case failed != nil:
		return outcomeDenied
	}
	return outcomeAllowed
}

// runHandler calls fn, turning a panic into an error (logged with its stack).
func runHandler(ctx context.Context, fn HandlerFunc, c *Ctx) (value any, err error) {
	defer func() {
		if p := recover(); p != nil {
			c.Log.Error("The handler panicked.", "panic", p, "stack", string(debug.Stack()))
			value, err = nil, &panicError{p}
		}
	}()
	return fn(ctx, c)
}

func wireEvents(events []Event) []*pb.Event {
	out := make([]*pb.Event, 0, len(events))
	for _, e := range events {
		out = append(out, &pb.Event{Type: e.Type, Reason: e.Reason, Message: e.Message})
	}
	return out
}

func logOutcome(log *slog.Logger, result outcome, err error) {
	switch result {
	case outcomeSuccess:
		log.Info("Handler succeeded.")
	case outcomeAllowed:
		log.Info("Admission handler allowed the request.")
	case outcomeDenied:
		log.Info("Admission handler denied the request.", "error", err)
	case outcomeNotMatched:
		log.Debug("Handler not matched by its When filter.")
	case outcomeTemporary:
		log.Warn("Handler failed temporarily.", "error", err)
	default:
		log.Error("Handler failed.", "outcome", string(result), "error", err)
	}
}
