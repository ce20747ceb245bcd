package kubecluster

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// sysctls are the kernel settings the kubelet and kube-proxy may change
// (the kubelet's kernel tunables, kube-proxy's route_localnet and
// conntrack table size); teardown writes back what they were.
var sysctls = []string{
	"kernel/panic", "kernel/panic_on_oops", "vm/overcommit_memory", "vm/panic_on_oom",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
	"net/ipv4/conf/all/route_localnet", "net/netfilter/nf_conntrack_max", "net/ipv4/ip_forward",
}

// HostState is what the cluster may leave on the machine: the tests take it
// before and after and require them equal.
type HostState struct {
	Sysctls  map[string]string
	Chains   []string // "iptables filter KUBE-SERVICES", also ip6tables
	Rules    []string // "iptables nat -A OUTPUT ...", rules mentioning kube
	Links    []string
	Routes   []string
	Mounts   []string
	Netns    []string
	Cgroups  []string // the cluster's cgroup root, in every hierarchy
	CNICache []string
	BPFFS    []string // what is pinned at the top of /sys/fs/bpf
}

// Snapshot reads the host state that a cluster with cgroup root cgroupRoot
// touches.
func Snapshot(cgroupRoot string) (HostState, error) {
	s := HostState{Sysctls: map[string]string{}}
	for _, k := range sysctls {
		b, err := os.ReadFile("/proc/sys/" + k)
		if err == nil {
			s.Sysctls[k] = strings.TrimSpace(string(b))
		}
	}
	for _, tool := range []string{"iptables", "ip6tables"} {
		t, err := readTables(tool)
		if err != nil {
			return s, err
		}
		for table, tb := range t {
			for _, c := range tb.chains {
				s.Chains = append(s.Chains, tool+" "+table+" "+c)
			}
			for _, r := range tb.rules {
				if strings.Contains(strings.ToLower(r), "kube") {
					s.Rules = append(s.Rules, tool+" "+table+" "+r)
				}
			}
		}
	}
	var err error
	if s.Links, err = lines("ip", "-o", "link", "show"); err != nil {
		return s, err
	}
	for i, l := range s.Links { // drop counters and state: keep "N: name"
		if f := strings.Fields(l); len(f) > 1 {
			s.Links[i] = f[1]
		}
	}
	for _, fam := range []string{"-4", "-6"} {
		r, err := lines("ip", fam, "route", "show", "table", "all")
		if err != nil {
			return s, err
		}
		s.Routes = append(s.Routes, r...)
	}
	if s.Mounts, err = mountPoints(); err != nil {
		return s, err
	}
	s.Netns, _ = filepath.Glob("/run/netns/*")
	for _, h := range cgroupHierarchies() {
		if _, err := os.Stat(filepath.Join(h, cgroupRoot)); err == nil {
			s.Cgroups = append(s.Cgroups, filepath.Join(h, cgroupRoot))
		}
	}
	filepath.WalkDir("/var/lib/cni", func(p string, _ os.DirEntry, err error) error {
		if err == nil {
			s.CNICache = append(s.CNICache, p)
		}
		return nil
	})
	s.BPFFS, _ = filepath.Glob("/sys/fs/bpf/*")
	for _, l := range [][]string{s.Chains, s.Rules, s.Routes, s.Mounts} {
		sort.Strings(l)
	}
	return s, nil
}

// Diff lists what differs between two snapshots, one line each.
func Diff(before, after HostState) []string {
	var d []string
	for k, v := range before.Sysctls {
		if after.Sysctls[k] != v {
			d = append(d, fmt.Sprintf("sysctl %s: %s, was %s", k, after.Sysctls[k], v))
		}
	}
	set := func(what string, b, a []string) {
		for _, x := range a {
			if !slices.Contains(b, x) {
				d = append(d, what+" added: "+x)
			}
		}
		for _, x := range b {
			if !slices.Contains(a, x) {
				d = append(d, what+" removed: "+x)
			}
		}
	}
	set("iptables chain", before.Chains, after.Chains)
	set("iptables rule", before.Rules, after.Rules)
	set("link", before.Links, after.Links)
	set("route", before.Routes, after.Routes)
	set("mount", before.Mounts, after.Mounts)
	set("netns", before.Netns, after.Netns)
	set("cgroup", before.Cgroups, after.Cgroups)
	set("CNI cache", before.CNICache, after.CNICache)
	set("bpffs entry", before.BPFFS, after.BPFFS)
	return d
}

func lines(argv ...string) ([]string, error) {
	out, err := exec.Command(argv[0], argv[1:]...).Output()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", strings.Join(argv, " "), err)
	}
	var l []string
	for _, s := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if s != "" {
			l = append(l, s)
		}
	}
	return l, nil
}

type table struct {
	chains []string
	rules  []string // "-A CHAIN ..." as iptables-save prints them
}

// readTables parses `<tool>-save`: "*table", ":CHAIN policy", "-A ..." lines.
func readTables(tool string) (map[string]*table, error) {
	out, err := exec.Command(tool + "-save").Output()
	if err != nil {
		return nil, fmt.Errorf("%s-save (Debian package iptables): %w", tool, err)
	}
	t := map[string]*table{}
	var cur *table
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		l := sc.Text()
		switch {
		case strings.HasPrefix(l, "*"):
			cur = &table{}
			t[l[1:]] = cur
		case cur != nil && strings.HasPrefix(l, ":"):
			cur.chains = append(cur.chains, strings.Fields(l[1:])[0])
		case cur != nil && strings.HasPrefix(l, "-A "):
			cur.rules = append(cur.rules, l)
		}
	}
	return t, nil
}

// removeAddedChains deletes the chains that are in the tables now but were
// not in before, and the rules of older chains that jump to them: what the
// kubelet and kube-proxy added, and nothing else.
func removeAddedChains(tool string, before map[string]*table) error {
	now, err := readTables(tool)
	if err != nil {
		return err
	}
	var errs []string
	run := func(args ...string) {
		if out, err := exec.Command(tool, args...).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Sprintf("%s %s: %v: %s", tool, strings.Join(args, " "), err, bytes.TrimSpace(out)))
		}
	}
	for name, tb := range now {
		var old []string
		if b := before[name]; b != nil {
			old = b.chains
		}
		var added []string
		for _, c := range tb.chains {
			if !slices.Contains(old, c) {
				added = append(added, c)
			}
		}
		if len(added) == 0 {
			continue
		}
		for _, r := range tb.rules {
			f := strings.Fields(r)
			if len(f) < 2 || !slices.Contains(old, f[1]) {
				continue
			}
			for i := 0; i+1 < len(f); i++ {
				if (f[i] == "-j" || f[i] == "-g") && slices.Contains(added, f[i+1]) {
					run(append([]string{"-t", name, "-D"}, splitRule(r)[1:]...)...)
					break
				}
			}
		}
		for _, c := range added {
			run("-t", name, "-F", c)
		}
		for _, c := range added {
			run("-t", name, "-X", c)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("removing iptables chains: %s", strings.Join(errs, "; "))
	}
	return removeAddedTables(tool, before)
}

// builtinChains are the chains iptables makes with a table.
var builtinChains = []string{"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"}

// removeAddedTables deletes the tables that did not exist before and are
// empty now. With the nf_tables backend (Debian's default) a first rule
// creates its table with the built-in chains, which stay after the chains
// and rules are gone; iptables cannot delete a table, nft can.
func removeAddedTables(tool string, before map[string]*table) error {
	v, err := exec.Command(tool, "--version").Output()
	if err != nil || !strings.Contains(string(v), "nf_tables") {
		return nil // legacy backend: tables are kernel modules' and always exist
	}
	now, err := readTables(tool)
	if err != nil {
		return err
	}
	family := map[string]string{"iptables": "ip", "ip6tables": "ip6"}[tool]
	var errs []string
	for name, tb := range now {
		if before[name] != nil || len(tb.rules) > 0 {
			continue
		}
		if slices.ContainsFunc(tb.chains, func(c string) bool { return !slices.Contains(builtinChains, c) }) {
			continue
		}
		out, err := exec.Command("nft", "delete", "table", family, name).CombinedOutput()
		if err != nil {
			errs = append(errs, fmt.Sprintf("nft delete table %s %s (Debian package nftables): %v: %s", family, name, err, bytes.TrimSpace(out)))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("removing tables: %s", strings.Join(errs, "; "))
	}
	return nil
}

// splitRule splits an iptables-save rule into arguments, honouring the
// double quotes it puts around comments.
func splitRule(r string) []string {
	var args []string
	var cur strings.Builder
	in, have := false, false
	for i := 0; i < len(r); i++ {
		c := r[i]
		switch {
		case c == '\\' && in && i+1 < len(r):
			i++
			cur.WriteByte(r[i])
		case c == '"':
			in, have = !in, true
		case c == ' ' && !in:
			if have || cur.Len() > 0 {
				args = append(args, cur.String())
			}
			cur.Reset()
			have = false
		default:
			cur.WriteByte(c)
		}
	}
	if have || cur.Len() > 0 {
		args = append(args, cur.String())
	}
	return args
}

func mountPoints() ([]string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var m []string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 {
			m = append(m, f[4])
		}
	}
	return m, nil
}

// unmountUnder detaches every mount at or below one of dirs, deepest first.
func unmountUnder(dirs ...string) error {
	m, err := mountPoints()
	if err != nil {
		return err
	}
	var mine []string
	for _, p := range m {
		for _, d := range dirs {
			if p == d || strings.HasPrefix(p, d+"/") {
				mine = append(mine, p)
			}
		}
	}
	sort.Slice(mine, func(i, j int) bool { return len(mine[i]) > len(mine[j]) })
	var errs []string
	for _, p := range mine {
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
			errs = append(errs, fmt.Sprintf("%s: %v", p, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("unmounting: %s", strings.Join(errs, "; "))
	}
	return nil
}

// cgroupHierarchies lists the mounted cgroup hierarchies, v1 and v2.
func cgroupHierarchies() []string {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	var h []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		i := slices.Index(f, "-")
		if i < 0 || i+1 >= len(f) || (f[i+1] != "cgroup" && f[i+1] != "cgroup2") {
			continue
		}
		h = append(h, f[4])
	}
	return h
}
