package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"

	"golang.org/x/term"

	"github.com/gopcast/gopcast/internal/cli"
)

const usage = `gopcast: live RTMP in, adaptive HLS out of S3-compatible storage.

Usage:
  gopcast ROLE [flags]

Roles:
  all         every role in one process, with an embedded NATS server and local storage
              unless --nats-url / --s3-endpoint are given
  ingest      RTMP server: checks stream keys, cuts GOP-aligned chunks onto JetStream
  transcoder  encodes chunks into the ladder with ffmpeg
  packager    writes CMAF segments and HLS playlists to storage
  api         management API (streams and stream keys)
  nats        a standalone JetStream server (the one all embeds) for split-role setups
              without a NATS deployment: --nats-listen, --data-dir

Operator commands:
  streams     create, list, get, update, rotate-key, delete streams and list sessions and
              recordings through the API (gopcast streams -h)

Run "gopcast ROLE -h" for the flags; each flag FOO-BAR can also be set as GOPCAST_FOO_BAR.
`

// Main runs gopcast with command-line args and returns the exit code.
func Main(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	role := args[0]
	if role == "streams" {
		return cli.Streams(ctx, args[1:], getenv, stdout, stderr)
	}
	if !slices.Contains(Roles, role) {
		fmt.Fprintf(stderr, "gopcast: unknown role %q\n\n%s", role, usage)
		return 2
	}
	cfg, err := Parse(role, args[1:], getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "gopcast %s: configuration: %v\n", role, err)
		return 2
	}
	log := NewLogger(cfg, stderr)
	a := New(cfg, log)
	if cfg.Role == "all" {
		go a.welcome(ctx, stdout)
	}
	if err := a.Run(ctx); err != nil {
		log.Error("gopcast stopped", "err", err)
		return 1
	}
	log.Info("gopcast stopped cleanly")
	return 0
}

// NewLogger builds the process logger: text on a terminal, JSON otherwise, unless configured.
func NewLogger(cfg *Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(strings.ToUpper(cfg.LogLevel)))
	opts := &slog.HandlerOptions{Level: level}
	format := cfg.LogFormat
	if format == "auto" {
		format = "json"
		if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			format = "text"
		}
	}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
