package main

import (
	"context"
	"errors"
	"testing"

	operon "example.invalid/operon/sdk/go"
)

func website(html string) operon.Object {
	return operon.Object{
		"metadata": map[string]any{"name": "home", "namespace": "web"},
		"spec":     map[string]any{"html": html, "replicas": 2},
	}
}

func TestAFlakyPageFailsOnce(t *testing.T) {
	_, err := check(context.Background(), operon.NewTestCtx(website("<p>flaky</p>"), 0))
	var temporary *operon.TemporaryError
	if !errors.As(err, &temporary) {
		t.Fatalf("the first attempt: %v", err)
	}
	c := operon.NewTestCtx(website("<p>flaky</p>"), 1)
	if _, err := check(context.Background(), c); err != nil {
		t.Fatalf("the retry: %v", err)
	}
	if events := c.Events(); len(events) != 1 || events[0].Reason != "Checked" {
		t.Errorf("events: %v", events)
	}
}

func TestRender(t *testing.T) {
	s := operon.NewTestSyncCtx(website("<h1>hi</h1>"), map[operon.GVR][]operon.Object{
		configMaps: {{"metadata": map[string]any{"name": "home-html"}}},
		services:   nil,
	})
	result, err := render(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	status := result.Status.(map[string]any)
	if status["url"] != "http://home.web.svc/" || status["pages"] != 1 || status["replicas"] != int64(2) {
		t.Errorf("status: %v", status)
	}
	if len(result.Children) != 2 {
		t.Fatalf("children: %v", result.Children)
	}
	data := result.Children[0].(map[string]any)["data"].(map[string]any)
	if data["index.html"] != "<h1>hi</h1>" {
		t.Errorf("the ConfigMap: %v", result.Children[0])
	}
}
