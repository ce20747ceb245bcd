package proxy

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/promptrail/promptrail/agent/intercept"
	"github.com/promptrail/promptrail/audit"
)

func TestRecordsCarryTheResolvedWorkload(t *testing.T) {
	pod := audit.Workload{Kind: "pod", Namespace: "shop", Pod: "web-1", ServiceAccount: "web", Identity: "k8s:shop/web", PID: 42}
	for _, tc := range []struct {
		name  string
		delay time.Duration // how long resolution takes
	}{
		{"resolved while the client handshakes", 0},
		{"resolved after the request began", 300 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			release := make(chan struct{})
			f := newDecryptFixture(t, func(dc *DecryptConfig, _ *Config) {
				dc.IdentifyWait = 50 * time.Millisecond
				dc.Identify = func(ctx context.Context, o intercept.Origin) audit.Workload {
					if tc.delay > 0 {
						<-release
					}
					if o.TGID != 42 {
						t.Errorf("Identify got origin %+v", o)
					}
					return pod
				}
			})
			// A slow stream, so that the late identity arrives while the
			// exchange is still going.
			req := chatRequest(t, true, map[string]string{"X-Fake-Event-Delay": "20"})
			resp, err := f.client(false).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			close(release)
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			r := f.sink.wait(t, "the request", func(*audit.Record) bool { return true })
			if r.Workload.Identity != pod.Identity || r.Workload.Pod != "web-1" {
				t.Fatalf("record workload %+v, want the pod's identity", r.Workload)
			}
		})
	}
}
