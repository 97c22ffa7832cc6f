package deployments

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// The Dockerfile is checked by reading it (no Docker engine or registry here, and hadolint is
// not packaged for Debian or the Go proxy): the rules hadolint and the Docker docs give that
// matter for this image, and that its build runs the same `go build` as the Taskfile's build
// task (the README's `go tool -modfile=tools/go.mod task build`).

// instruction is one Dockerfile instruction with its continuation lines joined.
type instruction struct {
	cmd  string // upper case
	args string
	line int
}

func parseDockerfile(t *testing.T) []instruction {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var out []instruction
	var cur strings.Builder
	start := 0
	for i, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if cur.Len() > 0 && strings.HasPrefix(trimmed, "#") {
			continue // a comment inside a continued instruction
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		cur.WriteString(trimmed)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args), line: start})
		cur.Reset()
	}
	if cur.Len() > 0 {
		t.Fatal("Dockerfile ends inside a continued line")
	}
	return out
}

// stages splits the instructions at each FROM.
func stages(ins []instruction) [][]instruction {
	var out [][]instruction
	for _, in := range ins {
		if in.cmd == "FROM" {
			out = append(out, nil)
		}
		if len(out) > 0 {
			out[len(out)-1] = append(out[len(out)-1], in)
		}
	}
	return out
}

func execForm(t *testing.T, in instruction) []string {
	t.Helper()
	var v []string
	if err := json.Unmarshal([]byte(in.args), &v); err != nil {
		t.Errorf("line %d: %s is not in exec (JSON) form: %v", in.line, in.cmd, err)
	}
	return v
}

func TestDockerfile(t *testing.T) {
	ins := parseDockerfile(t)
	st := stages(ins)
	if len(st) < 2 {
		t.Fatalf("want a multi-stage build (build, runtime), got %d stage(s)", len(st))
	}
	if first := ins[0]; first.cmd != "FROM" {
		t.Errorf("line %d: %s before the first FROM", first.line, first.cmd)
	}
	goVersion := goModVersion(t)
	for _, s := range st {
		from := strings.Fields(s[0].args)
		image := from[0]
		name, tag, ok := strings.Cut(image, ":")
		if !ok || tag == "" || tag == "latest" || strings.Contains(image, "$") {
			t.Errorf("line %d: base image %q must be pinned to a version tag", s[0].line, image)
		}
		if name == "golang" && !strings.HasPrefix(tag, goVersion+"-") {
			t.Errorf("line %d: %s builds with another Go than go.mod's %s", s[0].line, image, goVersion)
		}
	}
	if rt := strings.Fields(st[len(st)-1][0].args)[0]; rt != "debian:bookworm-slim" {
		t.Errorf("runtime image %s, want debian:bookworm-slim (Debian's ffmpeg, glibc, bash for the healthcheck)", rt)
	}

	for _, in := range ins {
		switch in.cmd {
		case "ADD":
			t.Errorf("line %d: ADD (use COPY; never fetch URLs into an image): %s", in.line, in.args)
		case "MAINTAINER":
			t.Errorf("line %d: MAINTAINER is deprecated (use a LABEL)", in.line)
		case "RUN":
			checkRun(t, in)
		case "FROM", "WORKDIR", "COPY", "ENV", "ARG", "LABEL", "USER", "EXPOSE", "HEALTHCHECK", "ENTRYPOINT", "CMD":
		default:
			t.Errorf("line %d: unexpected instruction %s", in.line, in.cmd)
		}
		if in.cmd == "WORKDIR" && !strings.HasPrefix(in.args, "/") {
			t.Errorf("line %d: WORKDIR %s is not absolute", in.line, in.args)
		}
		if in.cmd == "COPY" && !strings.Contains(in.args, "--from=") && strings.Fields(in.args)[0] == "." && !fileExists(filepath.Join(repoRoot, ".dockerignore")) {
			t.Errorf("line %d: COPY . without a .dockerignore", in.line)
		}
	}

	// The final stage: non-root, the binary as the entrypoint, ports, health, labels.
	final := st[len(st)-1]
	get := func(cmd string) []instruction {
		var out []instruction
		for _, in := range final {
			if in.cmd == cmd {
				out = append(out, in)
			}
		}
		return out
	}
	users := get("USER")
	if len(users) == 0 {
		t.Error("the image runs as root: no USER")
	} else if u := strings.Split(users[len(users)-1].args, ":")[0]; u == "root" || u == "0" {
		t.Errorf("USER %s is root", users[len(users)-1].args)
	} else if !regexp.MustCompile(`^[1-9][0-9]*$`).MatchString(u) {
		t.Errorf("USER %s: give a numeric UID, so Kubernetes' runAsNonRoot can check it", u)
	}
	if ep := get("ENTRYPOINT"); len(ep) != 1 || !slices.Equal(execForm(t, ep[0]), []string{"gopcast"}) {
		t.Errorf("want ENTRYPOINT [\"gopcast\"] (the role is the first argument)")
	}
	if !slices.ContainsFunc(final, func(in instruction) bool {
		return in.cmd == "COPY" && strings.Contains(in.args, "--from=") && strings.HasSuffix(in.args, " /usr/local/bin/gopcast")
	}) {
		t.Error("the binary is not copied from the build stage to /usr/local/bin/gopcast")
	}
	var exposed []string
	for _, in := range get("EXPOSE") {
		exposed = append(exposed, strings.Fields(in.args)...)
	}
	for _, p := range []string{"1935", "8080"} {
		if !slices.Contains(exposed, p) && !slices.Contains(exposed, p+"/tcp") {
			t.Errorf("port %s not EXPOSEd (got %v)", p, exposed)
		}
	}
	labels := strings.Join(func() []string {
		var out []string
		for _, in := range get("LABEL") {
			out = append(out, in.args)
		}
		return out
	}(), " ")
	for _, l := range []string{"org.opencontainers.image.title", "org.opencontainers.image.source",
		"org.opencontainers.image.version", "org.opencontainers.image.revision", "org.opencontainers.image.description"} {
		if !strings.Contains(labels, l+"=") {
			t.Errorf("no OCI label %s", l)
		}
	}
	hc := get("HEALTHCHECK")
	if len(hc) != 1 {
		t.Fatalf("want one HEALTHCHECK in the final stage, got %d", len(hc))
	}
	_, cmdJSON, ok := strings.Cut(hc[0].args, "CMD ")
	if !ok {
		t.Fatalf("HEALTHCHECK without CMD: %s", hc[0].args)
	}
	checkHealthcheck(t, execForm(t, instruction{cmd: "HEALTHCHECK", args: cmdJSON, line: hc[0].line}))
}

func checkRun(t *testing.T, in instruction) {
	cmd := in.args
	if strings.Contains(cmd, "apt-get install") {
		switch {
		case !strings.Contains(cmd, "apt-get update"):
			t.Errorf("line %d: apt-get install without apt-get update in the same RUN (stale lists in a cached layer)", in.line)
		case !strings.Contains(cmd, "--no-install-recommends"):
			t.Errorf("line %d: apt-get install without --no-install-recommends", in.line)
		case !strings.Contains(cmd, " -y"):
			t.Errorf("line %d: apt-get install without -y", in.line)
		case !strings.Contains(cmd, "rm -rf /var/lib/apt/lists/*"):
			t.Errorf("line %d: apt lists not removed in the same RUN", in.line)
		}
		if strings.Contains(cmd, "apt-get upgrade") || strings.Contains(cmd, "dist-upgrade") {
			t.Errorf("line %d: upgrade in the image (pin the base image instead)", in.line)
		}
	}
	for _, bad := range []string{"curl ", "wget ", "sudo "} {
		if strings.Contains(cmd, bad) {
			t.Errorf("line %d: RUN uses %s", in.line, strings.TrimSpace(bad))
		}
	}
	if strings.Contains(cmd, "cd ") {
		t.Errorf("line %d: use WORKDIR instead of cd", in.line)
	}
}

// checkHealthcheck runs the HEALTHCHECK command as Docker would (exec form) against stand-ins
// for gopcast's /healthz: it must pass on 200 and fail on an error status or a closed port.
func checkHealthcheck(t *testing.T, argv []string) {
	if len(argv) == 0 {
		t.Fatal("empty HEALTHCHECK command")
	}
	if argv[0] != "bash" {
		t.Fatalf("HEALTHCHECK runs %s; the runtime image has bash, and no curl or wget", argv[0])
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatalf("bash is needed to run the HEALTHCHECK command: %v", err)
	}
	run := func(addr string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bash, argv[1:]...)
		cmd.Env = []string{"PATH=/usr/bin:/bin", "GOPCAST_HTTP_ADDR=" + addr}
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		if ctx.Err() != nil {
			t.Errorf("the healthcheck against %s hung", addr)
		}
		return err
	}
	serve := func(status int) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/healthz" {
				http.NotFound(w, r)
				return
			}
			w.WriteHeader(status)
		}))
		t.Cleanup(srv.Close)
		_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
		return ":" + port // the form GOPCAST_HTTP_ADDR takes in the image (":8080")
	}
	if err := run(serve(http.StatusOK)); err != nil {
		t.Errorf("healthcheck fails against a healthy /healthz: %v", err)
	}
	if err := run(serve(http.StatusServiceUnavailable)); err == nil {
		t.Errorf("healthcheck passes against a /healthz answering 503")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	if err := run(closed); err == nil {
		t.Errorf("healthcheck passes with nothing listening")
	}
}

// TestDockerBuildMatchesTaskfile: the image's binary is built like the README's
// (`go tool -modfile=tools/go.mod task build`): the same package and the same flags, except for
// the output path and -ldflags "-s -w", which only drops the symbol table and DWARF (a smaller
// image; the same program). If the Taskfile adopts -ldflags "-s -w" too, nothing here changes.
func TestDockerBuildMatchesTaskfile(t *testing.T) {
	var build []string
	for _, in := range parseDockerfile(t) {
		if in.cmd == "RUN" && strings.Contains(in.args, "go build") {
			if build != nil {
				t.Fatal("more than one go build in the Dockerfile")
			}
			_, cmd, _ := strings.Cut(in.args, "go build")
			build = shellWords(t, "go build"+cmd)
		}
	}
	if build == nil {
		t.Fatal("no go build in the Dockerfile")
	}
	b, err := os.ReadFile(filepath.Join(repoRoot, "Taskfile.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var tf struct {
		Vars  map[string]any `yaml:"vars"`
		Tasks map[string]struct {
			Cmds []any `yaml:"cmds"`
		} `yaml:"tasks"`
	}
	if err := yaml.Unmarshal(b, &tf); err != nil {
		t.Fatal(err)
	}
	var task []string
	for _, c := range tf.Tasks["build"].Cmds {
		if s, ok := c.(string); ok && strings.HasPrefix(s, "go build") {
			task = shellWords(t, s)
		}
	}
	if task == nil {
		t.Fatal("the Taskfile's build task has no go build")
	}
	readme, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(readme, []byte("go tool -modfile=tools/go.mod task")) {
		t.Error("the README no longer builds through go tool -modfile=tools/go.mod task")
	}
	dPkg, dFlags := splitBuild(build)
	tPkg, tFlags := splitBuild(task)
	if dPkg != tPkg {
		t.Errorf("the Dockerfile builds %s, the Taskfile %s", dPkg, tPkg)
	}
	allowed := map[string]bool{`-ldflags=-s -w`: true}
	for _, f := range dFlags {
		if !slices.Contains(tFlags, f) && !allowed[f] {
			t.Errorf("the Dockerfile's go build has %s; the Taskfile's does not (%v)", f, tFlags)
		}
	}
	for _, f := range tFlags {
		if !slices.Contains(dFlags, f) {
			t.Errorf("the Taskfile's go build has %s; the Dockerfile's does not (%v)", f, dFlags)
		}
	}
}

// splitBuild returns a go build command's package and its flags as "-name" or "-name=value",
// without -o (the output path differs by design).
func splitBuild(words []string) (pkg string, flags []string) {
	valued := map[string]bool{"-o": true, "-ldflags": true, "-gcflags": true, "-tags": true, "-mod": true, "-p": true}
	for i := 2; i < len(words); i++ {
		w := strings.Replace(words[i], "--", "-", 1)
		switch {
		case !strings.HasPrefix(w, "-"):
			pkg = w
		case strings.Contains(w, "="):
			if !strings.HasPrefix(w, "-o=") {
				flags = append(flags, w)
			}
		case valued[w] && i+1 < len(words):
			if w != "-o" {
				flags = append(flags, w+"="+words[i+1])
			}
			i++
		default:
			flags = append(flags, w)
		}
	}
	return pkg, flags
}

// shellWords splits a command line on blanks, honouring single and double quotes (all a go
// build line here needs).
func shellWords(t *testing.T, s string) []string {
	var out []string
	var cur strings.Builder
	var quote rune
	inWord := false
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '"' || r == '\'':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		t.Fatalf("unbalanced quote in %q", s)
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out
}

func goModVersion(t *testing.T) string {
	b, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	return string(m[1])
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// TestDockerignore: the build context keeps everything `go build ./cmd/gopcast` reads (go.mod,
// go.sum, every Go file of the module's packages it imports, every file they embed) and leaves
// out the rest that matters (the .git directory, local state).
func TestDockerignore(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "!") {
			t.Fatalf(".dockerignore: exceptions (%s) are not supported by this check", line)
		}
		patterns = append(patterns, strings.TrimPrefix(path.Clean(line), "/"))
	}
	ignored := func(rel string) string {
		parts := strings.Split(rel, "/")
		for _, p := range patterns {
			for i := 1; i <= len(parts); i++ { // the path and every directory above it
				prefix := strings.Join(parts[:i], "/")
				if ok, _ := path.Match(p, prefix); ok {
					return p
				}
				if rest, found := strings.CutPrefix(p, "**/"); found {
					for j := 0; j < i; j++ {
						if ok, _ := path.Match(rest, strings.Join(parts[j:i], "/")); ok {
							return p
						}
					}
				}
			}
		}
		return ""
	}
	cmd := exec.Command("go", "list", "-deps", "-f",
		`{{if and .Module .Module.Main}}{{$d := .Dir}}{{range .GoFiles}}{{$d}}/{{.}}{{"\n"}}{{end}}{{range .EmbedFiles}}{{$d}}/{{.}}{{"\n"}}{{end}}{{end}}`,
		"./cmd/gopcast")
	cmd.Dir = repoRoot
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	root := mustAbs(t, repoRoot)
	needed := []string{"go.mod", "go.sum"}
	for _, f := range strings.Fields(string(out)) {
		rel, err := filepath.Rel(root, f)
		if err != nil {
			t.Fatal(err)
		}
		needed = append(needed, filepath.ToSlash(rel))
	}
	if len(needed) < 20 {
		t.Fatalf("go list found only %d files", len(needed))
	}
	for _, f := range needed {
		if p := ignored(f); p != "" {
			t.Errorf(".dockerignore pattern %q leaves out %s, which the build needs", p, f)
		}
	}
	for _, f := range []string{".git/HEAD", "gopcast-data/api-token", "bin/gopcast", "deployments/k8s/base/kustomization.yaml"} {
		if ignored(f) == "" {
			t.Errorf(".dockerignore keeps %s in the build context", f)
		}
	}
}
