package operon

// Level-triggered syncs (proto/operon/v1/sync.proto): parent + current children → status +
// desired children. The core applies the desired children (server-side apply, owned by the
// parent), deletes the current ones that are not desired, and writes the status.

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "example.invalid/operon/sdk/go/gen/operonv1"
)

// SyncFunc computes a parent's status and desired children from the parent and its current
// children. Keep it a pure function of what it is given: the same input should give the same
// answer, so that a converged parent causes no writes. An error changes nothing; the core
// retries with backoff (and shows the error in the parent's Events).
type SyncFunc func(ctx context.Context, s *SyncCtx) (SyncResult, error)

// FinalizeFunc is called instead of the SyncFunc while a parent is being deleted (see
// [Finalize]); the core keeps calling it until it answers Finalized.
type FinalizeFunc func(ctx context.Context, s *SyncCtx) (FinalizeResult, error)

// SyncResult is a sync's answer.
type SyncResult struct {
	// Status is the parent's whole new status (anything encoding/json encodes to an object);
	// nil leaves the status alone. The core adds observedGeneration. A non-nil status needs the
	// parent's status subresource.
	Status any
	// Children are the desired children: apply-style partial objects (apiVersion, kind,
	// metadata.name and the fields you care about), of the types declared with [Owns]. Every
	// current child missing here is deleted — an empty list deletes them all.
	Children []any
	// ResyncAfter syncs the parent again after this long (0: the registration's [Resync]).
	ResyncAfter time.Duration
}

// FinalizeResult is a finalize call's answer.
type FinalizeResult struct {
	// Status as in SyncResult.
	Status any
	// Finalized lets the core remove the parent's finalizer; false calls again later.
	Finalized bool
	// RetryAfter is when to call again when not finalized (0: the core's 5 s).
	RetryAfter time.Duration
}

// SyncCtx is one sync or finalize call.
type SyncCtx struct {
	// Sync is the registration's id.
	Sync string
	// Parent is the parent object.
	Parent Object
	// Finalizing is true in a FinalizeFunc.
	Finalizing bool
	// Log is a logger with the sync and the parent as attributes.
	Log *slog.Logger

	owned    []GVR
	children [][]Object
}

// Children are the current children of the type declared with Owns(r), ordered by namespace
// and name (nil when r was not declared).
func (s *SyncCtx) Children(r GVR) []Object {
	for i, o := range s.owned {
		if o == r && i < len(s.children) {
			return s.children[i]
		}
	}
	return nil
}

// AllChildren are the current children of every declared type, in the order declared.
func (s *SyncCtx) AllChildren() []Object {
	var all []Object
	for _, group := range s.children {
		all = append(all, group...)
	}
	return all
}

type syncServer struct {
	pb.UnimplementedSyncServiceServer
	*runtimeState
}

// syncCtx parses a request for r.
func (s *runtimeState) syncCtx(r *registration, req *pb.SyncRequest) (*SyncCtx, error) {
	parent, err := parseObject(req.ParentJson)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "parent_json: %v", err)
	}
	c := &SyncCtx{Sync: r.id, Parent: parent, Finalizing: req.Finalizing}
	for _, o := range r.opts.owns {
		c.owned = append(c.owned, o.resource)
	}
	for i, group := range req.Children {
		var objects []Object
		for j, raw := range group.ObjectsJson {
			o, err := parseObject(raw)
			if err != nil {
				return nil, status.Errorf(codes.InvalidArgument, "children[%d].objects_json[%d]: %v", i, j, err)
			}
			objects = append(objects, o)
		}
		c.children = append(c.children, objects)
	}
	c.Log = s.log.With("sync", r.id, "namespace", parent.Namespace(), "name", parent.Name())
	return c, nil
}

func (s *syncServer) find(id string) (*registration, error) {
	r := s.app.syncs[id]
	if r == nil {
		return nil, status.Errorf(codes.NotFound, "no sync %q in this service", id)
	}
	return r, nil
}

func (s *syncServer) Sync(ctx context.Context, req *pb.SyncRequest) (*pb.SyncResponse, error) {
	r, err := s.find(req.SyncId)
	if err != nil {
		return nil, err
	}
	c, err := s.syncCtx(r, req)
	if err != nil {
		return nil, err
	}
	begun := time.Now()
	ctx, span := startSpan(ctx, "sync "+r.id, append(objectAttributes(c.Parent), attribute.String("sync.id", r.id))...)
	var result SyncResult
	err = guard(c.Log, func() (err error) {
		result, err = r.sync(ctx, c)
		return err
	})
	response := &pb.SyncResponse{}
	if err == nil {
		err = encodeSync(response, result)
	}
	outcomeOf := outcomeSuccess
	if err != nil {
		outcomeOf = outcomeError
		response = &pb.SyncResponse{Error: errorMessage(err)}
		c.Log.Error("Sync failed.", "error", err)
	} else {
		c.Log.Debug("Synced.", "children", len(result.Children))
	}
	endSpan(span, outcomeOf, err)
	s.ledger.record(run{handler: r.id, reason: "sync", object: c.Parent, outcome: outcomeOf, started: begun})
	return response, nil
}

func encodeSync(response *pb.SyncResponse, result SyncResult) error {
	if result.Status != nil {
		raw, err := marshalJSON(result.Status)
		if err != nil {
			return fmt.Errorf("the status cannot be encoded as JSON: %w", err)
		}
		response.StatusJson = raw
	}
	for i, c := range result.Children {
		raw, err := marshalJSON(c)
		if err != nil {
			return fmt.Errorf("child %d cannot be encoded as JSON: %w", i, err)
		}
		response.ChildrenJson = append(response.ChildrenJson, raw)
	}
	if result.ResyncAfter > 0 {
		response.ResyncAfter = durationpb.New(result.ResyncAfter)
	}
	return nil
}

func (s *syncServer) Finalize(ctx context.Context, req *pb.SyncRequest) (*pb.FinalizeResponse, error) {
	r, err := s.find(req.SyncId)
	if err != nil {
		return nil, err
	}
	c, err := s.syncCtx(r, req)
	if err != nil {
		return nil, err
	}
	c.Finalizing = true
	if r.opts.finalize == nil {
		// Only a shutdown hook holds the finalizer: nothing of ours to do.
		return &pb.FinalizeResponse{Finalized: true}, nil
	}
	begun := time.Now()
	ctx, span := startSpan(ctx, "finalize "+r.id, append(objectAttributes(c.Parent), attribute.String("sync.id", r.id))...)
	var result FinalizeResult
	err = guard(c.Log, func() (err error) {
		result, err = r.opts.finalize(ctx, c)
		return err
	})
	response := &pb.FinalizeResponse{Finalized: result.Finalized}
	if err == nil && result.Status != nil {
		if response.StatusJson, err = marshalJSON(result.Status); err != nil {
			err = fmt.Errorf("the status cannot be encoded as JSON: %w", err)
		}
	}
	if result.RetryAfter > 0 {
		response.ResyncAfter = durationpb.New(result.RetryAfter)
	}
	var outcomeOf outcome
	switch {
	case err != nil:
		outcomeOf = outcomeError
		response = &pb.FinalizeResponse{Error: errorMessage(err)}
		c.Log.Error("Finalize failed.", "error", err)
	case !result.Finalized:
		outcomeOf = outcomeHeld
	default:
		outcomeOf = outcomeSuccess
	}
	endSpan(span, outcomeOf, err)
	s.ledger.record(run{handler: r.id, reason: "finalize", object: c.Parent, outcome: outcomeOf, started: begun})
	return response, nil
}

// errorMessage is the message of a failed sync or finalize call. The contract reads an empty
// message as "no error" (and an empty sync answer deletes every child), so an error without a
// message gets one.
func errorMessage(err error) string {
	if message := err.Error(); message != "" {
		return message
	}
	return fmt.Sprintf("an error without a message (%T)", err)
}

// guard runs fn, turning a panic into an error (logged with its stack).
func guard(log *slog.Logger, fn func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			log.Error("The function panicked.", "panic", p, "stack", string(debug.Stack()))
			err = &panicError{p}
		}
	}()
	return fn()
}
