// Package bpf holds promptrail's eBPF programs: their C sources, the Go
// bindings that bpf2go generates from them and the compiled objects, which
// are committed so that building the agent needs no clang.
//
// Each program has one job and one C file:
//
//   - connect4.c, connect6.c: steer TCP connects to a target into the
//     agent's proxy, remembering the origin; refuse UDP to a target;
//   - sendmsg.c: refuse unconnected UDP (QUIC) to a target;
//   - sockops.c: re-key the origin by the client's address once the
//     connection is established, and forget it when the socket closes;
//   - quic.c: drop UDP to a target's port 443, and raw-socket TCP to a
//     target, at egress, which raw sockets cannot avoid as they avoid
//     connect and sendmsg;
//   - dns.c: copy DNS responses to the agent, which learns target addresses.
//
// All of them include promptrail.h, which declares the maps they share;
// package agent/intercept creates those maps once and loads every object
// against them. Run `make generate` after changing a C file.
package bpf

//go:generate go tool bpf2go -tags linux -target bpfel -type origin -type client_key -type target_key -type config -type agent_state -type counter Connect4 connect4.c
//go:generate go tool bpf2go -tags linux -target bpfel Connect6 connect6.c
//go:generate go tool bpf2go -tags linux -target bpfel Sendmsg sendmsg.c
//go:generate go tool bpf2go -tags linux -target bpfel Sockops sockops.c
//go:generate go tool bpf2go -tags linux -target bpfel Quic quic.c
//go:generate go tool bpf2go -tags linux -target bpfel -type dns_event Dns dns.c
