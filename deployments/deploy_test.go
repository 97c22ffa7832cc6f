package deployments

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"regexp"
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

// mediaRoles are the roles that write media to the bucket: the ingest (each session's source
// video and audio segments), the transcoder (the ladder's rungs) and the packager (init
// segments, playlists, manifests, recordings). With GOPCAST_S3_ENDPOINT empty gopcast stores
// media under --data-dir, which is right for "all" and wrong for any of these on its own: its
// part of every stream would sit on its own disk, where no player looks, and gopcast's
// validation cannot tell (it does not know the process is one of several).
var mediaRoles = []string{"ingest", "transcoder", "packager"}

// profileRoles read GOPCAST_PROFILE, the ladder of streams that name none: the api reports it,
// the ingest decides from it whether a session has rungs to encode, the transcoder encodes them.
var profileRoles = []string{"api", "ingest", "transcoder"}

// checkAgreement checks what the processes of one deployment must agree on, given each role's
// environment (role → variables) and reading it as gopcast does: every role that writes media
// has the storage settings, all of them the same bucket with the same credentials, and every
// role that reads the profile reads the same one.
func checkAgreement(t *testing.T, where string, envs map[string]map[string]string) {
	t.Helper()
	cfgs := map[string]*app.Config{}
	for role, env := range envs {
		// A configuration gopcast refuses is reported by checkEnv; it has nothing to compare.
		if c, err := app.Parse(role, nil, func(k string) string { return env[k] }, io.Discard); err == nil {
			cfgs[role] = c
		}
	}
	var ref *app.Config
	for _, role := range mediaRoles {
		c, ok := cfgs[role]
		switch {
		case !ok:
			continue
		case c.S3Endpoint == "" || c.S3Bucket == "":
			t.Errorf("%s: %s writes media but has no GOPCAST_S3_ENDPOINT and GOPCAST_S3_BUCKET: it would write to its own --data-dir, where no player looks", where, role)
			continue
		case ref == nil:
			ref = c
			continue
		}
		if c.S3Endpoint != ref.S3Endpoint || c.S3Bucket != ref.S3Bucket || c.S3Region != ref.S3Region {
			t.Errorf("%s: %s writes to %s/%s (%s), the %s to %s/%s (%s): every role's media must land in one bucket",
				where, role, c.S3Endpoint, c.S3Bucket, c.S3Region, ref.Role, ref.S3Endpoint, ref.S3Bucket, ref.S3Region)
		}
		// Compared, never printed: they are credentials.
		if c.S3AccessKey != ref.S3AccessKey || c.S3SecretKey != ref.S3SecretKey {
			t.Errorf("%s: %s's S3 keys (GOPCAST_S3_ACCESS_KEY, GOPCAST_S3_SECRET_KEY) are not the %s's", where, role, ref.Role)
		}
	}
	var prof *app.Config
	for _, role := range profileRoles {
		c, ok := cfgs[role]
		switch {
		case !ok:
		case prof == nil:
			prof = c
		case c.Profile != prof.Profile:
			t.Errorf("%s: %s's GOPCAST_PROFILE is %q, the %s's %q: the api, ingest and transcoder must agree on the default ladder",
				where, role, c.Profile, prof.Role, prof.Profile)
		}
	}
}

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
	// Every role that writes media is started with the bucket (directly or through the S3_ENV
	// array the script defines for them).
	script := string(b)
	var s3Env string
	if m := benchS3EnvRe.FindStringSubmatch(script); m != nil {
		s3Env = m[1]
	}
	for _, role := range mediaRoles {
		m := regexp.MustCompile(`(?m)^start_role ` + role + ` (.*(?:\\\n.*)*)$`).FindStringSubmatch(script)
		if m == nil {
			t.Errorf("%s: no start_role %s", path, role)
			continue
		}
		line := strings.ReplaceAll(m[1], `"${S3_ENV[@]}"`, s3Env)
		for _, v := range []string{"GOPCAST_S3_ENDPOINT", "GOPCAST_S3_BUCKET", "GOPCAST_S3_ACCESS_KEY", "GOPCAST_S3_SECRET_KEY"} {
			if !strings.Contains(line, v+"=") {
				t.Errorf("%s: %s starts without %s (it writes media to the bucket)", path, role, v)
			}
		}
	}
}

// benchS3EnvRe finds the bench script's S3_ENV=(...) array.
var benchS3EnvRe = regexp.MustCompile(`(?ms)^S3_ENV=\((.*?)\)$`)

func sorted[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
