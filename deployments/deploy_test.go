package deployments

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/gopcast/gopcast/internal/app"
)

// repoRoot is the repository's top directory (tests run in deployments/).
const repoRoot = ".."

// gopcastVars is every environment variable gopcast reads, found by asking the binary's own
// configuration code: app.Parse looks up the GOPCAST_* variable of each flag it defines before
// it parses the arguments, so a recording getenv sees exactly the names the process would read,
// whatever flags are added later. "-h" then stops Parse before it validates anything.
var gopcastVars = sync.OnceValues(func() (map[string]bool, error) {
	vars := map[string]bool{}
	for _, role := range app.Roles {
		getenv := func(name string) string { vars[name] = true; return "" }
		if _, err := app.Parse(role, []string{"-h"}, getenv, io.Discard); !errors.Is(err, flag.ErrHelp) {
			return nil, errors.New("app.Parse(" + role + ", -h) did not answer with flag.ErrHelp")
		}
	}
	return vars, nil
})

func readVars(t *testing.T) map[string]bool {
	t.Helper()
	vars, err := gopcastVars()
	if err != nil {
		t.Fatal(err)
	}
	if len(vars) < 10 || !vars["GOPCAST_NATS_URL"] || !vars["GOPCAST_S3_ENDPOINT"] {
		t.Fatalf("gopcast reads suspiciously few variables: %v", sorted(vars))
	}
	return vars
}

// deployedRoles are the roles a deployment runs as separate processes ("all" is for a laptop).
var deployedRoles = []string{"api", "ingest", "packager", "transcoder"}

// checkRole reports whether args start with a real gopcast role other than "all".
func checkRole(t *testing.T, where string, args []string) string {
	t.Helper()
	if len(args) == 0 {
		t.Errorf("%s: no role given (the image's default is \"all\", which is not for a split deployment)", where)
		return ""
	}
	role := args[0]
	switch {
	case !slices.Contains(app.Roles, role):
		t.Errorf("%s: %q is not a gopcast role (roles: %v)", where, role, app.Roles)
	case role == "all":
		t.Errorf("%s: runs \"all\"; a deployment runs each role on its own", where)
	}
	if len(args) > 1 {
		t.Errorf("%s: extra arguments %q: settings belong in GOPCAST_* variables, where these tests check them", where, args[1:])
	}
	return role
}

// checkEnv checks one process's environment: every GOPCAST_* name is one gopcast reads, and
// the whole configuration passes gopcast's own validation for the role.
func checkEnv(t *testing.T, where, role string, env map[string]string) {
	t.Helper()
	vars := readVars(t)
	for name := range env {
		if strings.HasPrefix(name, "GOPCAST_") && !vars[name] {
			t.Errorf("%s: sets %s, which gopcast does not read (it reads %v)", where, name, sorted(vars))
		}
	}
	if role == "" {
		return
	}
	if _, err := app.Parse(role, nil, func(k string) string { return env[k] }, io.Discard); err != nil {
		t.Errorf("%s: gopcast %s refuses this configuration: %v", where, role, err)
	}
}

// TestGopcastVarsMatchFlags cross-checks the recorded names against the flag set itself: each
// variable is GOPCAST_ + a flag name, as the README's configuration table says.
func TestGopcastVarsMatchFlags(t *testing.T) {
	vars := readVars(t)
	for _, name := range []string{"nats-url", "s3-endpoint", "s3-bucket", "s3-region", "s3-access-key",
		"s3-secret-key", "public-base-url", "rtmp-addr", "http-addr", "api-token", "data-dir", "profile"} {
		if !vars[app.EnvName(name)] {
			t.Errorf("the design's setting --%s (%s) is not read", name, app.EnvName(name))
		}
	}
}

// TestBenchScript keeps the cost benchmark behind docs/scaling.md runnable: present, executable,
// and using GOPCAST_* names gopcast reads.
func TestBenchScript(t *testing.T) {
	path := filepath.Join("bench", "roles.sh")
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode()&0o111 == 0 {
		t.Errorf("%s is not executable", path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	vars := readVars(t)
	for _, f := range strings.FieldsFunc(string(b), func(r rune) bool {
		return !(r == '_' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
	}) {
		if strings.HasPrefix(f, "GOPCAST_") && f != "GOPCAST_" && !vars[f] {
			t.Errorf("%s uses %s, which gopcast does not read", path, f)
		}
	}
}

func sorted[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
