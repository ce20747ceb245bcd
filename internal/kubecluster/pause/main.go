// Command pause is the sandbox process of the e2e cluster's pods: it holds
// the pod's namespaces, reaps the zombies of processes that share its PID
// namespace, and exits on SIGTERM or SIGINT. Built static and put in an
// image from scratch, it replaces registry.k8s.io/pause, which the tests
// never pull.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
