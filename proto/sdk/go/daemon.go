package operon

// Daemons over the bidirectional Daemon call (proto/operon/v1/handler.proto, "Daemons"): the
// core starts one call per object and keeps sending the object's new versions; it stops the
// daemon gracefully (the Stopped channel closes) and then, with a CancellationTimeout, by force
// (ctx is cancelled). Patches and Events go up the call as they are made; the function's end
// is the call's last message.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "example.invalid/operon/sdk/go/gen/operonv1"
)

// DaemonFunc is a daemon: it runs for as long as its object exists and matches its filters.
// Return when d.Stopped() closes (a graceful stop) or ctx is cancelled (a forced stop, or the
// call is gone); returning nil then, or ctx's error, ends the daemon quietly. Returning on
// its own: nil means done (not restarted while the core runs, as in Kopf); an error restarts
// it after its delay ([Temporary]), per its [Errors] mode and [Backoff] (any other error), or
// never ([Permanent]). When this service shuts down, ctx is cancelled and the core restarts
// the daemon (on a new instance of the service) after its backoff.
type DaemonFunc func(ctx context.Context, d *DaemonCtx) error

// StopReason is why the core stops a daemon.
type StopReason string

const (
	// StopNone: not stopped (yet).
	StopNone StopReason = ""
	// StopResourceDeleted: the object is being deleted (or is gone).
	StopResourceDeleted StopReason = "resource_deleted"
	// StopFiltersMismatch: the object no longer matches the daemon's filters.
	StopFiltersMismatch StopReason = "filters_mismatch"
	// StopOperatorExiting: the core is stopping or reloading its handlers.
	StopOperatorExiting StopReason = "operator_exiting"
	// StopCallEnded: the call ended without a stop (the core went away).
	StopCallEnded StopReason = "call_ended"
	// StopUnspecified: the core gave no reason.
	StopUnspecified StopReason = "unspecified"
)

var stopReasons = map[pb.DaemonStopReason]StopReason{
	pb.DaemonStopReason_DAEMON_STOP_REASON_RESOURCE_DELETED: StopResourceDeleted,
	pb.DaemonStopReason_DAEMON_STOP_REASON_FILTERS_MISMATCH: StopFiltersMismatch,
	pb.DaemonStopReason_DAEMON_STOP_REASON_OPERATOR_EXITING: StopOperatorExiting,
}

// DaemonCtx is one run of a daemon for one object. Its methods are safe for concurrent use.
type DaemonCtx struct {
	// Handler is the daemon's id.
	Handler string
	// Resource is the object's resource.
	Resource Resource
	// Started is when the first attempt began.
	Started time.Time
	// AttemptID identifies this run (for logs and traces).
	AttemptID string
	// Log is a logger with the daemon and the object as attributes.
	Log *slog.Logger

	retry int
	send  func(*pb.DaemonResponse) error

	mu      sync.Mutex
	object  Object
	changed chan struct{}
	stopped chan struct{}
	reason  StopReason
}

// Retry is the number of earlier runs that ended in an error (0 on the first).
func (d *DaemonCtx) Retry() int { return d.retry }

// Object is the latest version of the object: the core sends every change down the call.
func (d *DaemonCtx) Object() Object {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.object
}

// Changed is closed when a newer version of the object arrives (then call it again for the
// next one).
func (d *DaemonCtx) Changed() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.changed
}

// Stopped is closed when the core asks the daemon to stop (see [DaemonCtx.StopReason]).
func (d *DaemonCtx) Stopped() <-chan struct{} { return d.stopped }

// StopReason is why the daemon was asked to stop (StopNone while it runs).
func (d *DaemonCtx) StopReason() StopReason {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.reason
}

// Sleep waits for duration and returns true, or returns false as soon as the daemon is asked to
// stop or ctx is done (Kopf's stopped.wait()).
func (d *DaemonCtx) Sleep(ctx context.Context, duration time.Duration) bool {
	timer := time.NewTimer(duration)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-d.stopped:
		return false
	case <-ctx.Done():
		return false
	}
}

// Patch sends a JSON merge patch for the object, which the core applies at once. It fails when
// fragment cannot be encoded or the call is gone.
func (d *DaemonCtx) Patch(fragment map[string]any) error {
	raw, err := marshalJSON(mergePatch(nil, fragment))
	if err != nil {
		return fmt.Errorf("operon: the daemon's patch cannot be encoded as JSON: %w", err)
	}
	return d.send(&pb.DaemonResponse{PatchJson: raw})
}

// Event sends a Kubernetes Event about the object for the core to post ([EventNormal] or
// [EventWarning]). It fails when the call is gone.
func (d *DaemonCtx) Event(eventType, reason, message string) error {
	return d.send(&pb.DaemonResponse{Events: wireEvents([]Event{{eventType, reason, message}})})
}

func (d *DaemonCtx) setObject(o Object) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.object = o
	close(d.changed)
	d.changed = make(chan struct{})
}

// stop closes Stopped (once) and records the first reason.
func (d *DaemonCtx) stop(reason StopReason) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.reason == StopNone {
		d.reason = reason
		close(d.stopped)
	}
}

type daemonStream = grpc.BidiStreamingServer[pb.DaemonRequest, pb.DaemonResponse]

func (s *handlerServer) Daemon(stream daemonStream) error {
	// The core gives up on a call whose headers do not come within 10 s: send them at once.
	if err := stream.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	start := first.GetStart()
	if start == nil {
		return status.Error(codes.InvalidArgument, "the first message of a Daemon call must be `start`")
	}
	r := s.app.find(start.HandlerId, start.Resource, pb.Reason_REASON_UNSPECIFIED, callDaemon)
	if r == nil {
		return status.Errorf(codes.NotFound, "no daemon %q in this service", start.HandlerId)
	}
	body, err := parseObject(start.BodyJson)
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "body_json: %v", err)
	}
	return s.runDaemon(stream, r, start, body)
}

func (s *runtimeState) runDaemon(stream daemonStream, r *registration, start *pb.DaemonStart, body Object) error {
	var sendMu sync.Mutex
	send := func(m *pb.DaemonResponse) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return stream.Send(m)
	}
	d := &DaemonCtx{
		Handler: r.id, Resource: resolved(start.Resource), AttemptID: start.AttemptId,
		retry: int(start.Retry), send: send, object: body,
		changed: make(chan struct{}), stopped: make(chan struct{}),
	}
	if start.Started != nil {
		d.Started = start.Started.AsTime()
	}
	d.Log = s.log.With("handler", r.id, "namespace", body.Namespace(), "name", body.Name(), "retry", d.retry)
	entry := run{handler: r.id, reason: "daemon", retry: d.retry, object: body, attemptID: d.AttemptID,
		started: time.Now()}
	exit := func(o *pb.Outcome, result outcome, err error) error {
		entry.outcome = result
		s.ledger.record(entry)
		logOutcome(d.Log, result, err)
		return send(&pb.DaemonResponse{Exit: o})
	}

	// The When filter, evaluated on the object as the daemon starts.
	if r.opts.when != nil {
		c := &Ctx{Handler: r.id, Object: body, Resource: d.Resource, AttemptID: d.AttemptID,
			Started: d.Started, retry: d.retry, Log: d.Log}
		ok, err := matches(r, c)
		if err != nil {
			return exit(arbitrary(err.Error(), "panic"), outcomeArbitrary, err)
		}
		if !ok {
			return exit(notMatched(), outcomeNotMatched, nil)
		}
	}

	// ctx ends on a forced stop, when the call is gone, and when this service shuts down.
	ctx, cancel := context.WithCancelCause(stream.Context())
	defer cancel(nil)
	stopAfter := context.AfterFunc(s.stopping, func() { cancel(errServiceStopping) })
	defer stopAfter()
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				d.stop(StopCallEnded)
				cancel(errForcedStop)
				return
			}
			switch msg := m.Message.(type) {
			case *pb.DaemonRequest_BodyJson:
				if o, err := parseObject(msg.BodyJson); err == nil {
					d.setObject(o)
				} else {
					d.Log.Warn("Ignoring a body that is not a JSON object.", "error", err)
				}
			case *pb.DaemonRequest_Stop:
				reason, ok := stopReasons[msg.Stop.Reason]
				if !ok {
					reason = StopUnspecified
				}
				d.stop(reason)
				if msg.Stop.Force {
					cancel(errForcedStop)
				}
			}
		}
	}()

	ctx, span := startSpan(ctx, "daemon "+r.id, append(objectAttributes(body),
		attribute.String("handler.id", r.id),
		attribute.Int64("retry", int64(d.retry)),
		attribute.String("attempt_id", d.AttemptID))...)
	d.Log.Info("Daemon started.")
	err := runDaemonFunc(ctx, r.daemon, d)

	switch {
	case errors.Is(context.Cause(ctx), errServiceStopping) && d.StopReason() == StopNone:
		// This service is going away: end the call without an exit, so that the core starts
		// the daemon again (on a new instance) after its backoff.
		endSpan(span, outcomeCancelled, nil)
		entry.outcome = outcomeCancelled
		s.ledger.record(entry)
		d.Log.Info("Daemon cancelled: the service is shutting down.")
		return status.Error(codes.Unavailable, "the handler service is shutting down")
	case stream.Context().Err() != nil:
		// The call is gone: nobody to answer.
		endSpan(span, outcomeCancelled, nil)
		entry.outcome = outcomeCancelled
		s.ledger.record(entry)
		d.Log.Info("Daemon cancelled: the call ended.")
		return stream.Context().Err()
	case d.StopReason() != StopNone && (err == nil || errors.Is(err, context.Canceled)):
		endSpan(span, outcomeSuccess, nil)
		return exit(&pb.Outcome{Result: &pb.Outcome_Success{Success: &pb.Success{}}}, outcomeSuccess, nil)
	}
	o, result, failed := toOutcome(nil, err)
	endSpan(span, result, failed)
	return exit(o, result, failed)
}

var (
	errForcedStop      = errors.New("the daemon was stopped by force")
	errServiceStopping = errors.New("the handler service is shutting down")
)

func runDaemonFunc(ctx context.Context, fn DaemonFunc, d *DaemonCtx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			d.Log.Error("The daemon panicked.", "panic", p, "stack", string(debug.Stack()))
			err = &panicError{p}
		}
	}()
	return fn(ctx, d)
}
