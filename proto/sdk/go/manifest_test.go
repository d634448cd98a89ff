package operon

import (
	"context"
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	pb "example.invalid/operon/sdk/go/gen/operonv1"
)

var (
	widgets    = GVR{Group: "e2e.operon.dev", Version: "v1", Resource: "widgets"}
	configMaps = GVR{Version: "v1", Resource: "configmaps"}
	repairs    = GVR{Group: "e2e.operon.dev", Version: "v1", Resource: "repairs"}
)

func reconcile(context.Context, *Ctx) (any, error)         { return nil, nil }
func cleanUp(context.Context, *Ctx) (any, error)           { return nil, nil }
func watch(context.Context, *DaemonCtx) error              { return nil }
func render(context.Context, *SyncCtx) (SyncResult, error) { return SyncResult{}, nil }
func repair(context.Context, *TaskCtx) (string, error)     { return "", nil }

type methods struct{}

func (methods) Handle(context.Context, *Ctx) (any, error) { return nil, nil }

func TestShortFuncNames(t *testing.T) {
	for full, want := range map[string]string{
		"main.reconcile":                   "reconcile",
		"example.com/x/pkg.(*T).Handle-fm": "Handle",
		"example.com/x/pkg.T.Handle-fm":    "Handle",
		"main.main.func1":                  "",
		"main.main.func1.2":                "",
		"main.glob..func1":                 "",
		"example.com/x/pkg.init.func3":     "",
		"main.functional":                  "functional",
		"example.com/x/pkg.Generic[...]":   "Generic",
	} {
		if got := shortFuncName(full); got != want {
			t.Errorf("shortFuncName(%q) = %q, want %q", full, got, want)
		}
	}
	if got := funcName(reconcile); got != "reconcile" {
		t.Errorf("funcName(reconcile) = %q", got)
	}
	if got := funcName(methods{}.Handle); got != "Handle" {
		t.Errorf("a method value: %q", got)
	}
	if got := funcName(HandlerFunc(func(context.Context, *Ctx) (any, error) { return nil, nil })); got != "" {
		t.Errorf("a literal: %q", got)
	}
}

func TestManifest(t *testing.T) {
	app := New("widgets-operator").
		OnCreate(widgets, reconcile, Retries(3), Backoff(2*time.Second), Timeout(time.Minute),
			Errors(ErrorsPermanent), Labels(map[string]string{"app": "web"}),
			Annotation("skip", Absent()), CallTimeout(5*time.Second)).
		OnUpdate(widgets, reconcile).
		OnUpdateField(widgets, "spec.size", func(context.Context, *Ctx) (any, error) { return nil, nil },
			OldValue(Present()), NewValue(Equals(3))).
		OnField(widgets, "spec.mode", reconcile, ID("mode")).
		OnDelete(widgets, cleanUp, Optional()).
		OnResume(widgets, reconcile, Deleted(), When(func(*Ctx) bool { return true })).
		OnEvent(widgets, func(context.Context, *Ctx) (any, error) { return nil, nil }, Field("spec.x"), Value(Present())).
		Timer(widgets, time.Minute, reconcile, ID("tick"), Idle(time.Second), InitialDelay(2*time.Second), Sharp()).
		Daemon(widgets, watch, CancellationTimeout(3*time.Second), CancellationBackoff(time.Second)).
		Sync(widgets, render, Owns(configMaps, UpdateInPlace), Owns(GVR{Version: "v1", Resource: "services"}),
			Resync(30*time.Second), Finalize(func(context.Context, *SyncCtx) (FinalizeResult, error) {
				return FinalizeResult{Finalized: true}, nil
			}), ShutdownHook(Hook{Service: "{name}-app", Port: 8080, Retries: 2, DeleteOnFailure: true})).
		Task(repairs, widgets, "spec.widget", repair, Sequential(), Priority(5), Retention(time.Hour), Timeout(time.Minute)).
		OnValidate(widgets, reconcile, ID("check"), Operations("CREATE", "UPDATE"), Subresource("*"),
			IgnoreFailures(), Persistent(), SideEffects(), CallTimeout(3*time.Second)).
		OnMutate(widgets, reconcile, ID("inject"))
	b, err := app.build()
	if err != nil {
		t.Fatal(err)
	}
	m := b.manifest
	if m.ServiceName != "widgets-operator" || m.ContractRevision != ContractRevision {
		t.Errorf("header: %v", m)
	}
	var ids []string
	for _, h := range m.Handlers {
		ids = append(ids, h.Kind.String()+":"+h.Id)
	}
	want := []string{
		"HANDLER_KIND_CREATE:reconcile", "HANDLER_KIND_UPDATE:reconcile",
		"HANDLER_KIND_UPDATE:update-widgets/spec.size", "HANDLER_KIND_FIELD:mode",
		"HANDLER_KIND_DELETE:cleanUp", "HANDLER_KIND_RESUME:reconcile", "HANDLER_KIND_EVENT:event-widgets",
		"HANDLER_KIND_TIMER:tick", "HANDLER_KIND_DAEMON:watch", "HANDLER_KIND_VALIDATE:check",
		"HANDLER_KIND_MUTATE:inject",
	}
	if strings.Join(ids, " ") != strings.Join(want, " ") {
		t.Errorf("handlers:\n got %v\nwant %v", ids, want)
	}
	create := m.Handlers[0]
	o := create.Options
	if o.GetRetries() != 3 || o.Backoff.AsDuration() != 2*time.Second || o.Timeout.AsDuration() != time.Minute ||
		o.Errors != pb.ErrorsMode_ERRORS_MODE_PERMANENT || o.CallTimeout.AsDuration() != 5*time.Second {
		t.Errorf("create options: %v", o)
	}
	if string(create.Filters.Labels["app"].GetEqualsJson()) != `"web"` || !create.Filters.Annotations["skip"].GetAbsent() {
		t.Errorf("create filters: %v", create.Filters)
	}
	if create.Resource.Group != "e2e.operon.dev" || create.Resource.Version != "v1" || create.Resource.Name != "widgets" {
		t.Errorf("resource: %v", create.Resource)
	}
	field := m.Handlers[2].Filters
	if field.Field != "spec.size" || !field.Old.GetPresent() || string(field.New.GetEqualsJson()) != "3" {
		t.Errorf("update-field filters: %v", field)
	}
	if m.Handlers[3].Filters.Field != "spec.mode" || !m.Handlers[4].Options.Optional {
		t.Error("field/optional")
	}
	resume := m.Handlers[5]
	if !resume.Options.Deleted || !resume.Filters.HasCallbackFilters || m.Handlers[0].Filters.HasCallbackFilters {
		t.Errorf("resume: %v", resume)
	}
	if ev := m.Handlers[6].Filters; ev.Field != "spec.x" || !ev.Value.GetPresent() {
		t.Errorf("event filters: %v", ev)
	}
	timer := m.Handlers[7].Options
	if timer.Interval.AsDuration() != time.Minute || timer.Idle.AsDuration() != time.Second ||
		timer.InitialDelay.AsDuration() != 2*time.Second || !timer.Sharp {
		t.Errorf("timer: %v", timer)
	}
	daemon := m.Handlers[8].Options
	if daemon.CancellationTimeout.AsDuration() != 3*time.Second || daemon.CancellationBackoff.AsDuration() != time.Second {
		t.Errorf("daemon: %v", daemon)
	}
	validate := m.Handlers[9].Options
	if strings.Join(validate.Operations, ",") != "CREATE,UPDATE" || validate.GetSubresource() != "*" ||
		!validate.IgnoreFailures || !validate.Persistent || !validate.SideEffects ||
		validate.CallTimeout.AsDuration() != 3*time.Second {
		t.Errorf("validate: %v", validate)
	}
	if mutate := m.Handlers[10].Options; mutate.Subresource != nil || mutate.Operations != nil || mutate.IgnoreFailures {
		t.Errorf("mutate: %v", mutate)
	}
	s := m.Syncs[0]
	if s.Id != "render" || len(s.Children) != 2 || s.Children[0].UpdateStrategy != pb.UpdateStrategy_UPDATE_STRATEGY_IN_PLACE ||
		s.Children[1].UpdateStrategy != pb.UpdateStrategy_UPDATE_STRATEGY_UNSPECIFIED || !s.Finalize ||
		s.ResyncPeriod.AsDuration() != 30*time.Second || s.ShutdownHook.Service != "{name}-app" ||
		s.ShutdownHook.Port != 8080 || s.ShutdownHook.FailureStrategy != pb.ShutdownFailureStrategy_SHUTDOWN_FAILURE_STRATEGY_DELETE {
		t.Errorf("sync: %v", s)
	}
	task := m.Tasks[0]
	if task.Id != "repair" || task.Mode != pb.TaskMode_TASK_MODE_SEQUENTIAL || task.Priority != 5 ||
		task.ParentField != "spec.widget" || task.Parent.Name != "widgets" || task.Retention.AsDuration() != time.Hour ||
		task.Timeout.AsDuration() != time.Minute {
		t.Errorf("task: %v", task)
	}
	// Deterministic: the same registrations give the same bytes.
	again, _ := app.build()
	if protojson.Format(again.manifest) != protojson.Format(m) {
		t.Error("the manifest is not deterministic")
	}
}

func TestRegistrationMistakesAreAllReported(t *testing.T) {
	noop := func(context.Context, *Ctx) (any, error) { return nil, nil }
	_, err := New("x").
		OnCreate(widgets, noop, Optional(), OldValue(Present())).
		OnCreate(widgets, noop).
		OnCreate(widgets, noop).
		OnUpdateField(widgets, "", noop).
		OnUpdateField(widgets, "spec.a", noop, Field("spec.b")).
		OnEvent(widgets, noop, Retries(2)).
		Timer(widgets, 0, noop).
		OnDelete(GVR{}, nil).
		OnCreate(widgets, noop, ID("f"), Label("a", Filter{}), Annotation("n", Equals(1))).
		Sync(widgets, render, Owns(configMaps), Owns(configMaps), Retries(1),
			ShutdownHook(Hook{Service: "s"})).
		Sync(widgets, render).
		Task(repairs, GVR{}, "", repair, Backoff(time.Second)).
		OnCreate(widgets, noop, ID("g"), Backoff(-time.Second)).
		OnValidate(widgets, noop, ID("v"), Retries(1), Operations("CREATE", "PATCH")).
		OnCreate(widgets, noop, ID("h"), IgnoreFailures()).
		build()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		`OnCreate(e2e.operon.dev/v1/widgets) "create-widgets": the option Optional does not apply to create registrations`,
		"the option OldValue does not apply to create registrations",
		`another create handler of e2e.operon.dev/v1/widgets has the id "create-widgets"`,
		"OnUpdateField(e2e.operon.dev/v1/widgets) \"update-widgets\": the field is empty",
		"the option Field does not apply to update registrations",
		"the option Retries does not apply to event registrations",
		"the interval must be positive",
		"the resource is empty",
		"the function is nil",
		"a filter is the zero Filter",
		`Annotation("n"): the value must be a string`,
		"Owns(v1/configmaps) is given twice",
		"the option Retries does not apply to sync registrations",
		"ShutdownHook's Service needs a Port",
		`another sync has the id "render"`,
		"the parent resource is empty",
		"the parent field is empty",
		"the option Backoff does not apply to task registrations",
		"Backoff must not be negative",
		`OnValidate(e2e.operon.dev/v1/widgets) "v": the option Retries does not apply to validate registrations`,
		`Operations: unknown operation "PATCH"`,
		"the option IgnoreFailures does not apply to create registrations",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
	if _, err := New("").build(); err == nil || !strings.Contains(err.Error(), "the service name is empty") {
		t.Errorf("an empty name: %v", err)
	}
	if _, err := New("x").OnCreate(widgets, noop, Value(Equals(1))).build(); err == nil ||
		!strings.Contains(err.Error(), "need a field") {
		t.Errorf("a value without a field: %v", err)
	}
}

func TestOneIDServesSeveralKindsAndResources(t *testing.T) {
	gadgets := GVR{Group: "e2e.operon.dev", Version: "v1", Resource: "gadgets"}
	b, err := New("x").OnCreate(widgets, reconcile).OnUpdate(widgets, reconcile).
		OnCreate(gadgets, reconcile).Daemon(widgets, watch, ID("reconcile")).
		OnValidate(widgets, reconcile).build()
	if err != nil {
		t.Fatal(err)
	}
	res := func(r GVR) *pb.ResolvedResource {
		return &pb.ResolvedResource{Group: r.Group, Version: r.Version, Plural: r.Resource}
	}
	if r := b.find("reconcile", res(widgets), pb.Reason_REASON_UPDATE, callInvoke); r == nil || r.kind != kindUpdate {
		t.Errorf("update: %+v", r)
	}
	if r := b.find("reconcile", res(gadgets), pb.Reason_REASON_CREATE, callInvoke); r == nil || r.resource != gadgets {
		t.Errorf("gadgets: %+v", r)
	}
	if r := b.find("reconcile", res(widgets), pb.Reason_REASON_UNSPECIFIED, callDaemon); r == nil || r.kind != kindDaemon {
		t.Errorf("daemon: %+v", r)
	}
	if r := b.find("reconcile", res(widgets), pb.Reason_REASON_UNSPECIFIED, callAdmission); r == nil || r.kind != kindValidate {
		t.Errorf("admission: %+v", r)
	}
	if r := b.find("nope", nil, pb.Reason_REASON_CREATE, callInvoke); r != nil {
		t.Errorf("unknown: %+v", r)
	}
}

func TestUpdateStrategiesByName(t *testing.T) {
	for s := UpdateOnDelete; s <= UpdateRollingInPlace; s++ {
		text, err := s.MarshalText()
		var back UpdateStrategy
		if err != nil || back.UnmarshalText(text) != nil || back != s {
			t.Errorf("%v: %q %v → %v", s, text, err, back)
		}
	}
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var s UpdateStrategy
	fs.TextVar(&s, "strategy", UpdateInPlace, "")
	if err := fs.Parse(nil); err != nil || s != UpdateInPlace {
		t.Errorf("the default: %v %v", s, err)
	}
	if err := fs.Parse([]string{"--strategy", "RollingRecreate"}); err != nil || s != UpdateRollingRecreate {
		t.Errorf("RollingRecreate: %v %v", s, err)
	}
	if err := fs.Parse([]string{"--strategy", "inplace"}); err == nil || !strings.Contains(err.Error(), "InPlace") {
		t.Errorf("an unknown name: %v", err)
	}
	if _, err := UpdateStrategy(0).MarshalText(); err == nil || UpdateStrategy(0).String() != "UpdateStrategy(0)" {
		t.Error("the zero strategy has a name")
	}
}
