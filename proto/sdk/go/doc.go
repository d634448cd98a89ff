// Package operon writes Operon handler services in Go: register handlers on an [App], then
// [App.Serve] them; the Operon core (`operon run --handler http://ADDR`) watches the objects,
// decides what runs, stores progress on the objects, retries, holds finalizers and applies
// children, and calls this service over gRPC (the contract in proto/operon/v1).
//
//	gowebsites := operon.GVR{Group: "sdk.operon.dev", Version: "v1", Resource: "gowebsites"}
//	err := operon.New("websites").
//		OnCreate(gowebsites, check, operon.Retries(5)).
//		Sync(gowebsites, render, operon.Owns(configMaps, operon.UpdateInPlace)).
//		Serve(ctx)
//
// Where to start:
//   - app.go: [New], [GVR] and the registration methods (OnCreate, OnUpdate, OnUpdateField,
//     OnField, OnDelete, OnResume, OnEvent, Timer, Daemon, Sync, Task, OnValidate, OnMutate).
//   - options.go: the options of registrations ([ID], [Retries], [Backoff], [Timeout],
//     [Errors], filters: [Labels], [Field], [Value], [When], …).
//   - ctx.go and object.go: what a handler gets ([Ctx], [Object], [Diff]); errors.go: what it
//     answers ([Temporary], [Permanent], [Deny]).
//   - daemon.go, sync.go, tasks.go: [DaemonFunc], [SyncFunc], [TaskFunc] and their contexts.
//   - server.go: flags, TLS, health (also alone, in plaintext, with --health-listen),
//     reflection, the graceful stop; service.go: the gRPC edge
//     (Describe, Invoke, Match); answers.go: the attempt cache; telemetry.go: traces; ledger.go.
//
// The generated bindings of the contract are in the package gen/operonv1 of this module.
package operon
