// Package testlog holds what tests need to read the logs of the code they
// run while it still writes them.
package testlog

import (
	"bytes"
	"sync"
)

// Buffer is an io.Writer for a logger that a test may read (String) while
// other goroutines write to it.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
