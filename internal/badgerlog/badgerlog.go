// Package badgerlog adapts Badger's logger interface to log/slog, so that
// the spool's and the collector's storage engine logs where the rest of
// promptrail does. Badger's info and debug chatter (compactions, table
// flushes) is dropped; warnings and errors are kept.
package badgerlog

import (
	"fmt"
	"log/slog"
	"strings"
)

// Logger implements badger.Logger over a slog.Logger.
type Logger struct {
	log *slog.Logger
}

// New returns a Logger that writes to l with the attribute component=name.
// Nil l: slog.Default().
func New(l *slog.Logger, name string) *Logger {
	if l == nil {
		l = slog.Default()
	}
	return &Logger{log: l.With("component", name)}
}

func msg(format string, args ...any) string {
	return strings.TrimSpace(fmt.Sprintf(format, args...))
}

// Errorf logs at error level.
func (l *Logger) Errorf(format string, args ...any) { l.log.Error(msg(format, args...)) }

// Warningf logs at warning level.
func (l *Logger) Warningf(format string, args ...any) { l.log.Warn(msg(format, args...)) }

// Infof drops the message: Badger logs every compaction at info level.
func (l *Logger) Infof(string, ...any) {}

// Debugf drops the message.
func (l *Logger) Debugf(string, ...any) {}
