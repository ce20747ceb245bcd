package recorder

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"sync"

	"github.com/promptrail/promptrail/audit"
)

// JSONL is a Sink that appends one JSON object per line to a file. A
// writer goroutine commits records in groups, one write and one fsync per
// group, so that a burst of exchanges costs one disk flush and no exchange
// waits for the disk. It stands in until the durable spool exists.
type JSONL struct {
	f    *os.File
	log  *slog.Logger
	ch   chan []byte
	done chan struct{}
	once sync.Once
}

// maxGroup bounds the bytes committed by one write.
const maxGroup = 4 << 20

// OpenJSONL opens (creating, mode 0600) the file at path for appending.
// Nil logger: slog.Default().
func OpenJSONL(path string, logger *slog.Logger) (*JSONL, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("recorder: opening record file: %w", err)
	}
	if logger == nil {
		logger = slog.Default()
	}
	j := &JSONL{f: f, log: logger, ch: make(chan []byte, 4096), done: make(chan struct{})}
	go j.run()
	return j, nil
}

// Write queues r; it blocks only while the queue is full.
func (j *JSONL) Write(ctx context.Context, r *audit.Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("recorder: encoding record %s: %w", r.ID, err)
	}
	select {
	case j.ch <- append(b, '\n'):
		return nil
	case <-ctx.Done():
		return fmt.Errorf("recorder: record %s not queued: %w", r.ID, ctx.Err())
	}
}

func (j *JSONL) run() {
	defer close(j.done)
	var group []byte
	for b := range j.ch {
		group = append(group[:0], b...)
	drain:
		for len(group) < maxGroup {
			select {
			case more, ok := <-j.ch:
				if !ok {
					break drain
				}
				group = append(group, more...)
			default:
				break drain
			}
		}
		if _, err := j.f.Write(group); err != nil {
			j.log.Error("audit records not written", "file", j.f.Name(), "bytes", len(group), "err", err)
			continue
		}
		if err := j.f.Sync(); err != nil {
			j.log.Error("audit records not synced", "file", j.f.Name(), "err", err)
		}
	}
}

// Close writes what is queued and closes the file. Write must not be
// called after Close.
func (j *JSONL) Close() error {
	j.once.Do(func() { close(j.ch) })
	<-j.done
	return j.f.Close()
}
