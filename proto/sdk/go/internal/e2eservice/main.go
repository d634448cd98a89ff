// Command e2eservice serves one handler of every kind the SDK has that the go-website example
// does not use, for the end-to-end test tests/tests/sdk_go.rs on the real plane (resource
// widgets.e2e.operon.dev; task type gotasks.sdk.operon.dev). What each does, and what the test
// checks:
//   - daemon "watcher" (objects labelled daemon=yes): every 0.3 s, patches status.watcher with
//     its tick count and the spec.value it sees now; exits when asked to stop;
//   - timer "ticker" (labelled timer=yes, every second): its result {seen: spec.value} goes to
//     status.ticker;
//   - create handler "created", with a When filter: not for objects with spec.skip = true;
//     its result {value: spec.value} goes to status.created;
//   - task type "steps" (GoTask, parent a Widget named by spec.widget): two steps, then the
//     message "2 steps for <parent>".
package main

import (
	"context"
	"log"
	"time"

	operon "example.invalid/operon/sdk/go"
)

var (
	widgets = operon.GVR{Group: "e2e.operon.dev", Version: "v1", Resource: "widgets"}
	tasks   = operon.GVR{Group: "sdk.operon.dev", Version: "v1", Resource: "gotasks"}
)

func watcher(ctx context.Context, d *operon.DaemonCtx) error {
	for ticks := 1; d.Sleep(ctx, 300*time.Millisecond); ticks++ {
		seen := d.Object().String("spec.value")
		if err := d.Patch(map[string]any{"status": map[string]any{"watcher": map[string]any{
			"ticks": ticks, "seen": seen, "retry": d.Retry(),
		}}}); err != nil {
			return err
		}
	}
	return nil
}

func ticker(_ context.Context, c *operon.Ctx) (any, error) {
	return map[string]any{"seen": c.Object.String("spec.value")}, nil
}

func created(_ context.Context, c *operon.Ctx) (any, error) {
	return map[string]any{"value": c.Object.String("spec.value")}, nil
}

func steps(ctx context.Context, t *operon.TaskCtx) (string, error) {
	for _, name := range []string{"first", "second"} {
		if _, err := t.Step(ctx, name, func(context.Context) (any, error) {
			return map[string]any{"step": name}, nil
		}); err != nil {
			return "", err
		}
	}
	return "2 steps for " + t.Parent.Name(), nil
}

func main() {
	err := operon.New("sdk-go-e2e").
		Daemon(widgets, watcher, operon.Label("daemon", operon.Equals("yes"))).
		Timer(widgets, time.Second, ticker, operon.Label("timer", operon.Equals("yes"))).
		OnCreate(widgets, created, operon.When(func(c *operon.Ctx) bool { return !c.Object.Bool("spec.skip") })).
		Task(tasks, widgets, "spec.widget", steps).
		Serve(context.Background())
	if err != nil {
		log.Fatal(err)
	}
}
