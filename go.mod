module github.com/promptrail/promptrail

go 1.26.8

require (
	github.com/cilium/ebpf v0.22.0
	github.com/google/gopacket v1.1.19
	github.com/miekg/dns v1.1.73
	go.yaml.in/yaml/v3 v3.0.6
	golang.org/x/sys v0.50.0
)

require golang.org/x/net v0.57.0 // indirect

tool github.com/cilium/ebpf/cmd/bpf2go
