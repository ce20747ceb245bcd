package proxy

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/promptrail/promptrail/agent/recorder"
	"github.com/promptrail/promptrail/audit"
)

// brokenJournal is a sink whose spool refuses every request's record, as
// a full spool or a failing disk does.
type brokenJournal struct{ *memSink }

func (brokenJournal) Begin(context.Context, *audit.Record) error {
	return errors.New("spool: full (1073741824 bytes)")
}

func TestRequestWhoseRecordCannotBeSpooled(t *testing.T) {
	for _, tc := range []struct {
		name     string
		pass     bool
		status   int
		upstream int
	}{
		{"refused by default", false, 503, 0},
		{"passed when configured", true, 200, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink := &memSink{}
			var failures, passed atomic.Int32
			f := newDecryptFixture(t, func(dc *DecryptConfig, _ *Config) {
				rec, err := recorder.New(recorder.Config{Sink: brokenJournal{sink}})
				if err != nil {
					t.Fatal(err)
				}
				dc.Recorder, dc.PassUnspooled = rec, tc.pass
				dc.OnSpoolFailure = func(p bool) {
					failures.Add(1)
					if p {
						passed.Add(1)
					}
				}
			})
			resp, err := f.client(false).Do(chatRequest(t, false, nil))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, tc.status)
			}
			if got := len(f.fake.Server.Requests()); got != tc.upstream {
				t.Fatalf("the upstream saw %d requests, want %d", got, tc.upstream)
			}
			r := sink.wait(t, "the request", func(*audit.Record) bool { return true })
			if tc.pass {
				if !r.Unspooled || !strings.Contains(r.Error, "not spooled") || passed.Load() != 1 {
					t.Fatalf("passed request: record unspooled %v error %q, passed %d", r.Unspooled, r.Error, passed.Load())
				}
				return
			}
			if !strings.Contains(string(body), `"code":"promptrail_spool_unavailable"`) || resp.Header.Get("Retry-After") == "" {
				t.Errorf("503 answer: %s (Retry-After %q)", body, resp.Header.Get("Retry-After"))
			}
			if r.Decision.Action != "reject" || r.Response == nil || r.Response.Status != 503 || failures.Load() != 1 {
				t.Fatalf("refused request: record %+v, failures %d", r.Decision, failures.Load())
			}
		})
	}
}
