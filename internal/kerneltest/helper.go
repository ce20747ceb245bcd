package kerneltest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The test binary doubles as the client that tests run inside a cgroup or
// a network namespace: HelperMain, called first in TestMain, runs the
// helper that PROMPTRAIL_TEST_HELPER names and exits.
const envHelper = "PROMPTRAIL_TEST_HELPER"

// Result is what a helper prints, as JSON, on stdout.
type Result struct {
	PID   int      `json:"pid"`
	Local string   `json:"local,omitempty"`
	Reply string   `json:"reply,omitempty"`
	Addrs []string `json:"addrs,omitempty"`
	OK    int      `json:"ok,omitempty"`
	Err   string   `json:"err,omitempty"`
	// Errno is set when the error was a system call's (e.g. "EPERM").
	Errno string `json:"errno,omitempty"`
}

// Helpers, by name; each takes its arguments from the command line.
var helpers = map[string]func(args []string) Result{
	// tcp ADDR MSG: connect, send MSG, half-close, read the reply to EOF.
	"tcp": func(a []string) Result { return tcpExchange(a[0], a[1], false) },
	// tcp-mapped ADDR MSG: the same from an AF_INET6 dual-stack socket, so
	// that an IPv4 destination is connected as ::ffff:a.b.c.d.
	"tcp-mapped": func(a []string) Result { return tcpExchange(a[0], a[1], true) },
	// udp-connect ADDR: connect a UDP socket.
	"udp-connect": func(a []string) Result {
		c, err := net.Dial("udp", a[0])
		if err == nil {
			c.Close()
		}
		return withErr(Result{}, err)
	},
	// udp-sendto ADDR: send one datagram from an unconnected socket.
	"udp-sendto": func(a []string) Result {
		c, err := net.ListenUDP("udp", nil)
		if err != nil {
			return withErr(Result{}, err)
		}
		defer c.Close()
		ua, err := net.ResolveUDPAddr("udp", a[0])
		if err == nil {
			_, err = c.WriteToUDP([]byte("quic?"), ua)
		}
		return withErr(Result{}, err)
	},
	// connect-loop ADDR N: N connections that each half-close, read to EOF
	// and close.
	"connect-loop": func(a []string) Result {
		n, _ := strconv.Atoi(a[1])
		r := Result{}
		for range n {
			c, err := net.DialTimeout("tcp", a[0], 5*time.Second)
			if err != nil {
				return withErr(r, err)
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			c.(*net.TCPConn).CloseWrite()
			io.Copy(io.Discard, c)
			c.Close()
			r.OK++
		}
		return r
	},
	// tcp-marked MARK ADDR MSG: the tcp exchange from a socket with
	// SO_MARK MARK, which a workload with CAP_NET_ADMIN can set.
	"tcp-marked": func(a []string) Result {
		mark, err := strconv.ParseUint(a[0], 0, 32)
		if err != nil {
			return withErr(Result{}, err)
		}
		return tcpExchangeMarked(a[1], a[2], uint32(mark))
	},
	// udp-raw ADDR: one UDP datagram to ADDR from a raw socket (SOCK_RAW,
	// IPPROTO_UDP) with a hand-built UDP header, which no connect or
	// sendmsg hook sees; CAP_NET_RAW, a container default, allows it.
	"udp-raw": func(a []string) Result { return withErr(Result{}, sendRawUDP(a[0], []byte("quic?"))) },
	// tcp-raw-syn ADDR SPORT: a TCP SYN to IPv4 ADDR from source port
	// SPORT, sent from a raw socket (SOCK_RAW, IPPROTO_TCP), as a TCP stack
	// of the workload's own would, which no connect hook sees.
	"tcp-raw-syn": func(a []string) Result {
		sport, err := strconv.ParseUint(a[1], 10, 16)
		if err != nil {
			return withErr(Result{}, err)
		}
		return withErr(Result{}, sendRawSYN(a[0], uint16(sport)))
	},
	// dns-forge FROM TO NAME IP: send from UDP address FROM (port 53; any
	// address, bound with IP_TRANSPARENT) a DNS answer mapping NAME to IP to a
	// socket of the helper's own on TO, and receive it there, as a
	// workload can to teach the agent targets.
	"dns-forge": func(a []string) Result { return withErr(Result{}, forgeDNSAnswer(a[0], a[1], a[2], a[3])) },
	// hold-conns ADDR N WAIT: open N connections that send nothing, wait
	// WAIT, and count those still open (OK) and those the peer closed
	// (Reply "closed K").
	"hold-conns": func(a []string) Result {
		n, _ := strconv.Atoi(a[1])
		wait, _ := time.ParseDuration(a[2])
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for range n {
			c, err := net.DialTimeout("tcp", a[0], 5*time.Second)
			if err != nil {
				return withErr(Result{}, err)
			}
			conns = append(conns, c)
		}
		time.Sleep(wait)
		r, closed := Result{}, 0
		for _, c := range conns {
			c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
			var ne net.Error
			if _, err := c.Read(make([]byte, 1)); errors.As(err, &ne) && ne.Timeout() {
				r.OK++
			} else {
				closed++
			}
		}
		r.Reply = fmt.Sprintf("closed %d", closed)
		return r
	},
	// resolve SERVER NAME: look NAME up (IPv4) at the DNS server SERVER.
	"resolve": func(a []string) Result {
		res := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "udp", a[0])
		}}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ips, err := res.LookupNetIP(ctx, "ip4", a[1])
		r := Result{}
		for _, ip := range ips {
			r.Addrs = append(r.Addrs, ip.String())
		}
		return withErr(r, err)
	},
}

// HelperMain runs the helper named in the environment, if any, and exits.
func HelperMain() {
	name := os.Getenv(envHelper)
	if name == "" {
		return
	}
	h, ok := helpers[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "unknown helper %q\n", name)
		os.Exit(2)
	}
	r := h(os.Args[1:])
	r.PID = os.Getpid()
	json.NewEncoder(os.Stdout).Encode(r)
	os.Exit(0)
}

// HelperArgv returns the command line that runs helper name with args
// (prefix, e.g. Netns.Command, wraps it) and the environment it needs.
func HelperArgv(tb testing.TB, name string, args ...string) (argv, env []string) {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	return append([]string{exe}, args...), append(os.Environ(), envHelper+"="+name)
}

// RunHelper runs helper name inside cgroup dir, with the argv prefix wrap
// (nil, or a Netns.Command), and returns what it printed.
func RunHelper(tb testing.TB, cgroup string, wrap func(...string) []string, name string, args ...string) Result {
	tb.Helper()
	argv, env := HelperArgv(tb, name, args...)
	if wrap != nil {
		argv = wrap(argv...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Stderr = os.Stderr
	CommandInCgroup(tb, cgroup, cmd)
	out, err := cmd.Output()
	if err != nil {
		tb.Fatalf("helper %s %v: %v", name, args, err)
	}
	var r Result
	if err := json.Unmarshal(out, &r); err != nil {
		tb.Fatalf("helper %s printed %q: %v", name, out, err)
	}
	return r
}

func tcpExchange(addr, msg string, mapped bool) Result {
	var (
		c   net.Conn
		err error
	)
	if mapped {
		c, err = dialMapped(addr)
	} else {
		c, err = net.DialTimeout("tcp", addr, 5*time.Second)
	}
	if err != nil {
		return withErr(Result{}, err)
	}
	return exchange(c, msg)
}

// exchange sends msg on c, half-closes and reads the reply to EOF.
func exchange(c net.Conn, msg string) Result {
	defer c.Close()
	r := Result{Local: c.LocalAddr().String()}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		return withErr(r, err)
	}
	c.(interface{ CloseWrite() error }).CloseWrite()
	b, err := io.ReadAll(c)
	r.Reply = string(b)
	return withErr(r, err)
}

// dialMapped connects an AF_INET6 socket with IPV6_V6ONLY off to the
// IPv4-mapped form of an IPv4 address, as dual-stack clients (Java, many
// runtimes listening on ::) do.
func dialMapped(addr string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "mapped")
	defer f.Close()
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
		return nil, err
	}
	sa := &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	if err := unix.Connect(fd, sa); err != nil {
		return nil, err
	}
	return net.FileConn(f)
}

func withErr(r Result, err error) Result {
	if err == nil {
		return r
	}
	r.Err = err.Error()
	var errno unix.Errno
	if errors.As(err, &errno) {
		r.Errno = unix.ErrnoName(errno)
	}
	return r
}
