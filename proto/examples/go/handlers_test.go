package main

import (
	"context"
	"errors"
	"testing"
	"time"

	operon "example.invalid/operon/sdk/go"
)

func TestParseHandler(t *testing.T) {
	h, err := parseHandler("create:flaky,retries=3,backoff=0.5,fail_temporarily=1,delay=2")
	if err != nil {
		t.Fatal(err)
	}
	if h.id != "flaky" || h.kind != "create" || len(h.options) != 2 || h.failTemporarily != 1 || h.delay != 2*time.Second {
		t.Fatalf("parsed %+v", h)
	}
	for _, bad := range []string{"flaky", "timer:x", "create:", "create:x,retries=-1", "create:x,delay=s",
		"create:x,what=1", "validate:x,ignore_failures=maybe"} {
		if _, err := parseHandler(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	if r, err := parseResource("v1/pods"); err != nil || r != (operon.GVR{Version: "v1", Resource: "pods"}) {
		t.Errorf("v1/pods: %v %v", r, err)
	}
	if _, err := parseResource("e2e.operon.dev/v1/"); err == nil {
		t.Error("an empty plural parsed")
	}
}

// run answers what the handler's options and the object's spec.behaviour.<id> say.
func TestScriptedRunsFailTheFirstAttemptsThenSucceed(t *testing.T) {
	h, _ := parseHandler("create:flaky,fail_temporarily=1")
	run := func(raw string, retry int) (any, error) {
		return h.run(context.Background(), operon.NewTestCtx(object(t, raw), retry))
	}
	var temporary *operon.TemporaryError
	if _, err := run(`{"spec": {}}`, 0); !errors.As(err, &temporary) || temporary.Delay != time.Second ||
		temporary.Message != "flaky: attempt 1 fails on purpose" {
		t.Fatalf("retry 0: %v", err)
	}
	if result, err := run(`{"spec": {}}`, 1); result != nil || err != nil {
		t.Fatalf("retry 1: %v %v", result, err)
	}
	// The object's spec.behaviour.<id> overrides the flags.
	scripted := `{"spec": {"behaviour": {"flaky": {"fail_temporarily": 2, "delay": 3,
		"message": "not ready yet", "result": {"attempts": 3}}}}}`
	if _, err := run(scripted, 1); !errors.As(err, &temporary) || temporary.Message != "not ready yet" || temporary.Delay != 3*time.Second {
		t.Fatalf("scripted retry 1: %v", err)
	}
	if result, err := run(scripted, 2); err != nil || encode(t, result) != `{"attempts":3}` {
		t.Fatalf("scripted retry 2: %v %v", result, err)
	}
	if _, err := run(`{"spec": {"behaviour": {"flaky": {"fail_temporarily": true}}}}`, 1000); !errors.As(err, &temporary) {
		t.Fatalf("always: %v", err)
	}
	if _, err := run(`{"spec": {"behaviour": {"flaky": {"fail_temporarily": false}}}}`, 0); err != nil {
		t.Fatalf("never: %v", err)
	}
	var permanent *operon.PermanentError
	if _, err := run(`{"spec": {"behaviour": {"flaky": {"fail_permanently": true}}}}`, 0); !errors.As(err, &permanent) {
		t.Fatalf("permanent: %v", err)
	}
}

// Admission handlers: a validate handler denies spec.field "not-allowed" with code 422, a mutate
// handler asks for a merge patch; both warn.
func TestAdmissionHandlers(t *testing.T) {
	admit := func(kind, field string) (*operon.Ctx, error) {
		h, err := parseHandler(kind + ":" + kind + "-it")
		if err != nil {
			t.Fatal(err)
		}
		c := operon.NewTestCtx(object(t, `{"metadata": {"name": "x"}, "spec": {"field": "`+field+`"}}`), 0)
		c.Admission = &operon.Admission{Operation: "CREATE"}
		_, err = h.admit(context.Background(), c)
		return c, err
	}
	var denied *operon.AdmissionError
	c, err := admit("validate", "not-allowed")
	if !errors.As(err, &denied) || denied.Code != 422 || denied.Message != `validate-it: spec.field may not be "not-allowed".` {
		t.Fatalf("denial: %v", err)
	}
	if w := c.Warnings(); len(w) != 1 || w[0] != "validate-it: checked by the Go example." {
		t.Errorf("warnings: %v", w)
	}
	if c, err := admit("validate", "value"); err != nil || c.Patched() != nil || len(c.Warnings()) != 1 {
		t.Errorf("allowed: %v %v", c.Patched(), err)
	}
	if c, err := admit("mutate", "not-allowed"); err != nil || encode(t, c.Patched()) != `{"spec":{"injected":123}}` {
		t.Errorf("mutation: %v %v", c.Patched(), err)
	}
}
