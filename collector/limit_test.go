package collector_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/promptrail/promptrail/collector"
	"github.com/promptrail/promptrail/collector/auth"
)

func TestOneClientCannotHoldMoreThanItsShareOfRequests(t *testing.T) {
	h := newHandler(t, collector.HandlerConfig{MaxRequestsPerClient: 1})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)

	// A batch whose body is slow to come holds the client's one request.
	slow, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { slow.Close() })
	const part = `{"records":[`
	fmt.Fprintf(slow, "POST /v1/ingest HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s",
		agentA, len(part)+2, part)

	var status int
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(srv.URL + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if status = resp.StatusCode; status == http.StatusTooManyRequests {
			if resp.Header.Get("Retry-After") == "" {
				t.Error("429 without Retry-After")
			}
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if status != http.StatusTooManyRequests {
		t.Fatalf("second request while one is in flight: %d, want 429", status)
	}
	io.WriteString(slow, "]}")
	answer, err := http.ReadResponse(bufio.NewReader(slow), nil)
	if err != nil {
		t.Fatal(err)
	}
	answer.Body.Close()
	if answer.StatusCode != http.StatusBadRequest {
		t.Errorf("the slow empty batch got %d, want 400", answer.StatusCode)
	}
	resp, err := http.Get(srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("after the slow request ended: %d, want 200", resp.StatusCode)
	}
}

func TestCollectorClosesConnectionsThatSendHeadersTooSlowly(t *testing.T) {
	dir := t.TempDir()
	tok, err := auth.ParseTokens([]byte("agent node-a " + agentA + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- collector.Run(ctx, collector.Config{DataDir: dir, Listen: "127.0.0.1:0", Auth: tok,
			Server: collector.ServerLimits{ReadHeaderTimeout: 200 * time.Millisecond},
			Ready:  func(a net.Addr) { ready <- a }})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("collector.Run: %v", err)
		}
	})
	var addr net.Addr
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("collector did not start: %v", err)
	}
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Half a request line, then nothing: the server must give up on it.
	if _, err := c.Write([]byte("POST /v1/ingest HTTP/1.1\r\nHost: x\r\n")); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = bufio.NewReader(c).ReadString('\n')
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("connection still open 10s after a 200ms header timeout")
	}
}
