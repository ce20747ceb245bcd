package recorder

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"

	"github.com/promptrail/promptrail/audit"
)

// JSONL is a Sink that appends one JSON object per line to a file, synced
// after each record. It stands in until the durable spool exists.
type JSONL struct {
	mu sync.Mutex
	f  *os.File
}

// OpenJSONL opens (creating, mode 0600) the file at path for appending.
func OpenJSONL(path string) (*JSONL, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("recorder: opening record file: %w", err)
	}
	return &JSONL{f: f}, nil
}

// Write appends r.
func (j *JSONL) Write(_ context.Context, r *audit.Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("recorder: encoding record %s: %w", r.ID, err)
	}
	b = append(b, '\n')
	j.mu.Lock()
	defer j.mu.Unlock()
	if _, err := j.f.Write(b); err != nil {
		return fmt.Errorf("recorder: writing record %s: %w", r.ID, err)
	}
	if err := j.f.Sync(); err != nil {
		return fmt.Errorf("recorder: syncing record file: %w", err)
	}
	return nil
}

// Close closes the file.
func (j *JSONL) Close() error { return j.f.Close() }
