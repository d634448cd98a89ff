package operon

// Registration options: functional options shared by every registration method. Each option
// applies to some kinds of registration only; giving one that does not apply is an error that
// Serve reports before it listens (never silently ignored).

import (
	"fmt"
	"maps"
	"slices"
	"time"
)

// Option configures one registration (a handler, a sync or a task type).
type Option func(*options)

// ErrorsMode says what an error that is neither [Temporary] nor [Permanent] means.
type ErrorsMode int

const (
	// ErrorsTemporary retries after the handler's [Backoff] (the default).
	ErrorsTemporary ErrorsMode = iota + 1
	// ErrorsPermanent fails the handler for good.
	ErrorsPermanent
	// ErrorsIgnored records the handler as done, as if it had succeeded.
	ErrorsIgnored
)

// UpdateStrategy says how the core updates an existing child of a sync whose live state
// differs from the desired one.
type UpdateStrategy int

const (
	// UpdateOnDelete never updates an existing child; a missing one is created (the default).
	UpdateOnDelete UpdateStrategy = iota + 1
	// UpdateRecreate deletes a differing child; the next sync creates it again.
	UpdateRecreate
	// UpdateInPlace applies the desired state to the existing child at once.
	UpdateInPlace
	// UpdateRollingRecreate is UpdateRecreate, one child at a time in the answer's order.
	UpdateRollingRecreate
	// UpdateRollingInPlace is UpdateInPlace, one child at a time, each waiting until the
	// previous one observed its change.
	UpdateRollingInPlace
)

var strategyNames = map[UpdateStrategy]string{
	UpdateOnDelete: "OnDelete", UpdateRecreate: "Recreate", UpdateInPlace: "InPlace",
	UpdateRollingRecreate: "RollingRecreate", UpdateRollingInPlace: "RollingInPlace",
}

// String is the strategy's name: OnDelete, Recreate, InPlace, RollingRecreate or
// RollingInPlace (Metacontroller's spelling).
func (s UpdateStrategy) String() string {
	if name, ok := strategyNames[s]; ok {
		return name
	}
	return fmt.Sprintf("UpdateStrategy(%d)", int(s))
}

// MarshalText writes the strategy's name (see [UpdateStrategy.String]).
func (s UpdateStrategy) MarshalText() ([]byte, error) {
	if _, ok := strategyNames[s]; !ok {
		return nil, fmt.Errorf("unknown update strategy %d", int(s))
	}
	return []byte(s.String()), nil
}

// UnmarshalText reads a strategy's name, so that a strategy can come from a flag
// (flag.TextVar(&s, "strategy", operon.UpdateInPlace, "…")) or a configuration file; an unknown
// name is an error that lists the valid ones.
func (s *UpdateStrategy) UnmarshalText(text []byte) error {
	for strategy, name := range strategyNames {
		if name == string(text) {
			*s = strategy
			return nil
		}
	}
	return fmt.Errorf("unknown update strategy %q (OnDelete, Recreate, InPlace, RollingRecreate or RollingInPlace)", text)
}

// Filter is a declarative test of one value (a label, an annotation, a field): [Equals],
// [Present] or [Absent]. The core evaluates it; a handler whose filters fail is not called.
type Filter struct {
	kind  filterKind
	value any
}

type filterKind int

const (
	filterEquals filterKind = iota + 1
	filterPresent
	filterAbsent
)

// Equals passes when the value equals v (compared as JSON; an absent value equals nothing).
func Equals(v any) Filter { return Filter{kind: filterEquals, value: v} }

// Present passes when the value exists (any value).
func Present() Filter { return Filter{kind: filterPresent} }

// Absent passes when the value does not exist.
func Absent() Filter { return Filter{kind: filterAbsent} }

// Hook is a sync registration's shutdown hook: before the core deletes or replaces a parent's
// children it asks the application to stop and waits for its confirmation (see
// proto/operon/v1/handler.proto, "Shutdown hook"). Set exactly one of Service (with Port) and
// URLTemplate.
type Hook struct {
	// A Service in the parent's namespace ("{name}" is the parent's name), called at
	// http://SERVICE.NAMESPACE.svc:PORT/shutdown.
	Service string
	Port    int
	// Or a URL template; "{namespace}", "{name}" and "{uid}" are the parent's.
	URLTemplate string
	// How long one attempt waits for the callback (0: the core's 30 s).
	GracePeriod time.Duration
	// Attempts after the first.
	Retries int
	// After the last attempt: true deletes the children anyway; false (the default) leaves
	// them and marks the parent degraded.
	DeleteOnFailure bool
}

// child is a child type of a sync registration.
type child struct {
	resource GVR
	strategy UpdateStrategy
}

// options accumulates what a registration's options say; given records which option names
// were used, so that Serve can refuse those that do not apply.
type options struct {
	given []string

	id                  string
	retries             *int
	backoff             *time.Duration
	timeout             *time.Duration
	callTimeout         *time.Duration
	errors              ErrorsMode
	optional            bool
	deleted             bool
	labels              map[string]Filter
	annotations         map[string]Filter
	field               string
	value, old, new     *Filter
	when                func(*Ctx) bool
	idle                *time.Duration
	initialDelay        *time.Duration
	sharp               bool
	cancellationTimeout *time.Duration
	cancellationBackoff *time.Duration

	operations     []string
	subresource    *string
	persistent     bool
	sideEffects    bool
	ignoreFailures bool

	owns     []child
	resync   *time.Duration
	finalize FinalizeFunc
	hook     *Hook

	sequential bool
	priority   int
	retention  *time.Duration
}

func (o *options) mark(name string) {
	if !slices.Contains(o.given, name) {
		o.given = append(o.given, name)
	}
}

func opt(name string, apply func(*options)) Option {
	return func(o *options) {
		o.mark(name)
		apply(o)
	}
}

// ID sets the registration's id: the key of the handler's progress record on the object and of
// its result in status.<id>. Without it, the id is the function's name ("reconcile"), or for a
// function literal "<kind>-<resource>" ("create-gowebsites"); field handlers without an ID get
// "/<field>" appended, as in Kopf. Keep ids stable: a renamed id runs its handler again.
func ID(id string) Option { return opt("ID", func(o *options) { o.id = id }) }

// Retries is the total number of attempts allowed; unset means unlimited.
func Retries(n int) Option { return opt("Retries", func(o *options) { o.retries = &n }) }

// Backoff is the delay before a retry after an error that is not [Temporary] (which has its
// own delay); unset means the core's 60 s.
func Backoff(d time.Duration) Option { return opt("Backoff", func(o *options) { o.backoff = &d }) }

// Timeout fails a handler permanently this long after its first attempt; for a task, it is the
// deadline of the whole run.
func Timeout(d time.Duration) Option { return opt("Timeout", func(o *options) { o.timeout = &d }) }

// CallTimeout is the deadline of one call (the handler's ctx); unset means the core's default.
func CallTimeout(d time.Duration) Option {
	return opt("CallTimeout", func(o *options) { o.callTimeout = &d })
}

// Errors sets what an error that is neither [Temporary] nor [Permanent] means.
func Errors(mode ErrorsMode) Option { return opt("Errors", func(o *options) { o.errors = mode }) }

// Optional makes a delete handler optional: it does not make the core hold a finalizer, so it
// may not run when the object goes.
func Optional() Option { return opt("Optional", func(o *options) { o.optional = true }) }

// Deleted makes a resume handler run for objects that are being deleted too.
func Deleted() Option { return opt("Deleted", func(o *options) { o.deleted = true }) }

// Labels requires each label to have exactly this value (repeatable, merged with [Label]).
func Labels(labels map[string]string) Option {
	return opt("Labels", func(o *options) {
		for k, v := range labels {
			o.labels = set(o.labels, k, Equals(v))
		}
	})
}

// Label requires the label key to pass f ([Equals], [Present], [Absent]).
func Label(key string, f Filter) Option {
	return opt("Label", func(o *options) { o.labels = set(o.labels, key, f) })
}

// Annotations requires each annotation to have exactly this value.
func Annotations(annotations map[string]string) Option {
	return opt("Annotations", func(o *options) {
		for k, v := range annotations {
			o.annotations = set(o.annotations, k, Equals(v))
		}
	})
}

// Annotation requires the annotation key to pass f.
func Annotation(key string, f Filter) Option {
	return opt("Annotation", func(o *options) { o.annotations = set(o.annotations, key, f) })
}

func set(m map[string]Filter, k string, f Filter) map[string]Filter {
	if m == nil {
		m = map[string]Filter{}
	}
	m[k] = f
	return m
}

// Field names a dotted path ("spec.size") for [Value]: without them the field
// must exist. (For a handler that fires when a field changes, use OnUpdateField or OnField.)
func Field(path string) Option { return opt("Field", func(o *options) { o.field = path }) }

// Value requires the value at the field ([Field], or the field of OnUpdateField/OnField) to
// pass f, in the old or the new state.
func Value(f Filter) Option { return opt("Value", func(o *options) { o.value = &f }) }

// OldValue requires the old value at the field to pass f (update and field handlers).
func OldValue(f Filter) Option { return opt("OldValue", func(o *options) { o.old = &f }) }

// NewValue requires the new value at the field to pass f (update and field handlers).
func NewValue(f Filter) Option { return opt("NewValue", func(o *options) { o.new = &f }) }

// When is a filter the core cannot evaluate: the SDK calls it before the handler (and when the
// core asks through the Match call: before it holds a finalizer for a delete handler, before it
// starts a timer or a daemon). False means the handler is not selected for the object, exactly
// as if a declarative filter had failed. It must be quick and free of side effects; only the
// object fields of the Ctx are set (no Patch, no Event).
func When(fn func(*Ctx) bool) Option { return opt("When", func(o *options) { o.when = fn }) }

// Idle delays a timer until the object has not changed for this long.
func Idle(d time.Duration) Option { return opt("Idle", func(o *options) { o.idle = &d }) }

// InitialDelay delays a timer's first tick, or a daemon's start, after the object appears.
func InitialDelay(d time.Duration) Option {
	return opt("InitialDelay", func(o *options) { o.initialDelay = &d })
}

// Sharp keeps a timer's ticks on a fixed schedule, regardless of how long each run takes.
func Sharp() Option { return opt("Sharp", func(o *options) { o.sharp = true }) }

// CancellationTimeout: after a daemon's graceful stop, the core cancels it (its ctx) when it has
// not exited within [CancellationBackoff], and abandons it this long after that. Without it,
// the core waits for the daemon to exit after the graceful stop, however long it takes.
func CancellationTimeout(d time.Duration) Option {
	return opt("CancellationTimeout", func(o *options) { o.cancellationTimeout = &d })
}

// CancellationBackoff is how long after the graceful stop the core cancels a daemon that has a
// [CancellationTimeout]; unset means at once.
func CancellationBackoff(d time.Duration) Option {
	return opt("CancellationBackoff", func(o *options) { o.cancellationBackoff = &d })
}

// Operations are the operations an admission handler's webhook is called for: "CREATE",
// "UPDATE", "DELETE", "CONNECT" (unset: all).
func Operations(ops ...string) Option {
	return opt("Operations", func(o *options) { o.operations = append(o.operations, ops...) })
}

// Subresource makes an admission handler's webhook cover a subresource ("status"), or the
// resource and all its subresources ("*"); unset: the main resource only.
func Subresource(name string) Option {
	return opt("Subresource", func(o *options) { o.subresource = &name })
}

// IgnoreFailures admits the request when the admission handler fails to answer (the
// webhook's failurePolicy Ignore; unset: Fail). A denial is a denial either way.
func IgnoreFailures() Option {
	return opt("IgnoreFailures", func(o *options) { o.ignoreFailures = true })
}

// Persistent keeps the admission handler's webhook in the managed configuration when the
// core stops (others are removed then, as in Kopf).
func Persistent() Option { return opt("Persistent", func(o *options) { o.persistent = true }) }

// SideEffects declares that the admission handler has side effects (the webhook's
// sideEffects NoneOnDryRun: check Ctx.Admission.DryRun); unset: None.
func SideEffects() Option { return opt("SideEffects", func(o *options) { o.sideEffects = true }) }

// Owns declares a child type of a sync: the core finds the parent's children of this type by
// their controller ownerReference, passes them to the sync function and applies its desired
// children of this type (strategy: how an existing child is updated; UpdateOnDelete when not
// given). Repeatable, once per type.
func Owns(r GVR, strategy ...UpdateStrategy) Option {
	return opt("Owns", func(o *options) {
		s := UpdateStrategy(0)
		if len(strategy) > 0 {
			s = strategy[0]
		}
		o.owns = append(o.owns, child{resource: r, strategy: s})
	})
}

// Resync syncs every parent at least this often (unset: only on changes of the parent or its
// children).
func Resync(d time.Duration) Option { return opt("Resync", func(o *options) { o.resync = &d }) }

// Finalize makes the core hold a finalizer on parents and call fn, instead of the sync
// function, while a parent is being deleted; the finalizer goes when fn answers Finalized.
func Finalize(fn FinalizeFunc) Option {
	return opt("Finalize", func(o *options) { o.finalize = fn })
}

// ShutdownHook gives a sync registration a shutdown hook (it implies a finalizer).
func ShutdownHook(h Hook) Option { return opt("ShutdownHook", func(o *options) { o.hook = &h }) }

// Sequential runs a task's steps one after another, persisting its status after each step, so
// that a task resumes at its first unfinished step after a core restart. Without it, a task
// is parallel: its status is written at the end, and a restart runs it from the start.
func Sequential() Option { return opt("Sequential", func(o *options) { o.sequential = true }) }

// Priority orders the waiting tasks of one parent: higher first (never pre-empting one that
// runs).
func Priority(n int) Option { return opt("Priority", func(o *options) { o.priority = n }) }

// Retention deletes finished tasks this long after they end (unset: the core's default).
func Retention(d time.Duration) Option {
	return opt("Retention", func(o *options) { o.retention = &d })
}

// applicable lists the options each kind of registration takes.
var applicable = func() map[regKind][]string {
	common := []string{"ID", "Labels", "Label", "Annotations", "Annotation", "When"}
	change := append(slices.Clone(common), "Retries", "Backoff", "Timeout", "CallTimeout", "Errors",
		"Field", "Value")
	withOldNew := append(slices.Clone(change), "OldValue", "NewValue")
	admission := append(slices.Clone(common), "CallTimeout", "Field", "Value", "Operations",
		"Subresource", "IgnoreFailures", "Persistent", "SideEffects")
	return map[regKind][]string{
		kindCreate: change,
		kindUpdate: withOldNew,
		// The field is positional for these two.
		kindUpdateField: without(withOldNew, "Field"),
		kindField:       without(withOldNew, "Field"),
		kindDelete:      append(slices.Clone(change), "Optional"),
		kindResume:      append(slices.Clone(change), "Deleted"),
		kindEvent:       append(slices.Clone(common), "CallTimeout", "Field", "Value"),
		kindTimer:       append(slices.Clone(change), "Idle", "InitialDelay", "Sharp"),
		kindDaemon: append(slices.Clone(common), "Retries", "Backoff", "Timeout", "Errors", "Field",
			"Value", "InitialDelay", "CancellationTimeout", "CancellationBackoff"),
		kindValidate: admission,
		kindMutate:   admission,
		kindSync:     {"ID", "Owns", "Resync", "Finalize", "CallTimeout", "ShutdownHook"},
		kindTask:     {"ID", "Sequential", "Priority", "Retention", "Timeout"},
	}
}()

func without(names []string, drop string) []string {
	return slices.DeleteFunc(slices.Clone(names), func(n string) bool { return n == drop })
}

// collect applies opts.
func collect(opts []Option) options {
	var o options
	for _, apply := range opts {
		if apply != nil {
			apply(&o)
		}
	}
	return o
}

// sortedKeys returns m's keys in order (manifests are deterministic).
func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
