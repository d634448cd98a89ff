//go:build tools

// Package tools pins the Helm CLI's module so that `go build helm.sh/helm/v3/cmd/helm` resolves it.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
