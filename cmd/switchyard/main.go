// Command switchyard is the Switchyard control plane: allocator agents, the
// operator CLI, a dev cluster and (later) media nodes and the load generator.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRootCmd()
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "switchyard: %v\n", err)
		var ue *usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(os.Stderr, "run '%s --help' for usage\n", ue.cmd)
			os.Exit(2)
		}
		os.Exit(1)
	}
}
