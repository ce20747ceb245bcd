package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/promptrail/promptrail/internal/testlog"

	"github.com/promptrail/promptrail/agent/intercept"
)

// fakeOrigins sends every client to dst, or fails with err.
type fakeOrigins struct {
	dst netip.AddrPort
	err error
}

func (f fakeOrigins) Origin(client netip.AddrPort) (intercept.Origin, error) {
	if f.err != nil {
		return intercept.Origin{}, f.err
	}
	return intercept.Origin{Dst: f.dst, TGID: 42, Comm: "client"}, nil
}

func startProxy(t *testing.T, origins Origins) (string, *testlog.Buffer, context.CancelFunc, <-chan error) {
	t.Helper()
	lns, err := Listen([]netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")})
	if err != nil {
		t.Fatal(err)
	}
	logs := &testlog.Buffer{}
	srv, err := New(Config{Listeners: lns, Origins: origins, DialTimeout: 2 * time.Second,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	finished := make(chan struct{})
	go func() { done <- srv.Serve(ctx); close(finished) }()
	t.Cleanup(func() { cancel(); <-finished })
	return srv.Addrs()[0].String(), logs, cancel, done
}

// upstream echoes what it reads, after reading to EOF.
func upstream(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b, _ := io.ReadAll(c)
				c.Write(b)
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

func exchange(t *testing.T, addr string, msg []byte) ([]byte, error) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	go func() {
		c.Write(msg)
		c.(*net.TCPConn).CloseWrite()
	}()
	return io.ReadAll(c)
}

func TestSpliceIsByteExact(t *testing.T) {
	addr, logs, _, _ := startProxy(t, fakeOrigins{dst: upstream(t)})
	big := make([]byte, 4<<20)
	rand.Read(big)
	big[0] = 'x' // not a TLS record header, which would be refused as a bad hello
	for _, msg := range [][]byte{[]byte("hello"), big} {
		got, err := exchange(t, addr, msg)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("got %d bytes (err %v), want the %d bytes sent back", len(got), err, len(msg))
		}
	}
	waitFor(t, func() bool { return strings.Count(logs.String(), "msg=connection ") == 2 })
	if !strings.Contains(logs.String(), "bytes_sent=4194304 bytes_received=4194304") || !strings.Contains(logs.String(), "comm=client") {
		t.Errorf("log lacks the origin or byte counts:\n%s", logs)
	}
}

func TestConnectionsWithoutOriginOrDestinationAreClosed(t *testing.T) {
	dead := netip.MustParseAddrPort("127.0.0.1:1") // nothing listens on port 1
	for _, tt := range []struct {
		name    string
		origins fakeOrigins
		log     string
	}{
		{"no origin", fakeOrigins{err: intercept.ErrNoOrigin}, "no origin"},
		{"destination down", fakeOrigins{dst: dead}, "original destination unreachable"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			addr, logs, _, _ := startProxy(t, tt.origins)
			got, _ := exchange(t, addr, []byte("x"))
			if len(got) != 0 {
				t.Errorf("client got %q, want the connection closed", got)
			}
			waitFor(t, func() bool { return strings.Contains(logs.String(), tt.log) })
		})
	}
}

func TestServeClosesConnectionsInFlight(t *testing.T) {
	// An upstream that never answers: Serve must still return on cancel.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	addr, _, cancel, done := startProxy(t, fakeOrigins{dst: ln.Addr().(*net.TCPAddr).AddrPort()})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("waiting"))
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return with a connection in flight")
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && err == nil {
		t.Fatal("client connection still open after shutdown")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
