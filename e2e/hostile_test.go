package e2e

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/promptrail/promptrail/audit"
	"github.com/promptrail/promptrail/internal/hellotest"
)

// envHostile makes the test binary act as a hostile workload; its value
// is the attack. The client prints a hostileResult.
const envHostile = "PROMPTRAIL_E2E_HOSTILE"

// hostileAddrs are this suite's own, so that it never meets other tests'.
var hostileAddrs = tlsNodeAddrs{upstream: "127.0.6.5", proxy: "127.0.0.1:15610", explicit: "127.0.0.1:15611",
	agentArgs: []string{"--hello-timeout", "1s"}}

type hostileResult struct {
	PID    int    `json:"pid"`
	Status int    `json:"status,omitempty"` // HTTP status, when one came back
	Bytes  int    `json:"bytes"`            // bytes the client read back
	Err    string `json:"err,omitempty"`
}

// hostileClientMain runs an attack if the environment asks for one.
func hostileClientMain() {
	mode := os.Getenv(envHostile)
	if mode == "" {
		return
	}
	out := hostileResult{PID: os.Getpid()}
	if err := hostileClient(mode, &out); err != nil {
		out.Err = err.Error()
	}
	json.NewEncoder(os.Stdout).Encode(out)
	os.Exit(0)
}

func hostileClient(mode string, out *hostileResult) error {
	api := "api.openai.com:443"
	fake := hostileAddrs.upstream + ":443"
	switch mode {
	case "slow-hello":
		// The first bytes, then a pause longer than the agent's hello
		// timeout: once, this was spliced to the API unseen.
		hello := hellotest.Record("api.openai.com", []string{"http/1.1"})
		return rawHello(api, hello[:20], 2*time.Second, hello[20:], out)
	case "trailing-dot":
		return rawHello(api, hellotest.TrailingDot("api.openai.com", []string{"http/1.1"}), 0, nil, out)
	case "big-hello":
		return tlsGet(api, &tls.Config{ServerName: "api.openai.com", NextProtos: append(hellotest.LongALPN(), "http/1.1")}, "/v1/models?big-hello", out)
	case "no-sni":
		return tlsGet(fake, &tls.Config{InsecureSkipVerify: true}, "/v1/models?no-sni", out)
	case "other-sni":
		return tlsGet(fake, &tls.Config{ServerName: "fronted.example", InsecureSkipVerify: true}, "/v1/models?fronted", out)
	case "explicit-connect":
		return proxyRequest("CONNECT "+fake+" HTTP/1.1\r\nHost: "+fake+"\r\n\r\n", out)
	case "explicit-http":
		return proxyRequest("GET http://"+fake+"/v1/models?explicit-http HTTP/1.1\r\nHost: "+fake+"\r\n\r\n", out)
	}
	return fmt.Errorf("unknown attack %q", mode)
}

// rawHello sends first, waits, sends rest, and counts what comes back.
func rawHello(addr string, first []byte, wait time.Duration, rest []byte, out *hostileResult) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.Write(first)
	time.Sleep(wait)
	if len(rest) > 0 {
		c.Write(rest)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.Copy(io.Discard, c)
	out.Bytes = int(n)
	return err
}

func tlsGet(addr string, cfg *tls.Config, path string, out *hostileResult) error {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: api.openai.com\r\nConnection: close\r\n\r\n", path)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out.Status, out.Bytes = resp.StatusCode, len(b)
	return nil
}

func proxyRequest(req string, out *hostileResult) error {
	c, err := net.DialTimeout("tcp", hostileAddrs.explicit, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, req)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	out.Status = resp.StatusCode
	return nil
}

// TestHostileClientsLeaveARecord runs each attack from the client cgroup,
// as a pod would, against an agent that decrypts api.openai.com: each is
// refused or recorded, and every request the (fake) API received has a
// record in the collector.
func TestHostileClientsLeaveARecord(t *testing.T) {
	n := newTLSNodeAt(t, hostileAddrs)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	attack := func(t *testing.T, mode string) hostileResult {
		t.Helper()
		out, _ := n.run(t, []string{envHostile + "=" + mode, "SSL_CERT_FILE=" + n.agentCA}, self)
		var r hostileResult
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatalf("%s printed %q", mode, out)
		}
		t.Logf("%s: %+v", mode, r)
		return r
	}
	connection := func(t *testing.T, what, action string, match func(*audit.Record) bool) *audit.Record {
		t.Helper()
		r := n.record(t, what, func(r *audit.Record) bool { return r.Kind == audit.KindConnection && match(r) })
		if r.Decision.Action != action {
			t.Errorf("%s: action %q, want %q (%+v)", what, r.Decision.Action, action, r.Decision)
		}
		return r
	}
	fromPID := func(pid int) func(*audit.Record) bool {
		return func(r *audit.Record) bool { return r.Workload.PID == uint32(pid) }
	}

	t.Run("slow hello is refused", func(t *testing.T) {
		res := attack(t, "slow-hello")
		if res.Bytes != 0 {
			t.Errorf("a slow hello got %d bytes back", res.Bytes)
		}
		r := connection(t, "slow hello", "refuse", fromPID(res.PID))
		if r.Decision.Rule != "bad-hello" || !strings.Contains(r.Decision.Message, "timeout") || r.Workload.Comm == "" {
			t.Errorf("record %+v / %+v, want a bad-hello timeout refusal naming the process", r.Decision, r.Workload)
		}
	})
	t.Run("trailing-dot name is refused", func(t *testing.T) {
		res := attack(t, "trailing-dot")
		if res.Bytes != 0 {
			t.Errorf("got %d bytes back", res.Bytes)
		}
		r := connection(t, "trailing dot", "refuse", fromPID(res.PID))
		if r.Connection.SNI != "api.openai.com." {
			t.Errorf("SNI %q, want the name as sent", r.Connection.SNI)
		}
	})
	t.Run("hello larger than a record is decrypted", func(t *testing.T) {
		res := attack(t, "big-hello")
		if res.Status != 200 {
			t.Fatalf("status %d (%s)", res.Status, res.Err)
		}
		n.record(t, "big hello", func(r *audit.Record) bool { return strings.Contains(r.Request.Path, "big-hello") })
	})
	t.Run("no SNI is refused", func(t *testing.T) {
		res := attack(t, "no-sni")
		if res.Status != 0 {
			t.Errorf("a hello without a name got HTTP %d", res.Status)
		}
		connection(t, "no SNI", "refuse", fromPID(res.PID))
	})
	t.Run("other SNI is spliced and recorded", func(t *testing.T) {
		res := attack(t, "other-sni")
		r := connection(t, "other SNI", "splice", fromPID(res.PID))
		if r.Connection.SNI != "fronted.example" || r.Connection.BytesSent == 0 || r.Connection.BytesReceived == 0 {
			t.Errorf("connection %+v, want the name and the bytes", r.Connection)
		}
	})
	for _, mode := range []string{"explicit-connect", "explicit-http"} {
		t.Run(mode+" to a non-target is refused", func(t *testing.T) {
			res := attack(t, mode)
			if res.Status != http.StatusForbidden {
				t.Errorf("status %d (%s), want 403", res.Status, res.Err)
			}
			connection(t, mode, "refuse", func(r *audit.Record) bool {
				return r.Connection.Mode == "explicit" && strings.Contains(r.Decision.Message, hostileAddrs.upstream)
			})
		})
	}

	// Every request the API got is on record: decrypted ones as
	// exchanges, the fronted one inside a spliced connection's record.
	for _, req := range n.fake.Server.Requests() {
		switch req.RawQuery {
		case "big-hello", "fronted":
		default:
			t.Errorf("the upstream got %s %s?%s, which no attack should have delivered", req.Method, req.Path, req.RawQuery)
		}
	}
}
