package operon

// What a change, event or timer handler gets for one call, and what it gives back besides its
// result: a merge patch and Events.

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"sync"
	"time"
)

// Reason is why a change handler runs.
type Reason string

const (
	ReasonCreate Reason = "create"
	ReasonUpdate Reason = "update"
	ReasonDelete Reason = "delete"
	ReasonResume Reason = "resume"
	// ReasonNone: event handlers and timers, which run for no change.
	ReasonNone Reason = ""
)

// Resource is the resource of the handled object as the core resolved it.
type Resource struct {
	Group      string
	Version    string
	Plural     string
	Kind       string
	Namespaced bool
}

// Event types for [Ctx.Event] and [DaemonCtx.Event].
const (
	EventNormal  = "Normal"
	EventWarning = "Warning"
)

// Event is a Kubernetes Event a handler asked the core to post (see [Ctx.Events]).
type Event struct {
	// Type is EventNormal or EventWarning.
	Type, Reason, Message string
}

// Admission is the admission review a validate or mutate handler is called for (the
// AdmissionReview's request, admission.k8s.io/v1).
type Admission struct {
	// Operation is "CREATE", "UPDATE", "DELETE" or "CONNECT".
	Operation string
	// Subresource is the subresource under review ("status"; "" for the main resource).
	Subresource string
	// DryRun is true when the request will not be persisted (see [SideEffects]).
	DryRun bool
	// UserInfo is the requesting user (username, uid, groups, extra).
	UserInfo Object
	// Headers are the webhook call's HTTP headers (names in lower case).
	Headers map[string]string
	// Request is the whole AdmissionReview request (uid, kind, resource, name, namespace,
	// object, oldObject, options, …).
	Request Object
}

// Ctx is one call of a change, event, timer or admission handler. Its methods are safe for
// concurrent use by the handler's goroutines; it is valid only during the call.
type Ctx struct {
	// Handler is the handler's id.
	Handler string
	// Reason is the change being handled (ReasonNone for event handlers and timers).
	Reason Reason
	// Object is the whole object.
	Object Object
	// Old and New are the object's old and new essence (spec, labels, annotations, …, as the
	// core stores them for diffing) for update handlers; for field handlers (OnField,
	// OnUpdateField) the old and new value of the field. JSON values: Object-like
	// map[string]any, []any, string, json.Number, bool; nil when there is none.
	Old, New any
	// Diff is the change between Old and New (empty when there is none).
	Diff Diff
	// EventType is the raw watch event of an event handler: "ADDED", "MODIFIED", "DELETED".
	EventType string
	// Resource is the object's resource.
	Resource Resource
	// Started is when the first attempt for this change began (zero when unknown).
	Started time.Time
	// AttemptID identifies this attempt (the same object, handler, change and retry count
	// give the same id); the SDK answers a repeated attempt from its cache.
	AttemptID string
	// Admission is the review, for validate and mutate handlers (nil for the others). For them
	// Object is the object under review (its oldObject when there is no object, e.g. on
	// DELETE), Old and New are the whole oldObject and object (nil when absent), and Diff is
	// their diff.
	Admission *Admission
	// Log is a logger with the handler and the object as attributes.
	Log *slog.Logger

	retry    int
	mu       sync.Mutex
	patch    map[string]any
	events   []Event
	warnings []string
}

// Retry is the number of attempts made before this one: 0 on the first call, 1 on the first
// retry, …
func (c *Ctx) Retry() int { return c.retry }

// Patch merges fragment into the JSON merge patch that the core applies to the object with the
// handler's outcome (in the same write as the handler's progress); for a mutate handler, to the
// object under review. Nested maps merge; a nil value deletes the key. Example:
// c.Patch(map[string]any{"metadata": map[string]any{"labels": map[string]any{"seen": "yes"}}}).
func (c *Ctx) Patch(fragment map[string]any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.patch = mergePatch(c.patch, fragment)
}

// Event asks the core to post a Kubernetes Event about the object (type [EventNormal] or
// [EventWarning]) with the handler's outcome.
func (c *Ctx) Event(eventType, reason, message string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.events = append(c.events, Event{eventType, reason, message})
}

// Warn adds a warning for the user who made the request (the AdmissionReview response's
// warnings; kubectl prints them). Validate and mutate handlers only: elsewhere there is nobody to
// warn, and the warnings are dropped.
func (c *Ctx) Warn(message string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.warnings = append(c.warnings, message)
}

// Warnings returns the warnings the handler added so far, e.g. for a unit test.
func (c *Ctx) Warnings() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.warnings...)
}

// Patched returns the merge patch the handler made so far (nil: none), e.g. for a unit test.
func (c *Ctx) Patched() map[string]any {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.patch) == 0 {
		return nil
	}
	return mergePatch(nil, c.patch)
}

// Events returns the Events the handler asked for so far, e.g. for a unit test.
func (c *Ctx) Events() []Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Event(nil), c.events...)
}

// collected returns the patch (JSON, nil when none), the events and the warnings.
func (c *Ctx) collected() ([]byte, []Event, []string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.patch) == 0 {
		return nil, c.events, c.warnings, nil
	}
	raw, err := marshalJSON(c.patch)
	return raw, c.events, c.warnings, err
}

// mergePatch merges the merge patch next into base (RFC 7386 composition: maps merge
// recursively, anything else replaces) and returns base.
func mergePatch(base, next map[string]any) map[string]any {
	if base == nil {
		base = map[string]any{}
	}
	for k, v := range next {
		nested, isMap := asMap(v)
		existing, wasMap := asMap(base[k])
		if isMap && wasMap {
			base[k] = mergePatch(existing, nested)
		} else if isMap {
			base[k] = mergePatch(nil, nested)
		} else {
			base[k] = v
		}
	}
	return base
}

func asMap(v any) (map[string]any, bool) {
	switch m := v.(type) {
	case map[string]any:
		return m, true
	case Object:
		return m, true
	}
	return nil, false
}

// marshalJSON encodes v without HTML escaping (an html page stays readable in a ConfigMap).
func marshalJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}
