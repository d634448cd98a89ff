package operon

import (
	"errors"
	"fmt"
	"io/fs"
	"testing"
	"time"
)

func TestOutcomes(t *testing.T) {
	o, kind, err := toOutcome(map[string]any{"pages": 1}, nil)
	if kind != outcomeSuccess || err != nil || string(o.GetSuccess().ResultJson) != `{"pages":1}` {
		t.Errorf("success: %v %v %v", o, kind, err)
	}
	if o, _, _ := toOutcome(nil, nil); o.GetSuccess() == nil || o.GetSuccess().ResultJson != nil {
		t.Errorf("a nil result is no result: %v", o)
	}
	o, kind, _ = toOutcome(nil, fmt.Errorf("wrapped: %w", Temporary("later", 3*time.Second)))
	if kind != outcomeTemporary || o.GetTemporaryError().Delay.AsDuration() != 3*time.Second ||
		o.GetTemporaryError().Message != "wrapped: later" {
		t.Errorf("temporary: %v", o)
	}
	if o, _, _ := toOutcome(nil, Temporary("x", -1)); o.GetTemporaryError().Delay.AsDuration() != DefaultDelay {
		t.Errorf("a temporary error with a negative delay: %v", o)
	}
	if o, _, _ := toOutcome(nil, Temporary("x", 0)); o.GetTemporaryError().Delay.AsDuration() != 0 {
		t.Errorf("a temporary error with delay 0 retries at once: %v", o)
	}
	if o, kind, _ := toOutcome(nil, Permanent("never")); kind != outcomePermanent || o.GetPermanentError().Message != "never" {
		t.Errorf("permanent: %v", o)
	}
	o, kind, _ = toOutcome(nil, &fs.PathError{Op: "open", Path: "/x", Err: errors.New("gone")})
	if kind != outcomeArbitrary || o.GetArbitraryError().ErrorType != "*fs.PathError" {
		t.Errorf("arbitrary: %v", o)
	}
	if o, kind, _ := toOutcome(func() {}, nil); kind != outcomeArbitrary || o.GetArbitraryError().ErrorType != "ResultError" {
		t.Errorf("an unencodable result: %v", o)
	}
	if got := errorType(&panicError{"boom"}); got != "panic" {
		t.Errorf("panic type: %s", got)
	}
	var temporary *TemporaryError
	if !errors.As(Temporary("x", time.Second), &temporary) || temporary.Delay != time.Second {
		t.Error("errors.As TemporaryError")
	}
}
