package deployments

import (
	"bytes"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"go.yaml.in/yaml/v3"

	"github.com/gopcast/gopcast/pkg/queue"
)

// The part of the Compose specification (compose-spec.io) the compose file uses, decoded with
// unknown fields refused: a misspelt key fails here instead of being ignored by compose.
type composeFile struct {
	Name     string                    `yaml:"name"`
	XGopcast yaml.Node                 `yaml:"x-gopcast"`
	XStorage yaml.Node                 `yaml:"x-storage"`
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]*struct{}      `yaml:"volumes"`
}

type composeService struct {
	Image           string                      `yaml:"image"`
	Build           *composeBuild               `yaml:"build"`
	Command         []string                    `yaml:"command"`
	Entrypoint      []string                    `yaml:"entrypoint"`
	Environment     map[string]string           `yaml:"environment"`
	Ports           []string                    `yaml:"ports"`
	Volumes         []string                    `yaml:"volumes"`
	DependsOn       map[string]composeDependsOn `yaml:"depends_on"`
	Healthcheck     *composeHealthcheck         `yaml:"healthcheck"`
	Restart         string                      `yaml:"restart"`
	Init            bool                        `yaml:"init"`
	Deploy          *composeDeploy              `yaml:"deploy"`
	StopGracePeriod string                      `yaml:"stop_grace_period"`
}

type composeBuild struct {
	Context    string `yaml:"context"`
	Dockerfile string `yaml:"dockerfile"`
}

type composeDependsOn struct {
	Condition string `yaml:"condition"`
}

type composeHealthcheck struct {
	Test        []string `yaml:"test"`
	Interval    string   `yaml:"interval"`
	Timeout     string   `yaml:"timeout"`
	Retries     int      `yaml:"retries"`
	StartPeriod string   `yaml:"start_period"`
}

type composeDeploy struct {
	Replicas *int `yaml:"replicas"`
}

const composePath = "compose/docker-compose.yml"

func loadCompose(t *testing.T) *composeFile {
	t.Helper()
	b, err := os.ReadFile(composePath)
	if err != nil {
		t.Fatal(err)
	}
	var cf composeFile
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cf); err != nil {
		t.Fatalf("%s: %v", composePath, err)
	}
	return &cf
}

// interpolate resolves Compose's ${VAR:-default} and ${VAR-default} from an empty environment
// (what `docker compose up` sees with no .env file) and $$ escapes; a bare ${VAR} or $VAR, which
// would silently become empty, is an error.
var interpRe = regexp.MustCompile(`\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(:?-)([^}]*)\}|\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*`)

func interpolate(s string) (string, error) {
	var bad error
	out := interpRe.ReplaceAllStringFunc(s, func(m string) string {
		if m == "$$" {
			return "$"
		}
		if sm := interpRe.FindStringSubmatch(m); sm[1] != "" {
			return sm[3]
		}
		bad = fmt.Errorf("%q has no default: it is empty unless set", m)
		return ""
	})
	return out, bad
}

func TestComposeFile(t *testing.T) {
	cf := loadCompose(t)
	if cf.Name == "" {
		t.Error("no project name")
	}
	env := func(name string) map[string]string {
		out := map[string]string{}
		for k, v := range cf.Services[name].Environment {
			iv, err := interpolate(v)
			if err != nil {
				t.Errorf("service %s: %s: %v", name, k, err)
			}
			out[k] = iv
		}
		return out
	}

	// The four roles, each once, from one image built from the repository's Dockerfile.
	roles := map[string]string{}
	envs := map[string]map[string]string{}
	var image string
	for name, s := range cf.Services {
		if s.Build == nil {
			continue
		}
		where := "service " + name
		role := checkRole(t, where, s.Command)
		if prev, dup := roles[role]; dup && role != "" {
			t.Errorf("role %s runs in both %s and %s (use deploy.replicas for more)", role, prev, name)
		}
		roles[role] = name
		if image == "" {
			image = s.Image
		} else if s.Image != image {
			t.Errorf("%s: image %q, other roles %q: every role runs the same image", where, s.Image, image)
		}
		df := filepath.Join("compose", s.Build.Context, s.Build.Dockerfile)
		if abs, _ := filepath.Abs(df); abs != mustAbs(t, filepath.Join(repoRoot, "Dockerfile")) {
			t.Errorf("%s: builds %s, not the repository's Dockerfile", where, df)
		}
		envs[role] = env(name)
		checkEnv(t, where, role, envs[role])
		if s.Deploy != nil && s.Deploy.Replicas != nil && *s.Deploy.Replicas > 1 && len(s.Ports) > 0 {
			t.Errorf("%s: %d replicas cannot all publish host ports %v", where, *s.Deploy.Replicas, s.Ports)
		}
		if d, ok := s.DependsOn["nats"]; !ok || d.Condition != "service_healthy" {
			t.Errorf("%s: must wait for a healthy nats (depends_on nats: condition: service_healthy)", where)
		}
		if s.Healthcheck != nil {
			t.Errorf("%s: overrides the image's HEALTHCHECK", where)
		}
		if s.StopGracePeriod == "" {
			t.Errorf("%s: no stop_grace_period (compose's 10 s default cuts work in flight)", where)
		}
	}
	for _, r := range deployedRoles {
		if roles[r] == "" {
			t.Errorf("no service runs gopcast %s", r)
		}
	}
	checkAgreement(t, composePath, envs)
	if tr := cf.Services[roles["transcoder"]]; tr.Deploy == nil || tr.Deploy.Replicas == nil || *tr.Deploy.Replicas < 2 {
		t.Errorf("transcoder: want deploy.replicas of 2 or more (several workers share the queue)")
	}
	if s := cf.Services[roles["ingest"]]; !slices.Contains(s.Ports, "1935:1935") {
		t.Errorf("ingest: RTMP port 1935 not published (ports %v)", s.Ports)
	}
	if s := cf.Services[roles["api"]]; !slices.Contains(s.Ports, "8080:8080") {
		t.Errorf("api: port 8080 not published (ports %v)", s.Ports)
	}
	for _, r := range []string{"transcoder", "ingest"} {
		if g := parseDurationOr(cf.Services[roles[r]].StopGracePeriod); g < 60 {
			t.Errorf("%s: stop_grace_period %q, want at least 60s to finish a chunk", r, cf.Services[roles[r]].StopGracePeriod)
		}
	}

	// NATS: the official image, configured by a file from the repository that nats-server's own
	// parser accepts, with JetStream on a named volume and gopcast's max_payload.
	nats, ok := cf.Services["nats"]
	if !ok {
		t.Fatal("no nats service")
	}
	if !strings.HasPrefix(nats.Image, "nats:2.") {
		t.Errorf("nats: image %q, want the official nats:2.x image", nats.Image)
	}
	opts := composeNATSConfig(t, nats)
	if !opts.JetStream {
		t.Errorf("nats: JetStream not enabled")
	}
	if opts.StoreDir == "" || !hasVolumeAt(cf, nats.Volumes, opts.StoreDir) {
		t.Errorf("nats: the JetStream store (%q) is not on a named volume (%v)", opts.StoreDir, nats.Volumes)
	}
	if opts.MaxPayload != queue.MaxPayload {
		t.Errorf("nats: max_payload %d, want %d as gopcast's embedded server (queue.MaxPayload)", opts.MaxPayload, queue.MaxPayload)
	}
	healthz := fmt.Sprintf("127.0.0.1:%d/healthz", opts.HTTPPort)
	if nats.Healthcheck == nil || !strings.Contains(strings.Join(nats.Healthcheck.Test, " "), healthz) {
		t.Errorf("nats: no healthcheck on %s (the monitoring port the config sets)", healthz)
	}
	natsURL, err := url.Parse(env(roles["ingest"])["GOPCAST_NATS_URL"])
	if err != nil || natsURL.Hostname() != "nats" || natsURL.Port() != "4222" {
		t.Errorf("GOPCAST_NATS_URL %v does not name the nats service's client port", natsURL)
	}

	// MinIO, its one-shot init, and the bucket and credentials of every role that writes media
	// matching them.
	minio, ok := cf.Services["minio"]
	if !ok {
		t.Fatal("no minio service")
	}
	if !strings.HasPrefix(minio.Image, "minio/minio:RELEASE.") {
		t.Errorf("minio: image %q is not a pinned minio/minio release", minio.Image)
	}
	if !slices.Contains(minio.Ports, "9000:9000") {
		t.Errorf("minio: port 9000 not published (players read from it): %v", minio.Ports)
	}
	if minio.Healthcheck == nil || len(minio.Healthcheck.Test) == 0 {
		t.Errorf("minio: no healthcheck")
	}
	if dataDir := argAfter(minio.Command, "server"); dataDir == "" || !hasVolumeAt(cf, minio.Volumes, dataDir) {
		t.Errorf("minio: data dir %q is not on a named volume (%v)", dataDir, minio.Volumes)
	}
	initSvc, ok := cf.Services["minio-init"]
	if !ok {
		t.Fatal("no minio-init service")
	}
	if !strings.HasPrefix(initSvc.Image, "minio/mc:RELEASE.") {
		t.Errorf("minio-init: image %q is not a pinned minio/mc release", initSvc.Image)
	}
	if d := initSvc.DependsOn["minio"]; d.Condition != "service_healthy" {
		t.Errorf("minio-init: must wait for a healthy minio")
	}
	if initSvc.Restart != "no" {
		t.Errorf("minio-init: restart %q, want \"no\" (one-shot)", initSvc.Restart)
	}
	pk := env(roles["packager"])
	ie := env("minio-init")
	me := env("minio")
	script, err := interpolate(strings.Join(initSvc.Command, "\n"))
	if err != nil {
		t.Errorf("minio-init: %v", err)
	}
	script = strings.NewReplacer("$MINIO_ROOT_USER", me["MINIO_ROOT_USER"], "$MINIO_ROOT_PASSWORD", me["MINIO_ROOT_PASSWORD"],
		"$BUCKET", ie["BUCKET"]).Replace(script)
	bucket := pk["GOPCAST_S3_BUCKET"]
	checkMinIOInit(t, "minio-init", script, "http://minio:9000", bucket)
	if o := me["MINIO_API_CORS_ALLOW_ORIGIN"]; o != "" && o != "*" {
		t.Errorf("minio: MINIO_API_CORS_ALLOW_ORIGIN %q overrides the CORS minio-init sets", o)
	}
	if ie["MINIO_ROOT_USER"] != me["MINIO_ROOT_USER"] || ie["MINIO_ROOT_PASSWORD"] != me["MINIO_ROOT_PASSWORD"] {
		t.Errorf("minio-init's credentials differ from minio's")
	}
	for _, r := range mediaRoles {
		re := env(roles[r])
		if re["GOPCAST_S3_ACCESS_KEY"] != me["MINIO_ROOT_USER"] || re["GOPCAST_S3_SECRET_KEY"] != me["MINIO_ROOT_PASSWORD"] {
			t.Errorf("%s's S3 keys differ from minio's root credentials", r)
		}
		if u, err := url.Parse(re["GOPCAST_S3_ENDPOINT"]); err != nil || u.Host != "minio:9000" {
			t.Errorf("%s: GOPCAST_S3_ENDPOINT %q is not the minio service", r, re["GOPCAST_S3_ENDPOINT"])
		}
		if d := cf.Services[roles[r]].DependsOn["minio-init"]; d.Condition != "service_completed_successfully" {
			t.Errorf("%s: must wait for minio-init to complete (the bucket must exist: gopcast checks it at start)", r)
		}
	}
	// Players on the host fetch from the published MinIO port, in the bucket the packager fills.
	for _, svc := range []string{roles["api"], roles["packager"]} {
		if got, want := env(svc)["GOPCAST_PUBLIC_BASE_URL"], "http://localhost:9000/"+bucket; got != want {
			t.Errorf("%s: GOPCAST_PUBLIC_BASE_URL %q, want %q", svc, got, want)
		}
	}
	if tok := env(roles["api"])["GOPCAST_API_TOKEN"]; tok == "" {
		t.Errorf("api: no GOPCAST_API_TOKEN default")
	}

	// depends_on: known services, known conditions; service_healthy needs a healthcheck (the
	// gopcast image brings its own).
	for name, s := range cf.Services {
		for dep, d := range s.DependsOn {
			target, ok := cf.Services[dep]
			switch {
			case !ok:
				t.Errorf("%s depends on unknown service %s", name, dep)
			case !slices.Contains([]string{"service_started", "service_healthy", "service_completed_successfully"}, d.Condition):
				t.Errorf("%s: depends_on %s: unknown condition %q", name, dep, d.Condition)
			case d.Condition == "service_healthy" && target.Healthcheck == nil && target.Build == nil:
				t.Errorf("%s waits for %s to be healthy, but %s has no healthcheck", name, dep, dep)
			}
		}
		if s.Image == "" {
			t.Errorf("%s: no image", name)
		} else if i := strings.LastIndex(s.Image, ":"); s.Build == nil && (i < 0 || strings.HasSuffix(s.Image, ":latest")) {
			t.Errorf("%s: image %q is not pinned to a version", name, s.Image)
		}
	}
}

// TestComposeReadme keeps the compose README's URLs in line with the compose file.
func TestComposeReadme(t *testing.T) {
	b, err := os.ReadFile("compose/README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	cf := loadCompose(t)
	for _, want := range []string{
		"docker compose up",
		"rtmp://localhost:1935/live",
		cf.Services["api"].Environment["GOPCAST_PUBLIC_BASE_URL"] + "/live/STREAM_ID/master.m3u8",
		"http://localhost:8080/v1",
		// The API refuses a body without it (415 Unsupported Media Type).
		"-H 'Content-Type: application/json'",
	} {
		if !strings.Contains(readme, want) {
			t.Errorf("compose/README.md does not mention %q", want)
		}
	}
}

// checkMinIOInit checks the script that prepares MinIO for gopcast (compose's minio-init
// service, the dev overlay's minio-init Job), with its variables already substituted: it
// creates the bucket, lets anyone download live/ and vod/ (what players fetch) and lets MinIO
// answer CORS for any origin, so browser players (hls.js, dash.js) on another origin can read
// them.
//
// The MinIO release both use has no per-bucket CORS: its PutBucketCors handler is a dummy that
// answers NotImplemented (cmd/dummy-handlers.go of RELEASE.2025-09-07T16-13-09Z), so
// `mc cors set` would fail the script (sh -e) and every role waiting for it would never start.
// CORS there is the server-wide api setting cors_allow_origin, applied without a restart.
func checkMinIOInit(t *testing.T, where, script, endpoint, bucket string) {
	t.Helper()
	for _, want := range []string{
		"mc alias set local " + endpoint,
		`mc mb --ignore-existing "local/` + bucket + `"`,
		`mc anonymous set download "local/` + bucket + `/live"`,
		`mc anonymous set download "local/` + bucket + `/vod"`,
		"mc admin config set local api cors_allow_origin='*'",
	} {
		if !strings.Contains(script, want) {
			t.Errorf("%s: script lacks %q:\n%s", where, want, script)
		}
	}
	if strings.Contains(script, "mc cors set") {
		t.Errorf("%s: `mc cors set` gets NotImplemented from this MinIO (no bucket CORS); set api cors_allow_origin instead", where)
	}
}

func argAfter(args []string, names ...string) string {
	for i, a := range args {
		if slices.Contains(names, a) && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// composeNATSConfig reads the nats service's configuration file (its --config, bind-mounted
// from the compose directory) with nats-server's parser.
func composeNATSConfig(t *testing.T, nats composeService) *server.Options {
	t.Helper()
	conf := argAfter(nats.Command, "--config", "-c")
	if conf == "" {
		t.Fatalf("nats: no --config in %v", nats.Command)
	}
	var src string
	for _, v := range nats.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 && parts[1] == conf && strings.HasPrefix(parts[0], "./") {
			src = filepath.Join(filepath.Dir(composePath), parts[0])
		}
	}
	if src == "" {
		t.Fatalf("nats: %s is not bind-mounted from the compose directory (%v)", conf, nats.Volumes)
	}
	opts, err := server.ProcessConfigFile(src)
	if err != nil {
		t.Fatalf("nats: nats-server refuses %s: %v", src, err)
	}
	return opts
}

func hasVolumeAt(cf *composeFile, volumes []string, dir string) bool {
	for _, v := range volumes {
		src, dst, ok := strings.Cut(v, ":")
		if _, named := cf.Volumes[src]; ok && named && dst == dir {
			return true
		}
	}
	return false
}

func parseDurationOr(s string) int {
	n, err := strconv.Atoi(strings.TrimSuffix(s, "s"))
	if err != nil || !strings.HasSuffix(s, "s") {
		return 0
	}
	return n
}

func mustAbs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
