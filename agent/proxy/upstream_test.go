package proxy

import (
	"context"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/promptrail/promptrail/internal/fakeopenai"
)

// TestUpstreamPoolsPerDestination: two clients that chose two addresses
// of the same name reach those two addresses, even though the first
// connection could have been reused for the second request by name.
func TestUpstreamPoolsPerDestination(t *testing.T) {
	a := fakeopenai.NewTLSServer(t, fakeopenai.Config{Reply: "a"}, "127.0.6.21:18443")
	b := fakeopenai.NewTLSServer(t, fakeopenai.Config{Reply: "b"}, "127.0.6.22:18443")
	cas := filepath.Join(t.TempDir(), "cas.pem")
	os.WriteFile(cas, append(append([]byte{}, a.CAPEM...), b.CAPEM...), 0o600)
	up, err := NewUpstreamTransport(UpstreamConfig{ExtraCAs: cas})
	if err != nil {
		t.Fatal(err)
	}
	defer up.CloseIdleConnections()
	get := func(dst string) {
		t.Helper()
		ctx := withDialTarget(context.Background(), netip.MustParseAddrPort(dst))
		req, _ := http.NewRequestWithContext(ctx, "GET", "https://api.openai.com:18443/v1/models", nil)
		resp, err := up.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	for _, dst := range []string{"127.0.6.21:18443", "127.0.6.22:18443", "127.0.6.21:18443"} {
		get(dst)
	}
	if na, nb := len(a.Server.Requests()), len(b.Server.Requests()); na != 2 || nb != 1 {
		t.Errorf("destination a got %d requests, b %d; want 2 and 1: a pooled connection crossed destinations", na, nb)
	}
}

func TestUpstreamBoundsItsPools(t *testing.T) {
	up, err := NewUpstreamTransport(UpstreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	up.max = 3
	for i := range 10 {
		up.transport(netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 443))
	}
	first := up.transport(netip.MustParseAddrPort("10.0.0.9:443"))
	if len(up.byDst) != 3 || up.transport(netip.MustParseAddrPort("10.0.0.9:443")) != first {
		t.Errorf("%d pools kept (want 3), or the most recent one was evicted", len(up.byDst))
	}
}
