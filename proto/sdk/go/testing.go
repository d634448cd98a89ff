package operon

// Helpers for unit tests of an operator's functions: call a HandlerFunc or a SyncFunc directly,
// without a server or a core.

import (
	"io"
	"log/slog"
	"slices"
	"strings"
)

// ParseObject parses a JSON object (numbers stay json.Number, as on the wire).
func ParseObject(raw []byte) (Object, error) { return parseObject(raw) }

// NewTestCtx returns a Ctx for calling a HandlerFunc in a unit test: the object, the number of
// earlier attempts (Ctx.Retry) and a logger that discards. Set its other fields as needed;
// read what the handler asked for with Patched and Events.
func NewTestCtx(object Object, retry int) *Ctx {
	return &Ctx{Handler: "test", Object: object, retry: retry, Log: discard()}
}

// NewTestSyncCtx returns a SyncCtx for calling a SyncFunc (or a FinalizeFunc, with Finalizing
// set) in a unit test: the parent and its current children by type.
func NewTestSyncCtx(parent Object, children map[GVR][]Object) *SyncCtx {
	s := &SyncCtx{Sync: "test", Parent: parent, Log: discard()}
	types := make([]GVR, 0, len(children))
	for r := range children {
		types = append(types, r)
	}
	slices.SortFunc(types, func(a, b GVR) int { return strings.Compare(a.String(), b.String()) })
	for _, r := range types {
		s.owned = append(s.owned, r)
		s.children = append(s.children, children[r])
	}
	return s
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
