package operon

// The App: a named set of registrations, built with chained calls and served with Serve.

import (
	"context"
	"log/slog"
	"os"
	"reflect"
	"runtime"
	"strings"
	"time"
)

// GVR names a resource: Group ("" for the core group), Version and Resource (the plural, e.g.
// "configmaps"; kubectl-style singular, kind and short names work too, but the plural is what
// the SDK matches calls against when one id serves several resources).
type GVR struct {
	Group    string
	Version  string
	Resource string
}

func (g GVR) String() string {
	if g.Group == "" {
		return g.Version + "/" + g.Resource
	}
	return g.Group + "/" + g.Version + "/" + g.Resource
}

// HandlerFunc is a change, event or timer handler. Its result (nil for none) is written by the
// core to status.<handler id> when the handler succeeds; its error decides the retry: see
// [Temporary], [Permanent]; any other error is retried per the handler's [Errors] mode. A panic
// is answered as an error (and logged with its stack). ctx carries the core's deadline and
// trace; it is cancelled when the core gives up on the call.
type HandlerFunc func(ctx context.Context, c *Ctx) (any, error)

// App is an Operon handler service: register handlers on it, then Serve. Registration methods
// return the App so that calls chain; mistakes in registrations (an option that does not apply,
// a duplicate id, …) are reported by Serve before it listens. An App must not be changed once
// served.
type App struct {
	name string
	regs []*registration
	log  *slog.Logger
	cfg  *config
}

// New starts an App named name (the service name in the core's logs and the dashboard, and the
// default OTEL_SERVICE_NAME).
func New(name string) *App {
	return &App{name: name, log: slog.New(slog.NewTextHandler(os.Stderr, nil))}
}

// Logger replaces the App's logger (default: text to stderr). Handlers get it, with the
// handler and the object as attributes, as Ctx.Log.
func (a *App) Logger(l *slog.Logger) *App {
	if l != nil {
		a.log = l
	}
	return a
}

// regKind is the kind of one registration.
type regKind int

const (
	kindCreate regKind = iota + 1
	kindUpdate
	kindUpdateField
	kindField
	kindDelete
	kindResume
	kindEvent
	kindTimer
	kindDaemon
	kindSync
	kindTask
	kindValidate
	kindMutate
)

var kindNames = map[regKind]string{
	kindCreate: "create", kindUpdate: "update", kindUpdateField: "update", kindField: "field",
	kindDelete: "delete", kindResume: "resume", kindEvent: "event", kindTimer: "timer",
	kindDaemon: "daemon", kindSync: "sync", kindTask: "task", kindValidate: "validate",
	kindMutate: "mutate",
}

var methodNames = map[regKind]string{
	kindCreate: "OnCreate", kindUpdate: "OnUpdate", kindUpdateField: "OnUpdateField",
	kindField: "OnField", kindDelete: "OnDelete", kindResume: "OnResume", kindEvent: "OnEvent",
	kindTimer: "Timer", kindDaemon: "Daemon", kindSync: "Sync", kindTask: "Task",
	kindValidate: "OnValidate", kindMutate: "OnMutate",
}

// registration is one call of a registration method, as given.
type registration struct {
	kind     regKind
	resource GVR
	// field: OnUpdateField, OnField; interval: Timer.
	field    string
	interval time.Duration
	// Exactly one of these, per kind.
	handler HandlerFunc
	daemon  DaemonFunc
	sync    SyncFunc
	task    TaskFunc
	// Tasks: the parent resource and the field of the task naming it.
	parent      GVR
	parentField string
	// The function's name, for default ids ("" for function literals).
	funcName string
	opts     options
	// The id, resolved by build.
	id string
}

func (a *App) add(r *registration, fn any, opts []Option) *App {
	r.funcName = funcName(fn)
	r.opts = collect(opts)
	a.regs = append(a.regs, r)
	return a
}

// OnCreate runs fn once when an object of r appears (for objects that existed before the
// operator first ran: once as well, as Kopf does).
func (a *App) OnCreate(r GVR, fn HandlerFunc, opts ...Option) *App {
	return a.add(&registration{kind: kindCreate, resource: r, handler: fn}, fn, opts)
}

// OnUpdate runs fn when an object's essence (spec, labels, annotations, … — not status) changes.
func (a *App) OnUpdate(r GVR, fn HandlerFunc, opts ...Option) *App {
	return a.add(&registration{kind: kindUpdate, resource: r, handler: fn}, fn, opts)
}

// OnUpdateField runs fn when the value at the dotted path field changes in an update (Kopf's
// @kopf.on.update(field=...)). Ctx.Old, New and Diff are the field's.
func (a *App) OnUpdateField(r GVR, field string, fn HandlerFunc, opts ...Option) *App {
	return a.add(&registration{kind: kindUpdateField, resource: r, field: field, handler: fn}, fn, opts)
}

// OnField runs fn in any create, update, delete or resume cycle where the value at field
// changed (Kopf's @kopf.on.field). Ctx.Old, New and Diff are the field's.
func (a *App) OnField(r GVR, field string, fn HandlerFunc, opts ...Option) *App {
	return a.add(&registration{kind: kindField, resource: r, field: field, handler: fn}, fn, opts)
}

// OnDelete runs fn when an object is being deleted; the core holds a finalizer until fn
// succeeds (unless [Optional]).
func (a *App) OnDelete(r GVR, fn HandlerFunc, opts ...Option) *App {
	return a.add(&registration{kind: kindDelete, resource: r, handler: fn}, fn, opts)
}

// OnResume runs fn for every existing object when the operator starts (not for objects being
// deleted, unless [Deleted]).
func (a *App) OnResume(r GVR, fn HandlerFunc, opts ...Option) *App {
	return a.add(&registration{kind: kindResume, resource: r, handler: fn}, fn, opts)
}

// OnEvent runs fn for every raw watch event (Ctx.EventType). No progress is stored, errors are
// logged and not retried, and fn's result is ignored.
func (a *App) OnEvent(r GVR, fn HandlerFunc, opts ...Option) *App {
	return a.add(&registration{kind: kindEvent, resource: r, handler: fn}, fn, opts)
}

// OnValidate serves fn as a validating admission webhook for r (Kopf's @kopf.on.validate): the
// core serves the webhook (`operon run --admission-listen`) and calls fn for every review it
// selects (options: [Operations], [Subresource], [IgnoreFailures], [Persistent],
// [SideEffects], the filters, [CallTimeout]). Return nil to allow the request, [Deny] (or any
// error) to deny it; Ctx.Admission is the review, [Ctx.Warn] adds warnings for the user. The
// result is ignored; nothing is stored and nothing is retried.
func (a *App) OnValidate(r GVR, fn HandlerFunc, opts ...Option) *App {
	return a.add(&registration{kind: kindValidate, resource: r, handler: fn}, fn, opts)
}

// OnMutate serves fn as a mutating admission webhook for r (Kopf's @kopf.on.mutate): as
// [App.OnValidate], and the merge patch fn makes with [Ctx.Patch] is applied to the object
// under review (the core answers it as a JSONPatch). On DELETE it is called only when its only
// operation is DELETE.
func (a *App) OnMutate(r GVR, fn HandlerFunc, opts ...Option) *App {
	return a.add(&registration{kind: kindMutate, resource: r, handler: fn}, fn, opts)
}

// Timer runs fn every interval for every object of r (options: [Idle], [InitialDelay],
// [Sharp]); errors retry within the tick as for change handlers. fn's result goes to
// status.<id>.
func (a *App) Timer(r GVR, interval time.Duration, fn HandlerFunc, opts ...Option) *App {
	return a.add(&registration{kind: kindTimer, resource: r, interval: interval, handler: fn}, fn, opts)
}

// Daemon runs fn for as long as each object of r exists (and matches its filters): see
// [DaemonFunc].
func (a *App) Daemon(r GVR, fn DaemonFunc, opts ...Option) *App {
	return a.add(&registration{kind: kindDaemon, resource: r, daemon: fn}, fn, opts)
}

// Sync registers a level-triggered sync of the parents of r: see [SyncFunc]; declare the child
// types with [Owns].
func (a *App) Sync(parent GVR, fn SyncFunc, opts ...Option) *App {
	return a.add(&registration{kind: kindSync, resource: parent, sync: fn}, fn, opts)
}

// Task registers a task type: objects of task name their parent (of resource parent, same
// namespace) at the dotted path parentField; the core runs them one at a time per parent, in
// FIFO order, through fn: see [TaskFunc].
func (a *App) Task(task GVR, parent GVR, parentField string, fn TaskFunc, opts ...Option) *App {
	return a.add(&registration{
		kind: kindTask, resource: task, parent: parent, parentField: parentField, task: fn,
	}, fn, opts)
}

// funcName is the name of a named function or method ("reconcile"), "" for a function literal.
func funcName(fn any) string {
	v := reflect.ValueOf(fn)
	if !v.IsValid() || v.Kind() != reflect.Func || v.IsNil() {
		return ""
	}
	f := runtime.FuncForPC(v.Pointer())
	if f == nil {
		return ""
	}
	return shortFuncName(f.Name())
}

// shortFuncName turns a runtime function name into its short name: "main.reconcile" →
// "reconcile", "pkg.(*T).Method-fm" → "Method"; literals ("main.main.func1",
// "pkg.init.func2", "main.glob..func1") → "".
func shortFuncName(full string) string {
	name := full[strings.LastIndex(full, "/")+1:]
	if i := strings.Index(name, "["); i >= 0 { // generic instantiations
		name = name[:i]
	}
	name = strings.TrimSuffix(name, "-fm")
	parts := strings.Split(name, ".")
	last := parts[len(parts)-1]
	if last == "" || isDigits(last) || (strings.HasPrefix(last, "func") && isDigits(last[4:])) ||
		strings.Contains(name, "glob.") {
		return ""
	}
	return last
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
