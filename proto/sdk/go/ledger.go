package operon

// The ledger (--ledger FILE): one JSON line per run of a handler, sync, finalize or task — what
// ran, for which object, at which attempt, and how it ended. An audit trail for tests and for
// people; the format is the one the example handler services write (proto/examples/rust,
// proto/examples/go), which the end-to-end tests read. A replayed attempt is not a run and
// writes no line.

import (
	"encoding/json"
	"os"
	"sync"
	"time"
)

type ledger struct {
	mu   sync.Mutex
	file *os.File
}

func openLedger(path string) (*ledger, error) {
	if path == "" {
		return &ledger{}, nil
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	return &ledger{file: f}, nil
}

// run is one ledger line.
type run struct {
	handler   string
	reason    string
	retry     int
	object    Object
	outcome   outcome
	attemptID string
	eventType string
	started   time.Time
}

func unix(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

func (l *ledger) record(r run) {
	if l == nil || l.file == nil {
		return
	}
	entry := map[string]any{
		"ts": unix(time.Now()), "handler": r.handler, "reason": r.reason, "retry": r.retry,
		"outcome": string(r.outcome), "uid": r.object.UID(), "namespace": r.object.Namespace(),
		"name": r.object.Name(), "generation": r.object.Generation(),
	}
	if r.attemptID != "" {
		entry["attempt_id"] = r.attemptID
	}
	if r.eventType != "" {
		entry["event_type"] = r.eventType
	}
	if !r.started.IsZero() {
		entry["started"] = unix(r.started)
	}
	line, _ := json.Marshal(entry)
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = l.file.Write(append(line, '\n'))
}

func (l *ledger) close() {
	if l != nil && l.file != nil {
		_ = l.file.Close()
	}
}
