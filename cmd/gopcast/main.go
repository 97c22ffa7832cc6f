// Command gopcast runs any gopcast role, or all of them in one process:
//
//	gopcast ingest | transcoder | packager | api | all [flags]
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/gopcast/gopcast/internal/app"
)

func main() {
	os.Exit(run())
}

func run() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		// A second signal means "now": the first one started a graceful shutdown.
		<-ctx.Done()
		stop()
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
		<-ch
		fmt.Fprintln(os.Stderr, "gopcast: second signal, exiting now")
		os.Exit(130)
	}()
	return app.Main(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
}
