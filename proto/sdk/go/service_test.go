package operon

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"go.opentelemetry.io/otel/trace"

	pb "example.invalid/operon/sdk/go/gen/operonv1"
)

// served is an App served over an in-memory connection.
type served struct {
	conn    *grpc.ClientConn
	ledger  string
	stop    context.CancelFunc
	stopped chan error
}

func (s *served) handlers() pb.HandlerServiceClient { return pb.NewHandlerServiceClient(s.conn) }

func (s *served) ledgerLines(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile(s.ledger)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(raw)), "\n")
}

// serveTest serves app (through the same serve as Serve) on an in-memory listener.
func serveTest(t *testing.T, app *App) *served {
	t.Helper()
	b, err := app.build()
	if err != nil {
		t.Fatal(err)
	}
	app.Logger(slog.New(slog.NewTextHandler(io.Discard, nil)))
	dir := t.TempDir()
	app.cfg = &config{ledger: filepath.Join(dir, "ledger.jsonl"), grace: 2 * time.Second}
	lis := bufconn.Listen(1 << 20)
	ctx, cancel := context.WithCancel(context.Background())
	s := &served{ledger: app.cfg.ledger, stop: cancel, stopped: make(chan error, 1)}
	go func() { s.stopped <- app.serve(ctx, b, lis, nil, nil) }()
	s.conn, err = grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = s.conn.Close()
		<-s.stopped
	})
	return s
}

// call is a context for one call: a deadline, as the core gives every call.
func call(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

const body = `{"apiVersion":"e2e.operon.dev/v1","kind":"Widget","metadata":{"name":"w1","namespace":"ns","uid":"u1","generation":2},"spec":{"size":3,"html":"<p>flaky</p>"}}`

func invoke(id string, retry uint32, attempt string) *pb.InvokeRequest {
	return &pb.InvokeRequest{
		HandlerId: id, Reason: pb.Reason_REASON_UPDATE, BodyJson: []byte(body), Retry: retry, AttemptId: attempt,
		OldJson: []byte(`{"spec":{"size":2}}`), NewJson: []byte(`{"spec":{"size":3}}`),
		DiffJson: []byte(`[["change",["spec","size"],2,3]]`),
		Resource: &pb.ResolvedResource{Group: "e2e.operon.dev", Version: "v1", Plural: "widgets", Kind: "Widget", Namespaced: true},
	}
}

func TestDescribeRefusesAnOlderCore(t *testing.T) {
	s := serveTest(t, New("svc").OnCreate(widgets, reconcile))
	m, err := s.handlers().Describe(call(t), &pb.DescribeRequest{CoreVersion: "9", ContractRevision: ContractRevision})
	if err != nil || m.ServiceName != "svc" || len(m.Handlers) != 1 {
		t.Fatalf("describe: %v %v", m, err)
	}
	_, err = s.handlers().Describe(call(t), &pb.DescribeRequest{CoreVersion: "0.0.1", ContractRevision: 0})
	if status.Code(err) != codes.FailedPrecondition ||
		!strings.Contains(err.Error(), "needs handler contract revision 1 or newer, and the core (version \"0.0.1\") speaks revision 0") {
		t.Errorf("an older core: %v", err)
	}
}

func TestInvokeOutcomes(t *testing.T) {
	var seenTrace trace.SpanContext
	app := New("svc").
		OnUpdate(widgets, func(ctx context.Context, c *Ctx) (any, error) {
			seenTrace = trace.SpanContextFromContext(ctx)
			if c.Retry() == 0 && strings.Contains(c.Object.String("spec.html"), "flaky") {
				return nil, Temporary("flaky once", 2*time.Second)
			}
			c.Patch(map[string]any{"metadata": map[string]any{"labels": map[string]any{"seen": "yes"}}})
			c.Patch(map[string]any{"metadata": map[string]any{"labels": map[string]any{"size": "3"}}})
			c.Event(EventNormal, "Checked", "all good")
			size, _ := c.New.(map[string]any)["spec"].(map[string]any)["size"]
			return map[string]any{"size": size, "changed": c.Diff.Changed("spec.size"), "reason": c.Reason}, nil
		}, ID("flaky")).
		OnUpdate(widgets, func(context.Context, *Ctx) (any, error) { return nil, Permanent("no") }, ID("permanent")).
		OnUpdate(widgets, func(context.Context, *Ctx) (any, error) { return nil, errors.New("plain") }, ID("arbitrary")).
		OnUpdate(widgets, func(context.Context, *Ctx) (any, error) { panic("boom") }, ID("panics"))
	s := serveTest(t, app)
	h := s.handlers()
	traceparent := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	ctx := metadata.AppendToOutgoingContext(call(t), "traceparent", traceparent)

	first, err := h.Invoke(ctx, invoke("flaky", 0, "a0"))
	if err != nil {
		t.Fatal(err)
	}
	if te := first.Outcome.GetTemporaryError(); te == nil || te.Message != "flaky once" || te.Delay.AsDuration() != 2*time.Second {
		t.Errorf("first attempt: %v", first)
	}
	if first.PatchJson != nil {
		t.Errorf("no patch was made: %s", first.PatchJson)
	}
	if seenTrace.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("the handler's ctx does not continue the core's trace: %v", seenTrace.TraceID())
	}
	second, err := h.Invoke(ctx, invoke("flaky", 1, "a1"))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(second.Outcome.GetSuccess().GetResultJson()); got != `{"changed":true,"reason":"update","size":3}` {
		t.Errorf("result: %s", got)
	}
	if got := string(second.PatchJson); got != `{"metadata":{"labels":{"seen":"yes","size":"3"}}}` {
		t.Errorf("patch: %s", got)
	}
	if len(second.Events) != 1 || second.Events[0].Reason != "Checked" || second.Events[0].Type != "Normal" {
		t.Errorf("events: %v", second.Events)
	}
	if r, _ := h.Invoke(ctx, invoke("permanent", 0, "")); r.Outcome.GetPermanentError().GetMessage() != "no" {
		t.Errorf("permanent: %v", r)
	}
	if r, _ := h.Invoke(ctx, invoke("arbitrary", 0, "")); r.Outcome.GetArbitraryError().GetErrorType() != "*errors.errorString" {
		t.Errorf("arbitrary: %v", r)
	}
	if r, _ := h.Invoke(ctx, invoke("panics", 0, "")); r.Outcome.GetArbitraryError().GetMessage() != "panic: boom" {
		t.Errorf("panic: %v", r)
	}
	if _, err := h.Invoke(ctx, invoke("nope", 0, "")); status.Code(err) != codes.NotFound {
		t.Errorf("unknown handler: %v", err)
	}
	bad := invoke("flaky", 0, "")
	bad.BodyJson = []byte(`[]`)
	if _, err := h.Invoke(ctx, bad); status.Code(err) != codes.InvalidArgument {
		t.Errorf("a body that is not an object: %v", err)
	}
	lines := s.ledgerLines(t)
	if len(lines) != 5 || !strings.Contains(lines[0], `"outcome":"temporary"`) || !strings.Contains(lines[1], `"outcome":"success"`) ||
		!strings.Contains(lines[1], `"retry":1`) || !strings.Contains(lines[1], `"attempt_id":"a1"`) ||
		!strings.Contains(lines[1], `"name":"w1"`) || !strings.Contains(lines[1], `"reason":"update"`) {
		t.Errorf("ledger:\n%s", strings.Join(lines, "\n"))
	}
}

func TestARepeatedAttemptIsAnsweredWithoutRunningAgain(t *testing.T) {
	var runs atomic.Int32
	release := make(chan struct{})
	s := serveTest(t, New("svc").OnUpdate(widgets, func(context.Context, *Ctx) (any, error) {
		<-release
		return map[string]any{"run": runs.Add(1)}, nil
	}, ID("once")))
	h := s.handlers()
	answers := make(chan string, 2)
	for range 2 { // the second arrives while the first runs, and waits for its answer
		go func() {
			r, err := h.Invoke(call(t), invoke("once", 0, "same"))
			if err != nil {
				answers <- err.Error()
				return
			}
			answers <- string(r.Outcome.GetSuccess().ResultJson)
		}()
	}
	time.Sleep(100 * time.Millisecond)
	close(release)
	for range 2 {
		if got := <-answers; got != `{"run":1}` {
			t.Errorf("answer: %s", got)
		}
	}
	r, _ := h.Invoke(call(t), invoke("once", 0, "same"))
	if string(r.Outcome.GetSuccess().ResultJson) != `{"run":1}` || runs.Load() != 1 {
		t.Errorf("replayed %v after %d runs", r, runs.Load())
	}
	r, _ = h.Invoke(call(t), invoke("once", 1, "other"))
	if string(r.Outcome.GetSuccess().ResultJson) != `{"run":2}` {
		t.Errorf("another attempt runs: %v", r)
	}
	if lines := s.ledgerLines(t); len(lines) != 2 {
		t.Errorf("a replay is not a run: %v", lines)
	}
}

func TestWhenFilters(t *testing.T) {
	var ran atomic.Bool
	small := func(c *Ctx) bool { n, _ := c.Object.Int("spec.size"); return n < 3 }
	s := serveTest(t, New("svc").
		OnUpdate(widgets, func(context.Context, *Ctx) (any, error) { ran.Store(true); return nil, nil }, ID("small"), When(small)).
		OnUpdate(widgets, reconcile, ID("plain")).
		OnUpdate(widgets, reconcile, ID("broken"), When(func(*Ctx) bool { panic("bad filter") })))
	h := s.handlers()
	if m, err := h.Match(call(t), invoke("small", 0, "")); err != nil || m.Matched {
		t.Errorf("Match: %v %v", m, err)
	}
	if m, err := h.Match(call(t), invoke("plain", 0, "")); err != nil || !m.Matched {
		t.Errorf("Match without a When: %v %v", m, err)
	}
	if _, err := h.Match(call(t), invoke("broken", 0, "")); status.Code(err) != codes.Internal {
		t.Errorf("a panicking filter: %v", err)
	}
	r, err := h.Invoke(call(t), invoke("small", 0, ""))
	if err != nil || r.Outcome.GetNotMatched() == nil || ran.Load() {
		t.Errorf("Invoke: %v %v (ran: %v)", r, err, ran.Load())
	}
}

func TestDaemon(t *testing.T) {
	seen := make(chan string, 10)
	s := serveTest(t, New("svc").
		Daemon(widgets, func(ctx context.Context, d *DaemonCtx) error {
			seen <- d.Object().String("spec.html")
			if d.Retry() == 0 {
				return Temporary("not yet", time.Second)
			}
			if err := d.Patch(map[string]any{"status": map[string]any{"watching": true}}); err != nil {
				return err
			}
			changed := d.Changed()
			select {
			case <-changed:
				seen <- d.Object().String("spec.html")
			case <-ctx.Done():
			}
			_ = d.Event(EventNormal, "Seen", "a change")
			for d.Sleep(ctx, time.Hour) {
			}
			seen <- string(d.StopReason())
			return nil
		}, ID("watch")).
		Daemon(widgets, watch, ID("filtered"), When(func(*Ctx) bool { return false })).
		Daemon(widgets, func(ctx context.Context, d *DaemonCtx) error {
			<-ctx.Done() // ignores the graceful stop; only the forced one ends it
			seen <- "forced"
			return ctx.Err()
		}, ID("stubborn")))
	h := s.handlers()
	start := func(id string, retry uint32) pb.HandlerService_DaemonClient {
		stream, err := h.Daemon(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Header(); err != nil {
			t.Fatal(err)
		}
		err = stream.Send(&pb.DaemonRequest{Message: &pb.DaemonRequest_Start{Start: &pb.DaemonStart{
			HandlerId: id, BodyJson: []byte(body), Retry: retry, AttemptId: "d",
			Resource: &pb.ResolvedResource{Group: "e2e.operon.dev", Version: "v1", Plural: "widgets"},
		}}})
		if err != nil {
			t.Fatal(err)
		}
		return stream
	}
	recv := func(stream pb.HandlerService_DaemonClient) *pb.DaemonResponse {
		m, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return m
	}

	failing := start("watch", 0)
	if exit := recv(failing).Exit; exit.GetTemporaryError().GetMessage() != "not yet" {
		t.Errorf("exit: %v", exit)
	}
	<-seen

	stream := start("watch", 1)
	if got := <-seen; got != "<p>flaky</p>" {
		t.Errorf("first body: %s", got)
	}
	if m := recv(stream); string(m.PatchJson) != `{"status":{"watching":true}}` {
		t.Errorf("patch: %v", m)
	}
	newer := strings.Replace(body, "flaky", "fresh", 1)
	_ = stream.Send(&pb.DaemonRequest{Message: &pb.DaemonRequest_BodyJson{BodyJson: []byte(newer)}})
	if got := <-seen; got != "<p>fresh</p>" {
		t.Errorf("the daemon did not see the new body: %s", got)
	}
	if m := recv(stream); len(m.Events) != 1 || m.Events[0].Reason != "Seen" {
		t.Errorf("event: %v", m)
	}
	_ = stream.Send(&pb.DaemonRequest{Message: &pb.DaemonRequest_Stop{Stop: &pb.DaemonStop{
		Reason: pb.DaemonStopReason_DAEMON_STOP_REASON_RESOURCE_DELETED}}})
	if got := <-seen; got != "resource_deleted" {
		t.Errorf("stop reason: %s", got)
	}
	if exit := recv(stream).Exit; exit.GetSuccess() == nil {
		t.Errorf("a graceful stop exits with success: %v", exit)
	}
	if _, err := stream.Recv(); err != io.EOF {
		t.Errorf("the call must end after the exit: %v", err)
	}

	if exit := recv(start("filtered", 0)).Exit; exit.GetNotMatched() == nil {
		t.Errorf("When: %v", exit)
	}

	stubborn := start("stubborn", 0)
	_ = stubborn.Send(&pb.DaemonRequest{Message: &pb.DaemonRequest_Stop{Stop: &pb.DaemonStop{Force: false}}})
	time.Sleep(50 * time.Millisecond)
	select {
	case got := <-seen:
		t.Fatalf("a graceful stop cancelled the daemon: %s", got)
	default:
	}
	_ = stubborn.Send(&pb.DaemonRequest{Message: &pb.DaemonRequest_Stop{Stop: &pb.DaemonStop{Force: true}}})
	if got := <-seen; got != "forced" {
		t.Errorf("forced: %s", got)
	}
	if exit := recv(stubborn).Exit; exit.GetSuccess() == nil {
		t.Errorf("a forced stop that the daemon obeys: %v", exit)
	}

	// When the service shuts down, a running daemon's ctx is cancelled and the call ends with
	// no exit (the core restarts it elsewhere).
	last := start("stubborn", 0)
	time.Sleep(50 * time.Millisecond)
	s.stop()
	if got := <-seen; got != "forced" {
		t.Errorf("shutdown: %s", got)
	}
	if m, err := last.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("the call must end without an exit: %v %v", m, err)
	}
	if err := <-s.stopped; err != nil {
		t.Errorf("serve: %v", err)
	}
	s.stopped <- nil
}

func TestSyncAndFinalize(t *testing.T) {
	services := GVR{Version: "v1", Resource: "services"}
	s := serveTest(t, New("svc").Sync(widgets, func(_ context.Context, s *SyncCtx) (SyncResult, error) {
		if s.Parent.Bool("spec.fail") {
			return SyncResult{}, errors.New("cannot")
		}
		if s.Parent.Bool("spec.quiet") {
			return SyncResult{}, errors.New("")
		}
		name := s.Parent.Name()
		return SyncResult{
			Status: map[string]any{"configmaps": len(s.Children(configMaps)), "services": len(s.Children(services)),
				"all": len(s.AllChildren())},
			Children:    []any{map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": name}}},
			ResyncAfter: time.Minute,
		}, nil
	}, ID("site"), Owns(configMaps, UpdateInPlace), Owns(services), Finalize(func(_ context.Context, s *SyncCtx) (FinalizeResult, error) {
		return FinalizeResult{Status: map[string]any{"finalizing": s.Finalizing}, Finalized: false, RetryAfter: time.Second}, nil
	})))
	client := pb.NewSyncServiceClient(s.conn)
	req := &pb.SyncRequest{SyncId: "site", ParentJson: []byte(body), Children: []*pb.ChildGroup{
		{ApiVersion: "v1", Kind: "ConfigMap", ObjectsJson: [][]byte{[]byte(`{"metadata":{"name":"a"}}`), []byte(`{"metadata":{"name":"b"}}`)}},
		{ApiVersion: "v1", Kind: "Service"},
	}}
	r, err := client.Sync(call(t), req)
	if err != nil {
		t.Fatal(err)
	}
	if string(r.StatusJson) != `{"all":2,"configmaps":2,"services":0}` || len(r.ChildrenJson) != 1 ||
		string(r.ChildrenJson[0]) != `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"w1"}}` ||
		r.ResyncAfter.AsDuration() != time.Minute || r.Error != "" {
		t.Errorf("sync: %v", r)
	}
	req.ParentJson = []byte(`{"metadata":{"name":"x"},"spec":{"fail":true}}`)
	if r, _ := client.Sync(call(t), req); r.Error != "cannot" || r.StatusJson != nil {
		t.Errorf("a failed sync: %v", r)
	}
	quiet := &pb.SyncRequest{SyncId: "site", ParentJson: []byte(`{"metadata":{"name":"q"},"spec":{"quiet":true}}`)}
	if r, _ := client.Sync(call(t), quiet); r.Error != "an error without a message (*errors.errorString)" {
		t.Errorf("an error without a message must not read as success: %v", r)
	}
	f, err := client.Finalize(call(t), req)
	if err != nil || f.Finalized || string(f.StatusJson) != `{"finalizing":true}` || f.ResyncAfter.AsDuration() != time.Second {
		t.Errorf("finalize: %v %v", f, err)
	}
	if _, err := client.Sync(call(t), &pb.SyncRequest{SyncId: "nope"}); status.Code(err) != codes.NotFound {
		t.Errorf("unknown sync: %v", err)
	}
	// The ledger: the sync's id, the call, and how it ended (a finalize that is not finalized yet
	// holds the finalizer).
	lines := s.ledgerLines(t)
	for i, want := range [][]string{
		{`"handler":"site"`, `"reason":"sync"`, `"outcome":"success"`, `"name":"w1"`},
		{`"handler":"site"`, `"reason":"sync"`, `"outcome":"error"`, `"name":"x"`},
		{`"handler":"site"`, `"reason":"sync"`, `"outcome":"error"`, `"name":"q"`},
		{`"handler":"site"`, `"reason":"finalize"`, `"outcome":"held"`, `"name":"x"`},
	} {
		for _, part := range want {
			if len(lines) != 4 || !strings.Contains(lines[i], part) {
				t.Fatalf("ledger line %d without %s:\n%s", i, part, strings.Join(lines, "\n"))
			}
		}
	}
}

func TestAdmissionHandlers(t *testing.T) {
	s := serveTest(t, New("svc").
		OnValidate(widgets, func(_ context.Context, c *Ctx) (any, error) {
			c.Warn("checked by " + c.Admission.Operation + " " + c.Admission.UserInfo.String("username"))
			switch c.Object.String("spec.field") {
			case "not-allowed":
				return nil, Deny("spec.field may not be \"not-allowed\"", 422)
			case "broken":
				return nil, errors.New("cannot check")
			}
			return nil, nil
		}, ID("check"), Operations("CREATE")).
		OnMutate(widgets, func(_ context.Context, c *Ctx) (any, error) {
			if !c.Admission.DryRun && c.Old == nil && c.Admission.Headers["user-agent"] == "kube-apiserver" {
				c.Patch(map[string]any{"spec": map[string]any{"injected": 123}})
			}
			return nil, nil
		}, ID("inject"), When(func(c *Ctx) bool { return c.Object.String("spec.field") != "skip" })).
		OnCreate(widgets, reconcile, ID("check")))
	h := s.handlers()
	review := func(id, field string) *pb.InvokeRequest {
		object := `{"metadata":{"name":"w1","namespace":"ns"},"spec":{"field":"` + field + `"}}`
		return &pb.InvokeRequest{HandlerId: id, BodyJson: []byte(object), NewJson: []byte(object),
			Admission: &pb.AdmissionCall{
				RequestJson: []byte(`{"uid":"r1","operation":"CREATE","userInfo":{"username":"ann"},"object":` + object + `}`),
				Headers:     map[string]string{"user-agent": "kube-apiserver"},
			}}
	}
	r, err := h.Invoke(call(t), review("check", "not-allowed"))
	if err != nil || r.Outcome.GetPermanentError().GetMessage() != `spec.field may not be "not-allowed"` ||
		r.GetAdmissionCode() != 422 || strings.Join(r.Warnings, ";") != "checked by CREATE ann" {
		t.Errorf("a denial: %v %v", r, err)
	}
	if r, _ := h.Invoke(call(t), review("check", "broken")); r.Outcome.GetArbitraryError() == nil || r.AdmissionCode != nil {
		t.Errorf("an error denies without a code of its own (the core's 500): %v", r)
	}
	if r, _ := h.Invoke(call(t), review("check", "fine")); r.Outcome.GetSuccess() == nil || r.AdmissionCode != nil || len(r.Warnings) != 1 {
		t.Errorf("allowed: %v", r)
	}
	if r, _ := h.Invoke(call(t), review("inject", "fine")); string(r.PatchJson) != `{"spec":{"injected":123}}` {
		t.Errorf("a mutation: %v", r)
	}
	if r, _ := h.Invoke(call(t), review("inject", "skip")); r.Outcome.GetNotMatched() == nil || r.PatchJson != nil {
		t.Errorf("a When filter: %v", r)
	}
	// The same id for a change handler and an admission handler: each call reaches its own.
	if r, _ := h.Invoke(call(t), invoke("check", 0, "")); r.Outcome.GetSuccess() == nil || r.Warnings != nil {
		t.Errorf("the create handler check: %v", r)
	}
	if _, err := h.Invoke(call(t), review("reconcile", "fine")); status.Code(err) != codes.NotFound {
		t.Errorf("no such admission handler: %v", err)
	}
	lines := s.ledgerLines(t)
	outcomes := []string{"denied", "denied", "allowed", "allowed", "not_matched", "success"}
	for i, want := range outcomes {
		if i >= len(lines) || !strings.Contains(lines[i], `"outcome":"`+want+`"`) {
			t.Fatalf("ledger line %d is not %s:\n%s", i, want, strings.Join(lines, "\n"))
		}
	}
	if !strings.Contains(lines[0], `"reason":"admission"`) || !strings.Contains(lines[5], `"reason":"update"`) {
		t.Errorf("ledger reasons:\n%s", strings.Join(lines, "\n"))
	}
}

func TestTasks(t *testing.T) {
	var ran []string
	s := serveTest(t, New("svc").Task(repairs, widgets, "spec.widget", func(ctx context.Context, task *TaskCtx) (string, error) {
		for _, name := range []string{"drain", "repair", "undrain"} {
			result, err := task.Step(ctx, name, func(context.Context) (any, error) {
				ran = append(ran, name)
				if name == "repair" && task.Task.Bool("spec.break") {
					return nil, errors.New("disk full")
				}
				return map[string]any{"step": name}, nil
			})
			if err != nil {
				return "", err
			}
			_ = result
		}
		return "repaired " + task.Parent.Name(), nil
	}, ID("repair"), Sequential()))
	client := pb.NewTaskServiceClient(s.conn)
	collect := func(req *pb.TaskRequest) []*pb.TaskUpdate {
		stream, err := client.RunTask(call(t), req)
		if err != nil {
			t.Fatal(err)
		}
		var out []*pb.TaskUpdate
		for {
			u, err := stream.Recv()
			if err == io.EOF {
				return out
			}
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, u)
		}
	}
	updates := collect(&pb.TaskRequest{TaskId: "repair", TaskJson: []byte(`{"metadata":{"name":"t1"}}`),
		ParentJson: []byte(body), ResumeFrom: 1, DoneSteps: []*pb.StepResult{{Index: 0, Name: "drain", Ok: true}}})
	if strings.Join(ran, ",") != "repair,undrain" || len(updates) != 3 ||
		updates[0].GetStep().Index != 1 || updates[0].GetStep().Name != "repair" ||
		string(updates[0].GetStep().ResultJson) != `{"step":"repair"}` || updates[1].GetStep().Index != 2 ||
		!updates[2].GetFinished().Ok || updates[2].GetFinished().Message != "repaired w1" {
		t.Errorf("resumed run: ran %v, updates %v", ran, updates)
	}
	ran = nil
	updates = collect(&pb.TaskRequest{TaskId: "repair", TaskJson: []byte(`{"metadata":{"name":"t2"},"spec":{"break":true}}`),
		ParentJson: []byte(body)})
	if strings.Join(ran, ",") != "drain,repair" || len(updates) != 3 || updates[1].GetStep().Ok ||
		updates[1].GetStep().Message != "disk full" || updates[2].GetFinished().Ok || updates[2].GetFinished().Message != "disk full" {
		t.Errorf("failed run: ran %v, updates %v", ran, updates)
	}
}

func TestHealthAndReflection(t *testing.T) {
	s := serveTest(t, New("svc").OnCreate(widgets, reconcile).Sync(widgets, render))
	health := healthpb.NewHealthClient(s.conn)
	for _, service := range []string{"", "operon.v1.HandlerService", "operon.v1.SyncService"} {
		r, err := health.Check(call(t), &healthpb.HealthCheckRequest{Service: service})
		if err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health of %q: %v %v", service, r, err)
		}
	}
	if _, err := health.Check(call(t), &healthpb.HealthCheckRequest{Service: "operon.v1.TaskService"}); status.Code(err) != codes.NotFound {
		t.Errorf("a service not served: %v", err)
	}
	watch, err := health.Watch(t.Context(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := watch.Recv(); err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("watch: %v %v", r, err)
	}

	refl, err := reflectionpb.NewServerReflectionClient(s.conn).ServerReflectionInfo(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	_ = refl.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
	r, err := refl.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, svc := range r.GetListServicesResponse().GetService() {
		names = append(names, svc.Name)
	}
	if got := strings.Join(names, ","); !strings.Contains(got, "operon.v1.HandlerService") ||
		!strings.Contains(got, "operon.v1.SyncService") || !strings.Contains(got, "grpc.health.v1.Health") {
		t.Errorf("reflection lists %s", got)
	}
	_ = refl.CloseSend()

	// Draining: the health service says NOT_SERVING to its watchers, then the server stops.
	s.stop()
	if r, err := watch.Recv(); err != nil || r.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("while draining: %v %v", r, err)
	}
	if err := <-s.stopped; err != nil {
		t.Errorf("serve: %v", err)
	}
	s.stopped <- nil
}
