package main

// Scripted handlers for one resource, declared on the command line:
//
//	--resource GROUP/VERSION/PLURAL --handler KIND:ID[,OPTION=VALUE...]
//
// KIND is create|update|delete|resume; options: retries=N, backoff=SECS (announced in the
// manifest: the core applies them), fail_temporarily=N (answer a TemporaryError while the
// object's retry count is below N: N=1 fails the first attempt on every object and succeeds on
// the second) and delay=SECS (the delay of those errors, default 1). The object's
// spec.behaviour.<handler id> overrides them, as in the Rust example (proto/examples/rust):
// fail_temporarily (a number, or true = always), delay, message, fail_permanently (true) and
// result (any JSON, the result that goes to status.<handler id>).
//
// Admission handlers (served as webhooks by the core, `operon run --admission-listen`): KIND
// validate|mutate, options operations=OP[|OP...] (CREATE, UPDATE, DELETE, CONNECT),
// subresource=NAME (or *), ignore_failures=true|false. A validate handler denies an object whose
// spec.field is "not-allowed" (code 422); a mutate handler sets spec.injected to 123. Both add a
// warning naming themselves.

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	operon "example.invalid/operon/sdk/go"
)

// scripted is one handler as declared on the command line.
type scripted struct {
	kind            string
	id              string
	options         []operon.Option
	failTemporarily int
	delay           time.Duration
}

// registrations are the SDK's registration methods by KIND.
var registrations = map[string]func(*operon.App, operon.GVR, operon.HandlerFunc, ...operon.Option) *operon.App{
	"create":   (*operon.App).OnCreate,
	"update":   (*operon.App).OnUpdate,
	"delete":   (*operon.App).OnDelete,
	"resume":   (*operon.App).OnResume,
	"validate": (*operon.App).OnValidate,
	"mutate":   (*operon.App).OnMutate,
}

// register adds h to app for resource r.
func (h scripted) register(app *operon.App, r operon.GVR) {
	fn := h.run
	if h.kind == "validate" || h.kind == "mutate" {
		fn = h.admit
	}
	registrations[h.kind](app, r, fn, append([]operon.Option{operon.ID(h.id)}, h.options...)...)
}

// parseResource parses GROUP/VERSION/PLURAL (or VERSION/PLURAL for the core group).
func parseResource(value string) (operon.GVR, error) {
	parts := strings.Split(value, "/")
	switch {
	case len(parts) == 3 && parts[1] != "" && parts[2] != "":
		return operon.GVR{Group: parts[0], Version: parts[1], Resource: parts[2]}, nil
	case len(parts) == 2 && parts[0] != "" && parts[1] != "":
		return operon.GVR{Version: parts[0], Resource: parts[1]}, nil
	}
	return operon.GVR{}, fmt.Errorf("expected GROUP/VERSION/PLURAL, got %q", value)
}

func seconds(key, value string) (time.Duration, error) {
	s, err := strconv.ParseFloat(value, 64)
	if err != nil || s < 0 || math.IsInf(s, 0) {
		return 0, fmt.Errorf("%s must be a non-negative number of seconds, got %q", key, value)
	}
	return time.Duration(s * float64(time.Second)), nil
}

// parseHandler parses KIND:ID[,OPTION=VALUE...]. Options that do not apply to the kind are
// refused by the SDK when the service starts.
func parseHandler(value string) (scripted, error) {
	kind, rest, ok := strings.Cut(value, ":")
	if !ok {
		return scripted{}, fmt.Errorf("expected KIND:ID[,OPTION=VALUE...], got %q", value)
	}
	h := scripted{kind: kind, delay: time.Second}
	if _, ok := registrations[kind]; !ok {
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
				h.options = append(h.options, operon.Retries(int(n)))
			} else {
				h.failTemporarily = int(n)
			}
		case "backoff", "delay":
			d, err := seconds(key, v)
			if err != nil {
				return h, err
			}
			if key == "backoff" {
				h.options = append(h.options, operon.Backoff(d))
			} else {
				h.delay = d
			}
		case "operations":
			h.options = append(h.options, operon.Operations(strings.Split(v, "|")...))
		case "subresource":
			h.options = append(h.options, operon.Subresource(v))
		case "ignore_failures":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return h, fmt.Errorf("%s must be true or false, got %q", key, v)
			}
			if b {
				h.options = append(h.options, operon.IgnoreFailures())
			}
		default:
			return h, fmt.Errorf("unknown option %q (expected retries, backoff, fail_temporarily, delay, "+
				"operations, subresource, ignore_failures)", key)
		}
	}
	return h, nil
}

// run is a change handler: its outcome is a pure function of the handler's options, the
// object's spec.behaviour.<id> and the retry count.
func (h scripted) run(_ context.Context, c *operon.Ctx) (any, error) {
	script, _ := c.Object.Map("spec.behaviour")[h.id].(map[string]any)
	b := operon.Object(script)
	failures, delay := h.failTemporarily, h.delay
	switch v, _ := b.Get("fail_temporarily"); v := v.(type) {
	case bool:
		failures = 0
		if v {
			failures = math.MaxInt
		}
	case json.Number:
		n, _ := v.Float64()
		failures = int(max(0, min(n, math.MaxInt32)))
	}
	if d, ok := b.Float("delay"); ok && d >= 0 {
		delay = time.Duration(d * float64(time.Second))
	}
	message, ok := text(b, "message")
	if !ok {
		message = fmt.Sprintf("%s: attempt %d fails on purpose", h.id, c.Retry()+1)
	}
	switch {
	case b.Bool("fail_permanently"):
		return nil, operon.Permanent(message)
	case c.Retry() < failures:
		return nil, operon.Temporary(message, delay)
	}
	result, _ := b.Get("result")
	return result, nil
}

// admit is an admission handler: a pure function of the object under review.
func (h scripted) admit(_ context.Context, c *operon.Ctx) (any, error) {
	c.Warn(fmt.Sprintf("%s: checked by the Go example.", h.id))
	if h.kind == "validate" && c.Object.String("spec.field") == "not-allowed" {
		return nil, operon.Deny(fmt.Sprintf("%s: spec.field may not be \"not-allowed\".", h.id), 422)
	}
	if h.kind == "mutate" {
		c.Patch(map[string]any{"spec": map[string]any{"injected": 123}})
	}
	return nil, nil
}
