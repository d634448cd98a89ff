package operon

// Tasks (proto/operon/v1/tasks.proto): the core runs one task at a time per parent through a
// server-streaming call; each step's result goes up the stream as it finishes, and the last
// message says how the task ended. Deleting the task cancels the call (the task's ctx).

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "example.invalid/operon/sdk/go/gen/operonv1"
)

// TaskFunc runs one task to its end, its steps through [TaskCtx.Step]. It returns the task's
// final message: with a nil error the task Succeeded, else it Failed with the error's message.
// ctx is cancelled when the task is deleted or the core stops.
type TaskFunc func(ctx context.Context, t *TaskCtx) (string, error)

// StepResult is a finished step.
type StepResult struct {
	// Index is the step's 0-based position, in the order the steps began.
	Index int
	Name  string
	OK    bool
	// Message is the step's error message when it failed.
	Message string
	// Result is the step's result (decoded JSON; nil when none).
	Result any
}

// TaskCtx is one run of a task.
type TaskCtx struct {
	// TaskType is the registration's id.
	TaskType string
	// Task is the task object; Parent its parent.
	Task, Parent Object
	// AttemptID is the task's uid: the same in every run of one task, for idempotency.
	AttemptID string
	// ResumeFrom is the index of the first step to run in a sequential task resumed after a
	// restart; the steps before it finished earlier (Done).
	ResumeFrom int
	// Done are the steps finished in earlier runs.
	Done []StepResult
	// Log is a logger with the task and its parent as attributes.
	Log *slog.Logger

	send func(*pb.TaskUpdate) error
	mu   sync.Mutex
	next int
}

// Step runs one step named name and reports its result to the core as soon as it ends: fn's
// result (JSON-encodable, nil for none) and error (the step failed; the task goes on or not, as
// the TaskFunc decides). Steps are numbered in the order Step is called, so call them in the
// same order in every run: in a resumed sequential task, a step before ResumeFrom is not run
// again — Step answers its earlier result (and its earlier failure as an error). Safe for
// concurrent use (parallel tasks).
func (t *TaskCtx) Step(ctx context.Context, name string, fn func(ctx context.Context) (any, error)) (any, error) {
	t.mu.Lock()
	index := t.next
	t.next++
	t.mu.Unlock()
	if index < t.ResumeFrom {
		for _, done := range t.Done {
			if done.Index == index {
				if !done.OK {
					return done.Result, errors.New(done.Message)
				}
				return done.Result, nil
			}
		}
		return nil, nil
	}
	var result any
	err := guard(t.Log, func() (err error) {
		result, err = fn(ctx)
		return err
	})
	step := &pb.StepResult{Index: uint32(index), Name: name, Ok: err == nil}
	if err != nil {
		step.Message = err.Error()
		t.Log.Warn("Step failed.", "step", name, "index", index, "error", err)
	} else {
		t.Log.Info("Step done.", "step", name, "index", index)
	}
	if result != nil {
		raw, merr := marshalJSON(result)
		if merr != nil {
			return result, fmt.Errorf("operon: the result of step %q cannot be encoded as JSON: %w", name, merr)
		}
		step.ResultJson = raw
	}
	if serr := t.send(&pb.TaskUpdate{Update: &pb.TaskUpdate_Step{Step: step}}); serr != nil {
		return result, fmt.Errorf("operon: reporting step %q: %w", name, serr)
	}
	return result, err
}

type taskServer struct {
	pb.UnimplementedTaskServiceServer
	*runtimeState
}

func (s *taskServer) RunTask(req *pb.TaskRequest, stream grpc.ServerStreamingServer[pb.TaskUpdate]) error {
	r := s.app.tasks[req.TaskId]
	if r == nil {
		return status.Errorf(codes.NotFound, "no task type %q in this service", req.TaskId)
	}
	task, err := parseObject(req.TaskJson)
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "task_json: %v", err)
	}
	parent, err := parseObject(req.ParentJson)
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "parent_json: %v", err)
	}
	var mu sync.Mutex
	t := &TaskCtx{
		TaskType: r.id, Task: task, Parent: parent, AttemptID: req.AttemptId,
		ResumeFrom: int(req.ResumeFrom),
		send: func(u *pb.TaskUpdate) error {
			mu.Lock()
			defer mu.Unlock()
			return stream.Send(u)
		},
	}
	for _, d := range req.DoneSteps {
		result, err := decodeJSON(d.ResultJson)
		if err != nil {
			return status.Errorf(codes.InvalidArgument, "done_steps[%d].result_json: %v", d.Index, err)
		}
		t.Done = append(t.Done, StepResult{Index: int(d.Index), Name: d.Name, OK: d.Ok, Message: d.Message, Result: result})
	}
	t.Log = s.log.With("task", task.Name(), "namespace", task.Namespace(), "parent", parent.Name(),
		"task_type", r.id)
	begun := time.Now()
	ctx, span := startSpan(stream.Context(), "task "+r.id, append(objectAttributes(task),
		attribute.String("task.id", r.id), attribute.String("parent", parent.Name()),
		attribute.Int64("resume_from", int64(req.ResumeFrom)))...)
	var message string
	err = guard(t.Log, func() (err error) {
		message, err = r.task(ctx, t)
		return err
	})
	entry := run{handler: r.id, reason: "task", object: task, attemptID: req.AttemptId, started: begun}
	if cerr := stream.Context().Err(); cerr != nil {
		endSpan(span, outcomeCancelled, nil)
		entry.outcome = outcomeCancelled
		s.ledger.record(entry)
		t.Log.Info("Task cancelled.")
		return status.FromContextError(cerr).Err()
	}
	finished := &pb.TaskFinished{Ok: err == nil, Message: message}
	entry.outcome = outcomeSuccess
	if err != nil {
		entry.outcome = outcomePermanent
		finished.Message = err.Error()
		t.Log.Warn("Task failed.", "error", err)
	} else {
		t.Log.Info("Task succeeded.")
	}
	endSpan(span, entry.outcome, err)
	s.ledger.record(entry)
	return t.send(&pb.TaskUpdate{Update: &pb.TaskUpdate_Finished{Finished: finished}})
}
