package operon

// From registrations to the manifest that Describe answers: ids resolved, every registration
// checked (pure; Serve refuses to start on the first problems), dispatch tables built.

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "example.invalid/operon/sdk/go/gen/operonv1"
)

// ContractRevision is the revision of the handler contract (proto/operon/v1) this SDK speaks:
// announced in the manifest; a core that speaks an older one is refused in Describe.
const ContractRevision = 1

// built is a checked App: its manifest and what serves each call.
type built struct {
	name     string
	manifest *pb.Manifest
	// handlers: change, event, timer and daemon registrations, in registration order.
	handlers []*registration
	syncs    map[string]*registration
	tasks    map[string]*registration
}

// build checks the registrations and resolves their ids.
func (a *App) build() (*built, error) {
	var problems []error
	fail := func(r *registration, format string, args ...any) {
		where := fmt.Sprintf("%s(%s)", methodNames[r.kind], r.resource)
		if r.id != "" {
			where += fmt.Sprintf(" %q", r.id)
		}
		problems = append(problems, fmt.Errorf("operon: %s: %s", where, fmt.Sprintf(format, args...)))
	}
	if a.name == "" {
		problems = append(problems, errors.New("operon: New: the service name is empty"))
	}
	b := &built{
		name:     a.name,
		manifest: &pb.Manifest{ServiceName: a.name, ContractRevision: ContractRevision},
		syncs:    map[string]*registration{},
		tasks:    map[string]*registration{},
	}
	type handlerKey struct {
		id       string
		kind     regKind
		resource GVR
	}
	seen := map[handlerKey]bool{}
	for _, r := range a.regs {
		r.id = defaultID(r)
		for _, name := range r.opts.given {
			if !slices.Contains(applicable[r.kind], name) {
				fail(r, "the option %s does not apply to %s registrations", name, kindNames[r.kind])
			}
		}
		for _, p := range check(r) {
			fail(r, "%s", p)
		}
		switch r.kind {
		case kindSync:
			if b.syncs[r.id] != nil {
				fail(r, "another sync has the id %q (give one an operon.ID)", r.id)
			}
			b.syncs[r.id] = r
			b.manifest.Syncs = append(b.manifest.Syncs, syncRegistration(r))
		case kindTask:
			if b.tasks[r.id] != nil {
				fail(r, "another task type has the id %q (give one an operon.ID)", r.id)
			}
			b.tasks[r.id] = r
			b.manifest.Tasks = append(b.manifest.Tasks, taskRegistration(r))
		default:
			key := handlerKey{r.id, wireKind(r.kind), r.resource}
			if seen[key] {
				fail(r, "another %s handler of %s has the id %q (give one an operon.ID)",
					kindNames[r.kind], r.resource, r.id)
			}
			seen[key] = true
			b.handlers = append(b.handlers, r)
			b.manifest.Handlers = append(b.manifest.Handlers, handler(r))
		}
	}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}
	return b, nil
}

// wireKind folds OnUpdateField into update (the same kind on the wire).
func wireKind(k regKind) regKind {
	if k == kindUpdateField {
		return kindUpdate
	}
	return k
}

// defaultID is the registration's id: its ID option, else the function's name, else
// "<kind>-<resource>"; field handlers without an ID get "/<field>" (Kopf's ids).
func defaultID(r *registration) string {
	if r.opts.id != "" {
		return r.opts.id
	}
	id := r.funcName
	if id == "" {
		id = kindNames[r.kind] + "-" + r.resource.Resource
	}
	if r.field != "" {
		id += "/" + r.field
	}
	return id
}

// check returns what is wrong with one registration, apart from its options' applicability.
func check(r *registration) []string {
	var p []string
	o := r.opts
	if r.resource.Resource == "" {
		p = append(p, "the resource is empty (GVR.Resource, e.g. \"configmaps\")")
	}
	if r.handler == nil && r.daemon == nil && r.sync == nil && r.task == nil {
		p = append(p, "the function is nil")
	}
	if (r.kind == kindUpdateField || r.kind == kindField) && r.field == "" {
		p = append(p, "the field is empty")
	}
	field := r.field
	if field == "" {
		field = o.field
	}
	if field == "" && (o.value != nil || o.old != nil || o.new != nil) {
		p = append(p, "Value, OldValue and NewValue need a field (operon.Field)")
	}
	for _, op := range o.operations {
		if !slices.Contains([]string{"CREATE", "UPDATE", "DELETE", "CONNECT"}, op) {
			p = append(p, fmt.Sprintf("Operations: unknown operation %q (CREATE, UPDATE, DELETE or CONNECT)", op))
		}
	}
	if r.kind == kindTimer && r.interval <= 0 {
		p = append(p, "the interval must be positive")
	}
	if o.retries != nil && *o.retries < 0 {
		p = append(p, "Retries must not be negative")
	}
	for name, d := range map[string]*time.Duration{
		"Backoff": o.backoff, "Timeout": o.timeout, "CallTimeout": o.callTimeout, "Idle": o.idle,
		"InitialDelay": o.initialDelay, "CancellationTimeout": o.cancellationTimeout,
		"CancellationBackoff": o.cancellationBackoff, "Resync": o.resync, "Retention": o.retention,
	} {
		if d != nil && *d < 0 {
			p = append(p, name+" must not be negative")
		}
	}
	if o.errors != 0 && (o.errors < ErrorsTemporary || o.errors > ErrorsIgnored) {
		p = append(p, "unknown Errors mode")
	}
	for i, m := range []map[string]Filter{o.labels, o.annotations} {
		what := []string{"Label", "Annotation"}[i]
		for _, k := range sortedKeys(m) {
			if f := m[k]; f.kind == filterEquals {
				if _, ok := f.value.(string); !ok {
					p = append(p, fmt.Sprintf("%s(%q): the value must be a string", what, k))
				}
			}
		}
	}
	for _, f := range collectFilters(o) {
		if f.kind == 0 {
			p = append(p, "a filter is the zero Filter (use operon.Equals, Present or Absent)")
			break
		}
		if f.kind == filterEquals {
			if _, err := marshalJSON(f.value); err != nil {
				p = append(p, fmt.Sprintf("a filter's value is not JSON: %v", err))
			}
		}
	}
	var owned []GVR
	for _, c := range o.owns {
		if c.resource.Resource == "" {
			p = append(p, "an Owns resource is empty")
		}
		if slices.Contains(owned, c.resource) {
			p = append(p, fmt.Sprintf("Owns(%s) is given twice", c.resource))
		}
		owned = append(owned, c.resource)
		if c.strategy != 0 && (c.strategy < UpdateOnDelete || c.strategy > UpdateRollingInPlace) {
			p = append(p, fmt.Sprintf("Owns(%s): unknown update strategy", c.resource))
		}
	}
	if h := o.hook; h != nil {
		switch {
		case (h.Service == "") == (h.URLTemplate == ""):
			p = append(p, "ShutdownHook needs exactly one of Service and URLTemplate")
		case h.Service != "" && (h.Port < 1 || h.Port > 65535):
			p = append(p, "ShutdownHook's Service needs a Port (1-65535)")
		case h.GracePeriod < 0 || h.Retries < 0:
			p = append(p, "ShutdownHook's GracePeriod and Retries must not be negative")
		}
	}
	if r.kind == kindTask {
		if r.parent.Resource == "" {
			p = append(p, "the parent resource is empty")
		}
		if r.parentField == "" {
			p = append(p, "the parent field is empty")
		}
	}
	return p
}

func collectFilters(o options) []Filter {
	var out []Filter
	for _, k := range sortedKeys(o.labels) {
		out = append(out, o.labels[k])
	}
	for _, k := range sortedKeys(o.annotations) {
		out = append(out, o.annotations[k])
	}
	for _, f := range []*Filter{o.value, o.old, o.new} {
		if f != nil {
			out = append(out, *f)
		}
	}
	return out
}

func selector(r GVR) *pb.ResourceSelector {
	return &pb.ResourceSelector{Group: r.Group, Version: r.Version, Name: r.Resource}
}

func duration(d *time.Duration) *durationpb.Duration {
	if d == nil {
		return nil
	}
	return durationpb.New(*d)
}

var wireKinds = map[regKind]pb.HandlerKind{
	kindCreate: pb.HandlerKind_HANDLER_KIND_CREATE, kindUpdate: pb.HandlerKind_HANDLER_KIND_UPDATE,
	kindUpdateField: pb.HandlerKind_HANDLER_KIND_UPDATE, kindField: pb.HandlerKind_HANDLER_KIND_FIELD,
	kindDelete: pb.HandlerKind_HANDLER_KIND_DELETE, kindResume: pb.HandlerKind_HANDLER_KIND_RESUME,
	kindEvent: pb.HandlerKind_HANDLER_KIND_EVENT, kindTimer: pb.HandlerKind_HANDLER_KIND_TIMER,
	kindDaemon: pb.HandlerKind_HANDLER_KIND_DAEMON, kindValidate: pb.HandlerKind_HANDLER_KIND_VALIDATE,
	kindMutate: pb.HandlerKind_HANDLER_KIND_MUTATE,
}

var errorsModes = map[ErrorsMode]pb.ErrorsMode{
	ErrorsTemporary: pb.ErrorsMode_ERRORS_MODE_TEMPORARY,
	ErrorsPermanent: pb.ErrorsMode_ERRORS_MODE_PERMANENT,
	ErrorsIgnored:   pb.ErrorsMode_ERRORS_MODE_IGNORED,
}

func valueFilter(f *Filter) *pb.ValueFilter {
	if f == nil {
		return nil
	}
	switch f.kind {
	case filterPresent:
		return &pb.ValueFilter{Test: &pb.ValueFilter_Present{Present: true}}
	case filterAbsent:
		return &pb.ValueFilter{Test: &pb.ValueFilter_Absent{Absent: true}}
	}
	raw, _ := marshalJSON(f.value) // checked by check()
	return &pb.ValueFilter{Test: &pb.ValueFilter_EqualsJson{EqualsJson: raw}}
}

func filterMap(m map[string]Filter) map[string]*pb.ValueFilter {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]*pb.ValueFilter, len(m))
	for k, f := range m {
		out[k] = valueFilter(&f)
	}
	return out
}

// handler is the manifest entry of a change, event, timer or daemon registration.
func handler(r *registration) *pb.Handler {
	o := r.opts
	field := r.field
	if field == "" {
		field = o.field
	}
	options := &pb.Options{
		Timeout:             duration(o.timeout),
		Backoff:             duration(o.backoff),
		Errors:              errorsModes[o.errors],
		Optional:            o.optional,
		Deleted:             o.deleted,
		Idle:                duration(o.idle),
		InitialDelay:        duration(o.initialDelay),
		Sharp:               o.sharp,
		CancellationTimeout: duration(o.cancellationTimeout),
		CallTimeout:         duration(o.callTimeout),
		CancellationBackoff: duration(o.cancellationBackoff),
		Operations:          o.operations,
		Subresource:         o.subresource,
		Persistent:          o.persistent,
		SideEffects:         o.sideEffects,
		IgnoreFailures:      o.ignoreFailures,
	}
	if o.retries != nil {
		n := uint32(*o.retries)
		options.Retries = &n
	}
	if r.kind == kindTimer {
		options.Interval = durationpb.New(r.interval)
	}
	return &pb.Handler{
		Id:       r.id,
		Kind:     wireKinds[r.kind],
		Resource: selector(r.resource),
		Filters: &pb.Filters{
			Labels:             filterMap(o.labels),
			Annotations:        filterMap(o.annotations),
			Field:              field,
			Value:              valueFilter(o.value),
			Old:                valueFilter(o.old),
			New:                valueFilter(o.new),
			HasCallbackFilters: o.when != nil,
		},
		Options: options,
	}
}

var strategies = map[UpdateStrategy]pb.UpdateStrategy{
	UpdateOnDelete:        pb.UpdateStrategy_UPDATE_STRATEGY_ON_DELETE,
	UpdateRecreate:        pb.UpdateStrategy_UPDATE_STRATEGY_RECREATE,
	UpdateInPlace:         pb.UpdateStrategy_UPDATE_STRATEGY_IN_PLACE,
	UpdateRollingRecreate: pb.UpdateStrategy_UPDATE_STRATEGY_ROLLING_RECREATE,
	UpdateRollingInPlace:  pb.UpdateStrategy_UPDATE_STRATEGY_ROLLING_IN_PLACE,
}

func syncRegistration(r *registration) *pb.SyncRegistration {
	o := r.opts
	reg := &pb.SyncRegistration{
		Id:           r.id,
		Parent:       selector(r.resource),
		ResyncPeriod: duration(o.resync),
		Finalize:     o.finalize != nil,
		CallTimeout:  duration(o.callTimeout),
	}
	for _, c := range o.owns {
		reg.Children = append(reg.Children, &pb.ChildType{
			Resource: selector(c.resource), UpdateStrategy: strategies[c.strategy],
		})
	}
	if h := o.hook; h != nil {
		failure := pb.ShutdownFailureStrategy_SHUTDOWN_FAILURE_STRATEGY_GIVE_UP
		if h.DeleteOnFailure {
			failure = pb.ShutdownFailureStrategy_SHUTDOWN_FAILURE_STRATEGY_DELETE
		}
		hook := &pb.ShutdownHook{
			Service:         h.Service,
			Port:            uint32(max(h.Port, 0)),
			UrlTemplate:     h.URLTemplate,
			Retries:         uint32(max(h.Retries, 0)),
			FailureStrategy: failure,
		}
		if h.GracePeriod > 0 {
			hook.GracePeriod = durationpb.New(h.GracePeriod)
		}
		reg.ShutdownHook = hook
	}
	return reg
}

func taskRegistration(r *registration) *pb.TaskRegistration {
	o := r.opts
	mode := pb.TaskMode_TASK_MODE_PARALLEL
	if o.sequential {
		mode = pb.TaskMode_TASK_MODE_SEQUENTIAL
	}
	return &pb.TaskRegistration{
		Id:          r.id,
		Task:        selector(r.resource),
		Parent:      selector(r.parent),
		ParentField: r.parentField,
		Mode:        mode,
		Priority:    int32(o.priority),
		Retention:   duration(o.retention),
		Timeout:     duration(o.timeout),
	}
}

// callKind is what a call to a handler registration is: an Invoke (or Match) of a change, event or
// timer handler, a Daemon call, or an Invoke with an admission review.
type callKind int

const (
	callInvoke callKind = iota + 1
	callDaemon
	callAdmission
)

// serves is the call that runs registrations of kind k.
func serves(k regKind) callKind {
	switch k {
	case kindDaemon:
		return callDaemon
	case kindValidate, kindMutate:
		return callAdmission
	}
	return callInvoke
}

// find returns the handler registration for a call: by id, preferring the one whose resource
// and kind fit the call (one id may serve several kinds and resources, as in Kopf).
func (b *built) find(id string, res *pb.ResolvedResource, reason pb.Reason, c callKind) *registration {
	var candidates []*registration
	for _, r := range b.handlers {
		if r.id == id && serves(r.kind) == c {
			candidates = append(candidates, r)
		}
	}
	score := func(r *registration) int {
		s := 0
		if res != nil && r.resource.Resource == res.Plural && r.resource.Group == res.Group {
			s += 2
		}
		if fitsReason(r.kind, reason) {
			s++
		}
		return s
	}
	var best *registration
	for _, r := range candidates {
		if best == nil || score(r) > score(best) {
			best = r
		}
	}
	return best
}

func fitsReason(k regKind, reason pb.Reason) bool {
	switch reason {
	case pb.Reason_REASON_CREATE:
		return k == kindCreate || k == kindField
	case pb.Reason_REASON_UPDATE:
		return k == kindUpdate || k == kindUpdateField || k == kindField
	case pb.Reason_REASON_DELETE:
		return k == kindDelete || k == kindField
	case pb.Reason_REASON_RESUME:
		return k == kindResume || k == kindField
	}
	return k == kindEvent || k == kindTimer || k == kindDaemon
}
