package intercept

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/promptrail/promptrail/bpf"
)

// AgentSockets tells the programs which sockets are the agent's own, so
// that its upstream connections are never redirected back to it.
//
// A socket mark is no proof of that: any process with CAP_NET_ADMIN (a
// container may have it) can put the agent's mark on its sockets. So the
// agent registers each of its sockets, by cookie (SO_COOKIE, a number the
// kernel never reuses), in the map agent_sockets before connecting it, and
// the programs exempt a socket only when its cookie is registered and it
// carries the mark; a marked socket that is not registered is counted
// ("forged_mark") and intercepted like any other. Only a holder of the
// map's file descriptor can write it, which a workload is not (unless it
// can load eBPF programs or ptrace the agent, when it owns the node
// anyway). The mark stays on the agent's traffic for operators' firewall
// rules and as the second signal the programs check.
//
// The map lives as long as the agent: a restarted agent registers its own
// sockets in a new one, and its programs, which replace the pinned ones,
// read that.
type AgentSockets struct {
	m    *ebpf.Map
	mark uint32
}

// NewAgentSockets creates the registry for sockets marked mark (zero:
// DefaultMark). Pass it to Attach as Config.Sockets and use Control as the
// dialer Control of every socket the agent connects. Close it after the
// Interceptor.
func NewAgentSockets(mark uint32) (*AgentSockets, error) {
	if mark == 0 {
		mark = DefaultMark
	}
	spec, err := bpf.LoadConnect4()
	if err != nil {
		return nil, fmt.Errorf("intercept: reading embedded program object: %w", err)
	}
	ms, ok := spec.Maps[bpf.Connect4MapAgentSockets]
	if !ok {
		return nil, errors.New("intercept: map agent_sockets missing from the program objects")
	}
	m, err := ebpf.NewMap(ms)
	if err != nil {
		return nil, fmt.Errorf("intercept: creating map agent_sockets (needs CAP_BPF): %w", err)
	}
	return &AgentSockets{m: m, mark: mark}, nil
}

// Mark is the SO_MARK that Control sets.
func (s *AgentSockets) Mark() uint32 { return s.mark }

// Control is a net.Dialer Control function: it marks the socket and
// registers it as the agent's before it connects. An error fails the dial,
// as a socket the programs do not know as the agent's would be redirected
// to the agent itself.
func (s *AgentSockets) Control(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = s.register(int(fd))
	})
	if err != nil {
		return err
	}
	return serr
}

func (s *AgentSockets) register(fd int) error {
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(s.mark)); err != nil {
		return fmt.Errorf("setting SO_MARK %#x (needs CAP_NET_ADMIN): %w", s.mark, err)
	}
	cookie, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE)
	if err != nil {
		return fmt.Errorf("reading the socket's SO_COOKIE: %w", err)
	}
	if err := s.m.Put(cookie, uint8(1)); err != nil {
		return fmt.Errorf("registering the socket in map agent_sockets: %w", err)
	}
	return nil
}

// Close releases the map. Sockets connected before stay connected.
func (s *AgentSockets) Close() error { return s.m.Close() }
