// Command operon-sync-example-go is the example sync operator, and a few scripted change and
// admission handlers, as an Operon handler service written with the Go SDK (proto/sdk/go).
//
// The sync operator (declared unless --handler is given without --parent): a parent (by default
// sites.e2e.operon.dev) owns, for every entry of spec.entries ({name, port, data}), a ConfigMap
// and a Service named <prefix>-<entry name> (prefix: spec.prefix, else the parent's name). The
// status counts the desired and the current children. It behaves exactly like the Rust example
// (proto/examples/rust-sync); the end-to-end tests drive both. Test knobs in the parent's spec:
// fail (answer this error), childNamespace (put the children there), childStatus (give the
// children a status), nullStatus (leave the status alone), holdFinalize (Finalize answers "not
// yet"). The handlers (--resource, --handler): see handlers.go. The SDK serves them: --listen,
// --ledger, TLS, traces, the graceful stop.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"time"

	operon "example.invalid/operon/sdk/go"
)

var (
	configMaps = operon.GVR{Version: "v1", Resource: "configmaps"}
	services   = operon.GVR{Version: "v1", Resource: "services"}
)

// desired is a pure function of the parent and the number of its current children: the status
// and the desired children.
func desired(parent operon.Object, current int) (status any, children []any) {
	prefix, ok := text(parent, "spec.prefix")
	if !ok {
		prefix = parent.Name()
	}
	entries, _ := parent.Get("spec.entries")
	list, _ := entries.([]any)
	children = []any{}
	for _, raw := range list {
		entry, _ := raw.(map[string]any)
		e := operon.Object(entry)
		entryName, ok := text(e, "name")
		if !ok {
			entryName = "entry"
		}
		child := prefix + "-" + entryName
		port, ok := e.Int("port")
		if !ok {
			port = 80
		}
		metadata := map[string]any{"name": child, "labels": map[string]any{"app.kubernetes.io/name": child}}
		if ns, ok := text(parent, "spec.childNamespace"); ok {
			metadata["namespace"] = ns
		}
		data := map[string]any{"port": fmt.Sprint(port)}
		for k, v := range e.Map("data") {
			if s, ok := v.(string); ok {
				data[k] = s
			} else {
				b, _ := json.Marshal(v)
				data[k] = string(b)
			}
		}
		cm := map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}
		if parent.Bool("spec.childStatus") {
			cm["status"] = map[string]any{"phase": "Ready"}
		}
		children = append(children, cm, map[string]any{
			"apiVersion": "v1", "kind": "Service", "metadata": metadata,
			"spec": map[string]any{
				"selector": map[string]any{"app.kubernetes.io/name": child},
				"ports":    []any{map[string]any{"name": "http", "port": port, "targetPort": port}},
			},
		})
	}
	if parent.Bool("spec.nullStatus") {
		return nil, children
	}
	return map[string]any{"desiredChildren": len(children), "currentChildren": current}, children
}

// text is the string at path, and whether there is one.
func text(o operon.Object, path string) (string, bool) {
	v, _ := o.Get(path)
	s, ok := v.(string)
	return s, ok
}

// sites is the sync: spec.fail (a string) fails it on purpose.
func sites(_ context.Context, s *operon.SyncCtx) (operon.SyncResult, error) {
	if message := s.Parent.String("spec.fail"); message != "" {
		return operon.SyncResult{}, errors.New(message)
	}
	status, children := desired(s.Parent, len(s.AllChildren()))
	return operon.SyncResult{Status: status, Children: children}, nil
}

// finalizeSite lets a deleted parent go unless spec.holdFinalize; asked again every second.
func finalizeSite(_ context.Context, s *operon.SyncCtx) (operon.FinalizeResult, error) {
	hold := s.Parent.Bool("spec.holdFinalize")
	return operon.FinalizeResult{
		Status:     map[string]any{"finalizing": true, "held": hold},
		Finalized:  !hold,
		RetryAfter: time.Second,
	}, nil
}

// configure reads the command line into an App: the SDK's flags (--listen, --ledger, TLS,
// --shutdown-grace) and the example's.
func configure(fs *flag.FlagSet, args []string) (*operon.App, error) {
	app := operon.New("operon-go-example")
	app.Flags(fs)
	parent := fs.String("parent", "e2e.operon.dev/v1/sites", "the parent resource: GROUP/VERSION/PLURAL")
	var cms, svcs operon.UpdateStrategy
	fs.TextVar(&cms, "configmaps", operon.UpdateInPlace, "update strategy of the ConfigMaps")
	fs.TextVar(&svcs, "services", operon.UpdateInPlace, "update strategy of the Services")
	finalize := fs.Bool("finalize", false, "hold a finalizer on parents and answer Finalize")
	resync := fs.Int64("resync", 0, "resync period in seconds (0: none)")
	resource := fs.String("resource", "", "the resource of the handlers: GROUP/VERSION/PLURAL")
	var handlers []scripted
	fs.Func("handler", "a handler: KIND:ID[,OPTION=VALUE...] (repeatable; see handlers.go)", func(v string) error {
		h, err := parseHandler(v)
		handlers = append(handlers, h)
		return err
	})
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	parentSet := false
	fs.Visit(func(f *flag.Flag) { parentSet = parentSet || f.Name == "parent" })

	if len(handlers) == 0 && *resource != "" {
		return nil, errors.New("--resource needs at least one --handler")
	}
	if len(handlers) > 0 {
		r, err := parseResource(*resource)
		if err != nil {
			return nil, fmt.Errorf("--resource: %w", err)
		}
		for _, h := range handlers {
			h.register(app, r)
		}
		if !parentSet { // the handlers alone
			return app, nil
		}
	}
	p, err := parseResource(*parent)
	if err != nil {
		return nil, fmt.Errorf("--parent: %w", err)
	}
	opts := []operon.Option{operon.ID("sites"), operon.Owns(configMaps, cms), operon.Owns(services, svcs)}
	if *finalize {
		opts = append(opts, operon.Finalize(finalizeSite))
	}
	if *resync > 0 {
		opts = append(opts, operon.Resync(time.Duration(*resync)*time.Second))
	}
	return app.Sync(p, sites, opts...), nil
}

func main() {
	app, err := configure(flag.CommandLine, os.Args[1:])
	if err != nil {
		log.Fatal(err)
	}
	if err := app.Serve(context.Background()); err != nil {
		log.Fatal(err)
	}
}
