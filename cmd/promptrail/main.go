// Command promptrail is the one binary of promptrail: node agent, all-in-one
// host mode and maintenance commands. Run `promptrail help`.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/promptrail/promptrail/cmd/promptrail/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := cli.Run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "promptrail:", err)
		os.Exit(1)
	}
}
