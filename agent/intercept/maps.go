package intercept

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"

	"github.com/promptrail/promptrail/bpf"
)

// sharedMaps are the maps that promptrail.h declares: created once and
// given to every program object, so all programs see the same state.
type sharedMaps struct {
	targets, targetPorts, pending, origins, config, state, counters, dnsEvents *ebpf.Map
	// agentSockets belongs to an AgentSockets, which outlives these maps.
	agentSockets *ebpf.Map
}

// sharedMapNames lists them by their C names. Objects also carry maps of
// their own (.bss), which are not shared.
func (m *sharedMaps) byName() map[string]**ebpf.Map {
	return map[string]**ebpf.Map{
		bpf.Connect4MapTargets:        &m.targets,
		bpf.Connect4MapTargetPorts:    &m.targetPorts,
		bpf.Connect4MapPendingOrigins: &m.pending,
		bpf.Connect4MapOrigins:        &m.origins,
		bpf.Connect4MapConfigMap:      &m.config,
		bpf.Connect4MapAgentStateMap:  &m.state,
		bpf.Connect4MapCounters:       &m.counters,
		bpf.DnsMapDnsEvents:           &m.dnsEvents,
		bpf.Connect4MapAgentSockets:   &m.agentSockets,
	}
}

// newSharedMaps creates the maps, except agent_sockets, which is given.
func newSharedMaps(agentSockets *ebpf.Map) (_ *sharedMaps, err error) {
	m := &sharedMaps{agentSockets: agentSockets}
	defer func() {
		if err != nil {
			m.Close()
		}
	}()
	specs := map[string]*ebpf.MapSpec{}
	for _, load := range []func() (*ebpf.CollectionSpec, error){bpf.LoadConnect4, bpf.LoadDns} {
		cs, err := load()
		if err != nil {
			return nil, fmt.Errorf("intercept: reading embedded program object: %w", err)
		}
		for name, ms := range cs.Maps {
			specs[name] = ms
		}
	}
	for name, dst := range m.byName() {
		if *dst != nil {
			continue
		}
		spec, ok := specs[name]
		if !ok {
			return nil, fmt.Errorf("intercept: map %s missing from the program objects", name)
		}
		if *dst, err = ebpf.NewMap(spec); err != nil {
			return nil, fmt.Errorf("intercept: creating map %s: %w", name, err)
		}
	}
	return m, nil
}

// replacementsFor returns the shared maps that spec declares.
func (m *sharedMaps) replacementsFor(spec *ebpf.CollectionSpec) map[string]*ebpf.Map {
	r := map[string]*ebpf.Map{}
	for name, mp := range m.byName() {
		if _, ok := spec.Maps[name]; ok {
			r[name] = *mp
		}
	}
	return r
}

func (m *sharedMaps) Close() error {
	var errs []error
	for _, mp := range m.byName() {
		if *mp != nil && *mp != m.agentSockets {
			errs = append(errs, (*mp).Close())
		}
	}
	return errors.Join(errs...)
}

func (m *sharedMaps) writeConfig(c *Config, hostNetns uint64) error {
	cfg := bpf.Connect4Config{
		ProxyPortHost:      htons(firstValid(c.HostProxy4, c.HostProxy6).Port()),
		ProxyPortNode:      htons(firstValid(c.NodeProxy4, c.NodeProxy6).Port()),
		AgentMark:          c.Mark,
		HeartbeatTimeoutNs: uint64(c.HeartbeatTimeout.Nanoseconds()),
	}
	if c.FailMode == FailClosed {
		cfg.FailClosed = 1
	}
	if c.HostProxy4.IsValid() && c.HostProxy6.IsValid() && c.HostProxy4.Port() != c.HostProxy6.Port() {
		return fmt.Errorf("intercept: host proxy addresses %s and %s must share one port", c.HostProxy4, c.HostProxy6)
	}
	if c.NodeProxy4.IsValid() && c.NodeProxy6.IsValid() && c.NodeProxy4.Port() != c.NodeProxy6.Port() {
		return fmt.Errorf("intercept: node proxy addresses %s and %s must share one port", c.NodeProxy4, c.NodeProxy6)
	}
	cfg.Proxy4Host = ip4Word(c.HostProxy4)
	cfg.Proxy4Node = ip4Word(c.NodeProxy4)
	cfg.Proxy6Host = ip6Words(c.HostProxy6)
	cfg.Proxy6Node = ip6Words(c.NodeProxy6)
	cfg.HostNetnsCookie = hostNetns
	if err := m.config.Put(uint32(0), &cfg); err != nil {
		return fmt.Errorf("intercept: writing map config_map: %w", err)
	}
	return nil
}

func (m *sharedMaps) writeState(now uint64, stopped bool) error {
	st := bpf.Connect4AgentState{HeartbeatNs: now}
	if stopped {
		st.Stopped = 1
	}
	if err := m.state.Put(uint32(0), &st); err != nil {
		return fmt.Errorf("intercept: writing map agent_state_map: %w", err)
	}
	return nil
}

func (m *sharedMaps) setPorts(ports []uint16) error {
	for _, p := range ports {
		if err := m.targetPorts.Put(p, uint8(1)); err != nil {
			return fmt.Errorf("intercept: writing map target_ports: %w", err)
		}
	}
	return nil
}

// ApplyTargets adds and removes target prefixes. IPv4 prefixes are stored
// IPv4-mapped, so they also match IPv4-mapped IPv6 connects.
func (in *Interceptor) ApplyTargets(add, remove []netip.Prefix) error {
	var errs []error
	for _, p := range remove {
		k := targetKey(p)
		if err := in.maps.targets.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("intercept: deleting %s from map targets: %w", p, err))
		}
	}
	for _, p := range add {
		k := targetKey(p)
		if err := in.maps.targets.Put(&k, uint8(1)); err != nil {
			errs = append(errs, fmt.Errorf("intercept: adding %s to map targets: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

func targetKey(p netip.Prefix) bpf.Connect4TargetKey {
	p = p.Masked()
	a, bits := p.Addr(), p.Bits()
	if a.Is4() {
		bits += 96
	}
	return bpf.Connect4TargetKey{Prefixlen: uint32(bits), Addr: a.As16()}
}

// Counters returns the programs' event counters, summed over CPUs, by name.
func (in *Interceptor) Counters() (map[string]uint64, error) {
	out := map[string]uint64{}
	for c, name := range counterNames {
		var perCPU []uint64
		if err := in.maps.counters.Lookup(uint32(c), &perCPU); err != nil {
			return nil, fmt.Errorf("intercept: reading map counters: %w", err)
		}
		var sum uint64
		for _, v := range perCPU {
			sum += v
		}
		out[name] = sum
	}
	return out, nil
}

var counterNames = map[bpf.Connect4Counter]string{
	bpf.Connect4CounterCOUNTER_REDIRECTED:       "redirected",
	bpf.Connect4CounterCOUNTER_REFUSED_UDP:      "refused_udp",
	bpf.Connect4CounterCOUNTER_REFUSED_NO_AGENT: "refused_no_agent",
	bpf.Connect4CounterCOUNTER_SKIPPED_AGENT:    "skipped_agent",
	bpf.Connect4CounterCOUNTER_SKIPPED_NO_PROXY: "skipped_no_proxy",
	bpf.Connect4CounterCOUNTER_REKEYED:          "rekeyed",
	bpf.Connect4CounterCOUNTER_CLOSED:           "closed",
	bpf.Connect4CounterCOUNTER_DNS_CAPTURED:     "dns_captured",
	bpf.Connect4CounterCOUNTER_DNS_DROPPED:      "dns_dropped",
	bpf.Connect4CounterCOUNTER_FORGED_MARK:      "forged_mark",
	bpf.Connect4CounterCOUNTER_DROPPED_QUIC:     "dropped_quic",
	bpf.Connect4CounterCOUNTER_DROPPED_RAW:      "dropped_raw",
}

// TableSizes returns how many entries the origin tables hold: connects
// waiting for their handshake and established redirected connections.
func (in *Interceptor) TableSizes() (pending, established int, err error) {
	if pending, err = countEntries(in.maps.pending); err != nil {
		return 0, 0, fmt.Errorf("intercept: iterating map pending_origins: %w", err)
	}
	if established, err = countEntries(in.maps.origins); err != nil {
		return 0, 0, fmt.Errorf("intercept: iterating map origins: %w", err)
	}
	return pending, established, nil
}

func countEntries(m *ebpf.Map) (int, error) {
	var (
		n   int
		key []byte
		val []byte
	)
	it := m.Iterate()
	for it.Next(&key, &val) {
		n++
	}
	return n, it.Err()
}

func firstValid(a, b netip.AddrPort) netip.AddrPort {
	if a.IsValid() {
		return a
	}
	return b
}

func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

// ip4Word returns the address as the kernel's __u32 in network order.
func ip4Word(ap netip.AddrPort) uint32 {
	if !ap.IsValid() {
		return 0
	}
	b := ap.Addr().As4()
	return binary.NativeEndian.Uint32(b[:])
}

func ip6Words(ap netip.AddrPort) [4]uint32 {
	var w [4]uint32
	if !ap.IsValid() {
		return w
	}
	b := ap.Addr().As16()
	for i := range w {
		w[i] = binary.NativeEndian.Uint32(b[4*i:])
	}
	return w
}
