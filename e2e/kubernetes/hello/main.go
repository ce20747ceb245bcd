// Command hello is the test workload of the Kubernetes e2e tests: run in a
// pod, it prints the token it was given with the pod's name (from the
// downward API) and namespace (from its service account mount), which only
// a real pod of the cluster can know, and exits 0.
package main

import (
	"fmt"
	"os"
	"strings"
)

func main() {
	ns, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
	if err != nil {
		fmt.Fprintln(os.Stderr, "no service account mount:", err)
		os.Exit(1)
	}
	fmt.Printf("hello %s pod=%s namespace=%s\n", strings.Join(os.Args[1:], " "), os.Getenv("POD_NAME"), ns)
}
