// Package cli is gopcast's operator command line: "gopcast streams ..." manages streams through
// the management API over HTTP, as any other client of the API would.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1 // the API refused or failed, or could not be reached
	exitUsage = 2 // the command line is wrong
)

const defaultAPIURL = "http://localhost:8080"

const streamsUsage = `Manage live streams through the gopcast management API.

Usage:
  gopcast streams [global flags] COMMAND [flags] [ID]

Commands:
  create       create a stream and show its stream key (shown only once)
  list         list streams
  get          show a stream, with its live session and ingest health
  update       change a stream's name, profile or recording
  rotate-key   give a stream a new stream key, revoking the old one
  delete       delete a stream and revoke its key
  sessions     list a stream's publish sessions
  recordings   list a stream's recordings

Global flags (before or after the command):
  --api-url URL       the API's address (env GOPCAST_API_URL; default ` + defaultAPIURL + `)
  --api-token TOKEN   bearer token (env GOPCAST_API_TOKEN; prefer the env var, as
                      command lines are visible to other users of the machine)
  -o, --output FMT    table or json (default table); json prints the API's JSON
  --timeout D         give up on a request after D (default 30s)

Run "gopcast streams COMMAND -h" for a command's flags.
Exit status: 0 done, 1 the API refused or failed, 2 bad command line.
`

type command struct {
	name  string
	usage string
	run   func(ctx context.Context, c *cli, args []string) int
}

var commands = []command{
	{"create", createUsage, runCreate},
	{"list", listUsage, runList},
	{"get", getUsage, runGet},
	{"update", updateUsage, runUpdate},
	{"rotate-key", rotateUsage, runRotate},
	{"delete", deleteUsage, runDelete},
	{"sessions", sessionsUsage, runSessions},
	{"recordings", recordingsUsage, runRecordings},
}

func lookup(name string) *command {
	for i := range commands {
		if commands[i].name == name {
			return &commands[i]
		}
	}
	return nil
}

// Streams runs "gopcast streams ARGS..." (args are the words after "streams") and returns the
// process exit code: 0 done, 1 the API refused or failed, 2 usage error.
func Streams(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	c := &cli{stdout: stdout, stderr: stderr, getenv: getenv}
	fs := c.flagSet("")
	rest, err := parseFlags(fs, args, false)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, streamsUsage)
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "gopcast streams: %v\n\n%s", err, streamsUsage)
		return exitUsage
	}
	if len(rest) == 0 {
		fmt.Fprint(stderr, streamsUsage)
		return exitUsage
	}
	name := rest[0]
	if name == "help" {
		if len(rest) > 1 {
			if cmd := lookup(rest[1]); cmd != nil {
				fmt.Fprint(stdout, cmd.usage)
				return exitOK
			}
			fmt.Fprintf(stderr, "gopcast streams: unknown command %q\n\n%s", rest[1], streamsUsage)
			return exitUsage
		}
		fmt.Fprint(stdout, streamsUsage)
		return exitOK
	}
	cmd := lookup(name)
	if cmd == nil {
		fmt.Fprintf(stderr, "gopcast streams: unknown command %q\n\n%s", name, streamsUsage)
		return exitUsage
	}
	c.cmd = cmd
	return cmd.run(ctx, c, rest[1:])
}

// cli is one invocation: its output, its global settings and the command running.
type cli struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	cmd            *command

	apiURL  string
	token   string
	output  string
	timeout time.Duration
}

// flagSet returns a flag set holding the global flags. Each parse keeps what an earlier one
// set, so global flags work before and after the command name.
func (c *cli) flagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // usage is printed by the caller, to the right stream
	fs.StringVar(&c.apiURL, "api-url", c.apiURL, "")
	fs.StringVar(&c.token, "api-token", c.token, "")
	fs.StringVar(&c.output, "o", c.output, "")
	fs.StringVar(&c.output, "output", c.output, "")
	fs.DurationVar(&c.timeout, "timeout", c.timeout, "")
	return fs
}

// parseFlags parses fs from args. With interleave, flags may come after positional arguments
// (as in "get ID -o json") and all positional arguments are returned; without it, parsing stops
// at the first positional argument (the command name), which is returned with what follows.
// "--" ends the flags.
func parseFlags(fs *flag.FlagSet, args []string, interleave bool) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" && !takesValue(fs, args[:n-1]) {
			return append(pos, rest...), nil
		}
		if !interleave || len(rest) == 0 {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// takesValue reports whether the last of args is a flag whose value is the next argument, so
// that a "--" after it is that value rather than the end of the flags.
func takesValue(fs *flag.FlagSet, args []string) bool {
	if len(args) == 0 {
		return false
	}
	last := args[len(args)-1]
	if !strings.HasPrefix(last, "-") || strings.Contains(last, "=") || last == "--" {
		return false
	}
	f := fs.Lookup(strings.TrimLeft(last, "-"))
	if f == nil {
		return false
	}
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return !ok || !b.IsBoolFlag()
}

// usageError reports a bad command line for the running command.
func (c *cli) usageError(format string, a ...any) int {
	fmt.Fprintf(c.stderr, "gopcast streams %s: %s\nRun \"gopcast streams %s -h\" for usage.\n", c.cmd.name, fmt.Sprintf(format, a...), c.cmd.name)
	return exitUsage
}

// parse parses a command's flags, wherever they are among its arguments, checks the global
// settings, and returns the positional arguments. On a help request or an error it returns
// the exit code to end with.
func (c *cli) parse(fs *flag.FlagSet, args []string) ([]string, int, bool) {
	pos, err := parseFlags(fs, args, true)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(c.stdout, c.cmd.usage)
		return nil, exitOK, false
	}
	if err != nil {
		return nil, c.usageError("%v", err), false
	}
	if code, ok := c.settle(); !ok {
		return nil, code, false
	}
	return pos, 0, true
}

// settle fills the global settings from the environment and defaults, and checks them.
func (c *cli) settle() (int, bool) {
	if c.apiURL == "" {
		c.apiURL = c.getenv("GOPCAST_API_URL")
	}
	if c.apiURL == "" {
		c.apiURL = defaultAPIURL
	}
	u, err := url.Parse(c.apiURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return c.usageError("--api-url %q is not an http(s) URL like %s", c.apiURL, defaultAPIURL), false
	}
	c.apiURL = strings.TrimRight(c.apiURL, "/")
	if c.token == "" {
		c.token = strings.TrimSpace(c.getenv("GOPCAST_API_TOKEN"))
	}
	if c.token == "" {
		return c.usageError("no API token: set GOPCAST_API_TOKEN (or --api-token)"), false
	}
	switch c.output {
	case "":
		c.output = "table"
	case "table", "json":
	default:
		return c.usageError("-o %q: want table or json", c.output), false
	}
	if c.timeout == 0 {
		c.timeout = 30 * time.Second
	}
	if c.timeout < 0 {
		return c.usageError("--timeout must be positive"), false
	}
	return 0, true
}

// oneID checks that the positional arguments are exactly a stream id.
func (c *cli) oneID(pos []string) (string, int, bool) {
	switch {
	case len(pos) == 0:
		return "", c.usageError("give the stream's ID"), false
	case len(pos) > 1:
		if c.cmd.name == "update" && (pos[1] == "true" || pos[1] == "false") {
			return "", c.usageError("unexpected argument %q (write --record=%s)", pos[1], pos[1]), false
		}
		return "", c.usageError("unexpected argument %q", pos[1]), false
	case pos[0] == "":
		return "", c.usageError("the stream ID is empty"), false
	}
	return pos[0], 0, true
}

func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

const createUsage = `Create a stream.

Usage:
  gopcast streams create --name NAME [--profile PROFILE] [--record]

Prints the stream with its stream key and publish URL. The key is shown only this once (the
server keeps only a hash of it): store it now, or rotate it later with "rotate-key".

Flags:
  --name NAME         name for people (required): 1-128 letters, digits, spaces or _.:()'&,+-
  --profile PROFILE   transcoding ladder: default, hd or passthrough (default: the server's)
  --record            keep each publish session as a recording
` + globalsHelp

const listUsage = `List streams, oldest first.

Usage:
  gopcast streams list [--limit N] [--all] [--cursor CURSOR]

Flags:
  --limit N           streams per page, 1-100 (default 20, or 100 with --all)
  --all               follow the pages to the end and list every stream
  --cursor CURSOR     start after this cursor (the next_cursor of an earlier page)
` + globalsHelp

const getUsage = `Show a stream: its settings, playback URLs, and while it is live, its session and the
health of the incoming media (codecs, resolution, bitrate, keyframe interval, warnings).

Usage:
  gopcast streams get ID
` + globalsHelp

const updateUsage = `Change a stream's settings. Only the flags given are changed; profile and recording
apply from the stream's next publish session.

Usage:
  gopcast streams update ID [--name NAME] [--profile PROFILE] [--record=true|false]

Flags:
  --name NAME         a new name
  --profile PROFILE   a new transcoding ladder: default, hd or passthrough
  --record=BOOL       record publish sessions, or stop (write --record=false, with the =)
` + globalsHelp

const rotateUsage = `Give a stream a new stream key. The old key stops working at once and a publisher using
it is disconnected. The new key is shown only this once.

Usage:
  gopcast streams rotate-key ID
` + globalsHelp

const deleteUsage = `Delete a stream: its key is revoked, a live publisher is disconnected, and its session
history is deleted. Media already in storage is left alone.

Usage:
  gopcast streams delete ID
` + globalsHelp

const sessionsUsage = `List a stream's publish sessions, newest first.

Usage:
  gopcast streams sessions ID [--limit N]

Flags:
  --limit N           the most sessions to list, 1-500 (default 50)
` + globalsHelp

const recordingsUsage = `List a stream's recordings, newest first, with their playback and download URLs.

Usage:
  gopcast streams recordings ID
` + globalsHelp

const globalsHelp = `
Global flags:
  --api-url URL       the API's address (env GOPCAST_API_URL; default ` + defaultAPIURL + `)
  --api-token TOKEN   bearer token (env GOPCAST_API_TOKEN)
  -o, --output FMT    table or json (default table)
  --timeout D         give up on a request after D (default 30s)
`

func runCreate(ctx context.Context, c *cli, args []string) int {
	fs := c.flagSet("create")
	name := fs.String("name", "", "")
	profile := fs.String("profile", "", "")
	record := fs.Bool("record", false, "")
	pos, code, ok := c.parse(fs, args)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		return c.usageError("unexpected argument %q (the name goes in --name)", pos[0])
	}
	if strings.TrimSpace(*name) == "" {
		return c.usageError("--name is required")
	}
	body := map[string]any{"name": *name}
	if isSet(fs, "profile") {
		body["profile"] = *profile
	}
	if isSet(fs, "record") {
		body["record"] = *record
	}
	raw, err := c.call(ctx, "POST", "/v1/streams", nil, body)
	if err != nil {
		return c.fail(err)
	}
	return c.printStream(raw, "Stream created.", keyNoteCreate)
}

func runList(ctx context.Context, c *cli, args []string) int {
	fs := c.flagSet("list")
	limit := fs.Int("limit", 0, "")
	all := fs.Bool("all", false, "")
	cursor := fs.String("cursor", "", "")
	pos, code, ok := c.parse(fs, args)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		return c.usageError("unexpected argument %q", pos[0])
	}
	if isSet(fs, "limit") && *limit <= 0 {
		return c.usageError("--limit must be at least 1")
	}
	if *all && *limit == 0 {
		*limit = 100
	}
	var pages []streamPage
	var raw []byte
	seen := map[string]bool{}
	for {
		q := url.Values{}
		if *limit > 0 {
			q.Set("limit", strconv.Itoa(*limit))
		}
		if *cursor != "" {
			q.Set("cursor", *cursor)
		}
		var err error
		raw, err = c.call(ctx, "GET", "/v1/streams", q, nil)
		if err != nil {
			return c.fail(err)
		}
		p := streamPage{raw: raw}
		if err := decode(raw, &p); err != nil {
			return c.fail(err)
		}
		pages = append(pages, p)
		if !*all || p.NextCursor == "" {
			break
		}
		if seen[p.NextCursor] {
			return c.fail(fmt.Errorf("the API returned cursor %q twice; stopping", p.NextCursor))
		}
		seen[p.NextCursor] = true
		*cursor = p.NextCursor
	}
	if c.output == "json" {
		if !*all {
			return c.printJSON(raw)
		}
		return c.printJSON(joinPages(pages))
	}
	var list []stream
	for _, p := range pages {
		list = append(list, p.Streams...)
	}
	c.printStreamTable(list)
	if last := pages[len(pages)-1]; !*all && last.NextCursor != "" {
		fmt.Fprintf(c.stderr, "More streams follow: add --all, or --cursor %s for the next page.\n", last.NextCursor)
	}
	return exitOK
}

func runGet(ctx context.Context, c *cli, args []string) int {
	fs := c.flagSet("get")
	pos, code, ok := c.parse(fs, args)
	if !ok {
		return code
	}
	id, code, ok := c.oneID(pos)
	if !ok {
		return code
	}
	raw, err := c.call(ctx, "GET", "/v1/streams/"+url.PathEscape(id), nil, nil)
	if err != nil {
		return c.fail(err)
	}
	return c.printStream(raw, "", "")
}

func runUpdate(ctx context.Context, c *cli, args []string) int {
	fs := c.flagSet("update")
	name := fs.String("name", "", "")
	profile := fs.String("profile", "", "")
	record := fs.Bool("record", false, "")
	pos, code, ok := c.parse(fs, args)
	if !ok {
		return code
	}
	id, code, ok := c.oneID(pos)
	if !ok {
		return code
	}
	body := map[string]any{}
	if isSet(fs, "name") {
		body["name"] = *name
	}
	if isSet(fs, "profile") {
		body["profile"] = *profile
	}
	if isSet(fs, "record") {
		body["record"] = *record
	}
	if len(body) == 0 {
		return c.usageError("nothing to change: give --name, --profile or --record=true|false")
	}
	raw, err := c.call(ctx, "PATCH", "/v1/streams/"+url.PathEscape(id), nil, body)
	if err != nil {
		return c.fail(err)
	}
	return c.printStream(raw, "Stream updated.", "")
}

func runRotate(ctx context.Context, c *cli, args []string) int {
	fs := c.flagSet("rotate-key")
	pos, code, ok := c.parse(fs, args)
	if !ok {
		return code
	}
	id, code, ok := c.oneID(pos)
	if !ok {
		return code
	}
	raw, err := c.call(ctx, "POST", "/v1/streams/"+url.PathEscape(id)+"/rotate-key", nil, nil)
	if err != nil {
		return c.fail(err)
	}
	return c.printStream(raw, "Stream key rotated.", keyNoteRotate)
}

func runDelete(ctx context.Context, c *cli, args []string) int {
	fs := c.flagSet("delete")
	pos, code, ok := c.parse(fs, args)
	if !ok {
		return code
	}
	id, code, ok := c.oneID(pos)
	if !ok {
		return code
	}
	if _, err := c.call(ctx, "DELETE", "/v1/streams/"+url.PathEscape(id), nil, nil); err != nil {
		return c.fail(err)
	}
	if c.output == "table" {
		fmt.Fprintf(c.stdout, "Stream %s deleted.\n", id)
	}
	return exitOK
}

func runSessions(ctx context.Context, c *cli, args []string) int {
	fs := c.flagSet("sessions")
	limit := fs.Int("limit", 0, "")
	pos, code, ok := c.parse(fs, args)
	if !ok {
		return code
	}
	id, code, ok := c.oneID(pos)
	if !ok {
		return code
	}
	if isSet(fs, "limit") && *limit <= 0 {
		return c.usageError("--limit must be at least 1")
	}
	q := url.Values{}
	if *limit > 0 {
		q.Set("limit", strconv.Itoa(*limit))
	}
	raw, err := c.call(ctx, "GET", "/v1/streams/"+url.PathEscape(id)+"/sessions", q, nil)
	if err != nil {
		return c.fail(err)
	}
	if c.output == "json" {
		return c.printJSON(raw)
	}
	var out struct {
		Sessions []session `json:"sessions"`
	}
	if err := decode(raw, &out); err != nil {
		return c.fail(err)
	}
	c.printSessionTable(out.Sessions)
	return exitOK
}

func runRecordings(ctx context.Context, c *cli, args []string) int {
	fs := c.flagSet("recordings")
	pos, code, ok := c.parse(fs, args)
	if !ok {
		return code
	}
	id, code, ok := c.oneID(pos)
	if !ok {
		return code
	}
	raw, err := c.call(ctx, "GET", "/v1/streams/"+url.PathEscape(id)+"/recordings", nil, nil)
	if err != nil {
		return c.fail(err)
	}
	if c.output == "json" {
		return c.printJSON(raw)
	}
	var out struct {
		Recordings []recording `json:"recordings"`
	}
	if err := decode(raw, &out); err != nil {
		return c.fail(err)
	}
	c.printRecordingTable(out.Recordings)
	return exitOK
}
