// Command go-website is a minimal Operon operator written with the Go SDK (proto/sdk/go).
//
// A GoWebsite (gowebsites.sdk.operon.dev, crd.yaml) owns a ConfigMap with its html and a
// Service on port 80, and reports its URL in its status. A page containing "flaky" fails its
// check once on purpose, to show a retry. See README.md for the walkthrough.
package main

import (
	"context"
	"fmt"
	"log"
	"strings"
	"time"

	operon "example.invalid/operon/sdk/go"
)

var (
	websites   = operon.GVR{Group: "sdk.operon.dev", Version: "v1", Resource: "gowebsites"}
	configMaps = operon.GVR{Version: "v1", Resource: "configmaps"}
	services   = operon.GVR{Version: "v1", Resource: "services"}
)

// check runs when a website is created or changed (one id, "check", for both). A page that
// contains "flaky" fails the first attempt; the core calls again a second later.
func check(_ context.Context, c *operon.Ctx) (any, error) {
	html := c.Object.String("spec.html")
	if strings.Contains(html, "flaky") && c.Retry() == 0 {
		return nil, operon.Temporary("the page is flaky; trying again", time.Second)
	}
	c.Event(operon.EventNormal, "Checked", fmt.Sprintf("%d bytes of html, attempt %d", len(html), c.Retry()+1))
	// No result: the sync below owns the whole status.
	return nil, nil
}

// render is level-triggered: from the website and its current children, the desired
// children and the status. The core applies the children, deletes the others, and writes
// the status.
func render(_ context.Context, s *operon.SyncCtx) (operon.SyncResult, error) {
	name, labels := s.Parent.Name(), map[string]any{"app.kubernetes.io/name": s.Parent.Name()}
	replicas, _ := s.Parent.Int("spec.replicas") // the CRD defaults it to 1
	configMap := map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": name + "-html", "labels": labels},
		"data":     map[string]any{"index.html": s.Parent.String("spec.html")},
	}
	service := map[string]any{
		"apiVersion": "v1", "kind": "Service",
		"metadata": map[string]any{"name": name, "labels": labels},
		"spec": map[string]any{"selector": labels,
			"ports": []any{map[string]any{"name": "http", "port": 80, "targetPort": 8080}}},
	}
	return operon.SyncResult{
		Status: map[string]any{
			"url":      fmt.Sprintf("http://%s.%s.svc/", name, s.Parent.Namespace()),
			"pages":    len(s.Children(configMaps)), // pages served now: the ConfigMaps that exist
			"replicas": replicas,
		},
		Children: []any{configMap, service},
	}, nil
}

func main() {
	err := operon.New("go-website").
		OnCreate(websites, check).
		OnUpdate(websites, check).
		Sync(websites, render,
			operon.Owns(configMaps, operon.UpdateInPlace),
			operon.Owns(services, operon.UpdateInPlace)).
		Serve(context.Background())
	if err != nil {
		log.Fatal(err)
	}
}
