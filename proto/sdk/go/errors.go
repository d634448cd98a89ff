package operon

// Handler errors and how they become outcomes. Handler errors are answers, never gRPC errors:
// the core records them in the object's progress and retries as they say.

import (
	"errors"
	"fmt"
	"reflect"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "example.invalid/operon/sdk/go/gen/operonv1"
)

// DefaultDelay is the delay of a [Temporary] error given no delay (Kopf's default).
const DefaultDelay = 60 * time.Second

// TemporaryError asks the core to call the handler again after Delay. Make one with
// [Temporary]; match one with errors.As.
type TemporaryError struct {
	Message string
	Delay   time.Duration
}

func (e *TemporaryError) Error() string { return e.Message }

// Temporary is an error that retries the handler after delay (delay ≤ 0: [DefaultDelay]). The
// retry counts against the handler's [Retries] and [Timeout].
func Temporary(message string, delay time.Duration) error {
	if delay <= 0 {
		delay = DefaultDelay
	}
	return &TemporaryError{Message: message, Delay: delay}
}

// PermanentError stops the handler: it is recorded as failed and not called again for this
// change. Make one with [Permanent]; match one with errors.As.
type PermanentError struct {
	Message string
}

func (e *PermanentError) Error() string { return e.Message }

// Permanent is an error that fails the handler for good.
func Permanent(message string) error {
	return &PermanentError{Message: message}
}

// outcome is how a handler's function ended, for the ledger, spans and logs.
type outcome string

const (
	outcomeSuccess    outcome = "success"
	outcomeTemporary  outcome = "temporary"
	outcomePermanent  outcome = "permanent"
	outcomeArbitrary  outcome = "arbitrary"
	outcomeNotMatched outcome = "not_matched"
	outcomeCancelled  outcome = "cancelled"
)

// panicError is a handler's panic, answered as an arbitrary error.
type panicError struct {
	value any
}

func (e *panicError) Error() string { return fmt.Sprintf("panic: %v", e.value) }

// errorType names an error for Events and spans: TemporaryError, PermanentError, panic, or the
// Go type of the outermost error (e.g. *fs.PathError).
func errorType(err error) string {
	var temporary *TemporaryError
	var permanent *PermanentError
	var panicked *panicError
	switch {
	case errors.As(err, &temporary):
		return "TemporaryError"
	case errors.As(err, &permanent):
		return "PermanentError"
	case errors.As(err, &panicked):
		return "panic"
	}
	return reflect.TypeOf(err).String()
}

// toOutcome turns a handler's result into the contract's outcome. Any error that is neither
// temporary nor permanent is an arbitrary error: the core handles it per the handler's [Errors]
// mode (temporary by default, retried after the handler's [Backoff], else the core's 60 s).
func toOutcome(result any, err error) (*pb.Outcome, outcome, error) {
	var temporary *TemporaryError
	var permanent *PermanentError
	switch {
	case err == nil:
		success := &pb.Success{}
		if result != nil {
			raw, merr := marshalJSON(result)
			if merr != nil {
				message := fmt.Sprintf("the handler's result cannot be encoded as JSON: %v", merr)
				return arbitrary(message, "ResultError"), outcomeArbitrary, merr
			}
			success.ResultJson = raw
		}
		return &pb.Outcome{Result: &pb.Outcome_Success{Success: success}}, outcomeSuccess, nil
	case errors.As(err, &temporary):
		delay := temporary.Delay
		if delay <= 0 {
			delay = DefaultDelay
		}
		return &pb.Outcome{Result: &pb.Outcome_TemporaryError{TemporaryError: &pb.TemporaryError{
			Message: err.Error(), Delay: durationpb.New(delay),
		}}}, outcomeTemporary, err
	case errors.As(err, &permanent):
		return &pb.Outcome{Result: &pb.Outcome_PermanentError{PermanentError: &pb.PermanentError{
			Message: err.Error(),
		}}}, outcomePermanent, err
	}
	return arbitrary(err.Error(), errorType(err)), outcomeArbitrary, err
}

func arbitrary(message, kind string) *pb.Outcome {
	return &pb.Outcome{Result: &pb.Outcome_ArbitraryError{ArbitraryError: &pb.ArbitraryError{
		Message: message, ErrorType: kind,
	}}}
}

func notMatched() *pb.Outcome {
	return &pb.Outcome{Result: &pb.Outcome_NotMatched{NotMatched: &pb.NotMatched{}}}
}
