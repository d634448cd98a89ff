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

// Temporary is an error that retries the handler after delay: 0 retries at once (as Kopf's
// TemporaryError(delay=0)), a negative delay means [DefaultDelay]. The retry counts against the
// handler's [Retries] and [Timeout].
func Temporary(message string, delay time.Duration) error {
	if delay < 0 {
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

// AdmissionError denies an admission review on purpose (Kopf's AdmissionError): the API
// server answers the request with Message and the HTTP status Code. Make one with [Deny];
// match one with errors.As. It is a permanent error where it is not an admission answer.
type AdmissionError struct {
	Message string
	// Code is the HTTP status code of the denial (≤ 0: 500).
	Code int
}

func (e *AdmissionError) Error() string { return e.Message }

// Deny is the error a validate or mutate handler returns to deny the request with message and
// the HTTP status code (e.g. 422; ≤ 0 means 500). Any other error denies it too, with code 500;
// a Deny is preferred when several handlers deny one request.
func Deny(message string, code int) error {
	return &AdmissionError{Message: message, Code: code}
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
	// Syncs: the function failed (the core retries with backoff); a finalize call answered
	// "not finalized yet" (the finalizer stays).
	outcomeError outcome = "error"
	outcomeHeld  outcome = "held"
	// Admission handlers: the review is allowed, or denied (by any error).
	outcomeAllowed outcome = "allowed"
	outcomeDenied  outcome = "denied"
)

// panicError is a handler's panic, answered as an arbitrary error.
type panicError struct {
	value any
}

func (e *panicError) Error() string { return fmt.Sprintf("panic: %v", e.value) }

// errorType names an error for Events and spans: TemporaryError, PermanentError,
// AdmissionError, panic, or the Go type of the outermost error (e.g. *fs.PathError).
func errorType(err error) string {
	var temporary *TemporaryError
	var permanent *PermanentError
	var denied *AdmissionError
	var panicked *panicError
	switch {
	case errors.As(err, &temporary):
		return "TemporaryError"
	case errors.As(err, &permanent):
		return "PermanentError"
	case errors.As(err, &denied):
		return "AdmissionError"
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
	var denied *AdmissionError
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
		if delay < 0 {
			delay = DefaultDelay
		}
		return &pb.Outcome{Result: &pb.Outcome_TemporaryError{TemporaryError: &pb.TemporaryError{
			Message: err.Error(), Delay: durationpb.New(delay),
		}}}, outcomeTemporary, err
	case errors.As(err, &permanent), errors.As(err, &denied):
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
