//go:build tools

// Package tools pins the Jaeger v2 binary (cmd/jaeger) so that `go mod tidy` keeps its whole module graph.
package tools

import _ "github.com/jaegertracing/jaeger/cmd/jaeger"
