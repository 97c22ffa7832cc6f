package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

const token = "tok-3b9f2c"

// The API's answers, compact as a server might send them; -o json must re-indent them.
const (
	streamJSON    = `{"id":"0190f5a4-0000-7000-8000-000000000001","name":"Main stage","profile":"default","record":false,"rtmp_url":"rtmp://live.example.com:1935/live","playback":{"hls":"https://cdn.example.com/live/0190f5a4-0000-7000-8000-000000000001/master.m3u8","dash":"https://cdn.example.com/live/0190f5a4-0000-7000-8000-000000000001/manifest.mpd"},"status":"idle","created_at":"2026-11-28T19:00:00.123456789Z","updated_at":"2026-11-28T19:05:00Z"}`
	keyedJSON     = `{"id":"0190f5a4-0000-7000-8000-000000000001","name":"Main stage","profile":"hd","record":true,"stream_key":"sk_0123456789abcdef0123456789abcdef01234567","rtmp_url":"rtmp://live.example.com:1935/live","publish_url":"rtmp://live.example.com:1935/live/sk_0123456789abcdef0123456789abcdef01234567","playback":{"hls":"https://cdn.example.com/live/0190f5a4-0000-7000-8000-000000000001/master.m3u8","dash":"https://cdn.example.com/live/0190f5a4-0000-7000-8000-000000000001/manifest.mpd"},"status":"idle","created_at":"2026-11-28T19:00:00Z","updated_at":"2026-11-28T19:00:00Z"}`
	liveJSON      = `{"id":"0190f5a4-0000-7000-8000-000000000002","name":"Live one","profile":"default","record":false,"rtmp_url":"rtmp://live.example.com:1935/live","playback":{"hls":"https://cdn.example.com/live/2/master.m3u8","dash":"https://cdn.example.com/live/2/manifest.mpd"},"status":"live","live":{"session_id":"0190f5a4-0000-7000-8000-0000000000aa","started_at":"2026-11-28T19:00:00Z","ingest":{"video_codec":"avc1.64001f","audio_codec":"mp4a.40.2","width":1280,"height":720,"frame_rate":29.97,"bitrate_kbps":3128.4,"video_bitrate_kbps":3000.2,"audio_bitrate_kbps":128.2,"keyframe_interval_s":8,"bytes_in":4567890,"warnings":["keyframe interval 8.0 s is over 4 s: set the encoder's keyframe interval to 2 s","audio stopped: no audio received for over 5 s"]}},"created_at":"2026-11-28T18:00:00Z","updated_at":"2026-11-28T18:00:00Z"}`
	sessionsJSON  = `{"sessions":[{"id":"0190f5a4-0000-7000-8000-0000000000aa","status":"live","started_at":"2026-11-28T19:00:00Z","ended_at":null,"duration_s":90.5,"bytes_in":4567890},{"id":"0190f5a4-0000-7000-8000-000000000099","status":"ended","started_at":"2026-11-28T17:00:00Z","ended_at":"2026-11-28T17:20:00Z","duration_s":1200,"bytes_in":123456789,"end_reason":"publisher left"}]}`
	recordingJSON = `{"recordings":[{"session_id":"0190f5a4-0000-7000-8000-000000000099","hls":"https://cdn.example.com/vod/1/99/master.m3u8","dash":"https://cdn.example.com/vod/1/99/manifest.mpd","mp4":"https://cdn.example.com/vod/1/99/recording.mp4","duration_s":1200.5,"bytes":1444443333,"mp4_bytes":456789012,"started_at":"2026-11-28T17:00:00Z","created_at":"2026-11-28T17:21:00Z"},{"session_id":"0190f5a4-0000-7000-8000-000000000098","hls":"https://cdn.example.com/vod/1/98/master.m3u8","dash":"https://cdn.example.com/vod/1/98/manifest.mpd","duration_s":60,"bytes":1000,"mp4_bytes":0,"started_at":"2026-11-28T16:00:00Z","created_at":"2026-11-28T16:01:00Z"}]}`
)

// recorded is a request the fake API received.
type recorded struct {
	Method, Path, Query, Auth, ContentType, Body string
}

// fakeAPI is an httptest server standing in for the management API: it checks the bearer
// token like the real one and records every request.
type fakeAPI struct {
	*httptest.Server
	mux  *http.ServeMux
	mu   sync.Mutex
	reqs []recorded
}

func newFakeAPI(t *testing.T) *fakeAPI {
	f := &fakeAPI{mux: http.NewServeMux()}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.reqs = append(f.reqs, recorded{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, r.Header.Get("Authorization"), r.Header.Get("Content-Type"), string(b)})
		f.mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer "+token {
			apiErr(w, 401, "unauthorized", "invalid bearer token")
			return
		}
		f.mux.ServeHTTP(w, r)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeAPI) handle(pattern string, status int, body string) {
	f.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) { reply(w, status, body) })
}

func (f *fakeAPI) reset() {
	f.mu.Lock()
	f.reqs = nil
	f.mu.Unlock()
}

func (f *fakeAPI) requests() []recorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recorded(nil), f.reqs...)
}

func reply(w http.ResponseWriter, status int, body string) {
	if body != "" {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

func apiErr(w http.ResponseWriter, status int, code, msg string) {
	b, _ := json.Marshal(map[string]any{"error": map[string]string{"code": code, "message": msg}})
	reply(w, status, string(b))
}

type runResult struct {
	code           int
	stdout, stderr string
}

// run runs "gopcast streams ARGS" with env as the environment.
func run(t *testing.T, env map[string]string, args ...string) runResult {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := Streams(context.Background(), args, func(k string) string { return env[k] }, &stdout, &stderr)
	r := runResult{code, stdout.String(), stderr.String()}
	if strings.Contains(r.stdout+r.stderr, token) {
		t.Errorf("the API token was printed:\n%s%s", r.stdout, r.stderr)
	}
	return r
}

func envFor(f *fakeAPI) map[string]string {
	return map[string]string{"GOPCAST_API_URL": f.URL, "GOPCAST_API_TOKEN": token}
}

func indented(t *testing.T, compact string) string {
	t.Helper()
	var b bytes.Buffer
	if err := json.Indent(&b, []byte(compact), "", "  "); err != nil {
		t.Fatal(err)
	}
	return b.String() + "\n"
}

func wantOK(t *testing.T, r runResult) {
	t.Helper()
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("exit %d, stderr %q, stdout:\n%s", r.code, r.stderr, r.stdout)
	}
}

func wantRequests(t *testing.T, f *fakeAPI, want ...recorded) {
	t.Helper()
	got := f.requests()
	if len(got) != len(want) {
		t.Fatalf("requests:\n got  %+v\n want %+v", got, want)
	}
	for i := range want {
		w := want[i]
		if w.Auth == "" {
			w.Auth = "Bearer " + token
		}
		g := got[i]
		if w.Body != "" || g.Body != "" {
			// Compare bodies as JSON values.
			var gv, wv any
			if json.Unmarshal([]byte(g.Body), &gv) != nil || json.Unmarshal([]byte(w.Body), &wv) != nil || !jsonEqual(gv, wv) {
				t.Errorf("request %d body %s, want %s", i, g.Body, w.Body)
			}
			g.Body, w.Body = "", ""
		}
		if g != w {
			t.Errorf("request %d:\n got  %+v\n want %+v", i, g, w)
		}
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

func contains(t *testing.T, out string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(out, p) {
			t.Errorf("output lacks %q:\n%s", p, out)
		}
	}
}

func TestCreate(t *testing.T) {
	f := newFakeAPI(t)
	f.handle("POST /v1/streams", 201, keyedJSON)

	r := run(t, envFor(f), "create", "--name", "Main stage")
	wantOK(t, r)
	wantRequests(t, f, recorded{Method: "POST", Path: "/v1/streams", ContentType: "application/json", Body: `{"name":"Main stage"}`})
	contains(t, r.stdout,
		"Stream created.\n",
		"ID:        0190f5a4-0000-7000-8000-000000000001\n",
		"Profile:   hd\n",
		"Record:    yes\n",
		"Status:    idle\n",
		"HLS:       https://cdn.example.com/live/0190f5a4-0000-7000-8000-000000000001/master.m3u8\n",
		"Stream key:   sk_0123456789abcdef0123456789abcdef01234567\n",
		"Publish URL:  rtmp://live.example.com:1935/live/sk_0123456789abcdef0123456789abcdef01234567\n",
		"shown only this once",
		`"gopcast streams rotate-key 0190f5a4-0000-7000-8000-000000000001"`)

	// Every flag given is sent, and json prints the API's answer.
	f.reset()
	r = run(t, envFor(f), "create", "-o", "json", "--name=Main stage", "--profile", "hd", "--record")
	wantOK(t, r)
	wantRequests(t, f, recorded{Method: "POST", Path: "/v1/streams", ContentType: "application/json", Body: `{"name":"Main stage","profile":"hd","record":true}`})
	if r.stdout != indented(t, keyedJSON) {
		t.Errorf("json output:\n%s", r.stdout)
	}

	f.reset()
	r = run(t, envFor(f), "create", "--name", "x", "--record=false")
	wantOK(t, r)
	wantRequests(t, f, recorded{Method: "POST", Path: "/v1/streams", ContentType: "application/json", Body: `{"name":"x","record":false}`})

	// Usage errors: nothing is sent.
	f.reset()
	for _, args := range [][]string{{"create"}, {"create", "--name", "  "}, {"create", "Main stage"}, {"create", "--name", "a", "--bogus"}} {
		r := run(t, envFor(f), args...)
		if r.code != 2 || r.stdout != "" || !strings.Contains(r.stderr, "gopcast streams create: ") {
			t.Errorf("%q: exit %d, stderr %q", args, r.code, r.stderr)
		}
	}
	if n := len(f.requests()); n != 0 {
		t.Errorf("%d requests for bad command lines", n)
	}
}

func TestList(t *testing.T) {
	f := newFakeAPI(t)
	pages := map[string]string{
		"":     `{"streams":[` + streamJSON + `],"next_cursor":"c1"}`,
		"c1":   `{"streams":[` + liveJSON + `],"next_cursor":"c2"}`,
		"c2":   `{"streams":[]}`,
		"loop": `{"streams":[],"next_cursor":"loop"}`,
	}
	f.mux.HandleFunc("GET /v1/streams", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, pages[r.URL.Query().Get("cursor")])
	})

	r := run(t, envFor(f), "list")
	if r.code != 0 || r.stderr != "More streams follow: add --all, or --cursor c1 for the next page.\n" {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	wantRequests(t, f, recorded{Method: "GET", Path: "/v1/streams"})
	want := "" +
		"ID                                    NAME        PROFILE  STATUS  RECORD  CREATED\n" +
		"0190f5a4-0000-7000-8000-000000000001  Main stage  default  idle    no      2026-11-28T19:00:00Z\n"
	if r.stdout != want {
		t.Errorf("table:\n%s\nwant:\n%s", r.stdout, want)
	}

	// --all follows next_cursor to the end, 100 a page unless told.
	f.reset()
	r = run(t, envFor(f), "list", "--all")
	wantOK(t, r)
	wantRequests(t, f,
		recorded{Method: "GET", Path: "/v1/streams", Query: "limit=100"},
		recorded{Method: "GET", Path: "/v1/streams", Query: "cursor=c1&limit=100"},
		recorded{Method: "GET", Path: "/v1/streams", Query: "cursor=c2&limit=100"})
	contains(t, r.stdout, "Main stage", "Live one    default  live")

	f.reset()
	r = run(t, envFor(f), "list", "--all", "--limit", "1", "-o", "json")
	wantOK(t, r)
	if q := f.requests()[1].Query; q != "cursor=c1&limit=1" {
		t.Errorf("second page query %q", q)
	}
	if want := indented(t, `{"streams":[`+streamJSON+`,`+liveJSON+`]}`); r.stdout != want {
		t.Errorf("json --all:\n%s\nwant:\n%s", r.stdout, want)
	}

	// Without --all, json is the page as the API sent it, cursor included.
	r = run(t, envFor(f), "-o", "json", "list", "--cursor", "c1", "--limit", "5")
	wantOK(t, r)
	if r.stdout != indented(t, pages["c1"]) {
		t.Errorf("json page:\n%s", r.stdout)
	}
	if q := f.requests()[len(f.requests())-1].Query; q != "cursor=c1&limit=5" {
		t.Errorf("query %q", q)
	}

	if r := run(t, envFor(f), "list", "--cursor", "c2"); r.code != 0 || r.stdout != "No streams.\n" {
		t.Errorf("empty list: %d %q", r.code, r.stdout)
	}
	if r := run(t, envFor(f), "list", "--all", "--cursor", "loop"); r.code != 1 || !strings.Contains(r.stderr, "twice") {
		t.Errorf("cursor loop: %d %q", r.code, r.stderr)
	}
	for _, args := range [][]string{{"list", "--limit", "0"}, {"list", "--limit", "x"}, {"list", "extra"}} {
		if r := run(t, envFor(f), args...); r.code != 2 {
			t.Errorf("%q: exit %d", args, r.code)
		}
	}
}

func TestGet(t *testing.T) {
	f := newFakeAPI(t)
	f.handle("GET /v1/streams/0190f5a4-0000-7000-8000-000000000001", 200, streamJSON)
	f.handle("GET /v1/streams/0190f5a4-0000-7000-8000-000000000002", 200, liveJSON)
	f.mux.HandleFunc("GET /v1/streams/{id}", func(w http.ResponseWriter, r *http.Request) {
		apiErr(w, 404, "not_found", "stream not found")
	})

	r := run(t, envFor(f), "get", "0190f5a4-0000-7000-8000-000000000001")
	wantOK(t, r)
	wantRequests(t, f, recorded{Method: "GET", Path: "/v1/streams/0190f5a4-0000-7000-8000-000000000001"})
	want := "" +
		"ID:        0190f5a4-0000-7000-8000-000000000001\n" +
		"Name:      Main stage\n" +
		"Profile:   default\n" +
		"Record:    no\n" +
		"Status:    idle\n" +
		"RTMP URL:  rtmp://live.example.com:1935/live\n" +
		"HLS:       https://cdn.example.com/live/0190f5a4-0000-7000-8000-000000000001/master.m3u8\n" +
		"DASH:      https://cdn.example.com/live/0190f5a4-0000-7000-8000-000000000001/manifest.mpd\n" +
		"Created:   2026-11-28T19:00:00Z\n" +
		"Updated:   2026-11-28T19:05:00Z\n"
	if r.stdout != want {
		t.Errorf("table:\n%s\nwant:\n%s", r.stdout, want)
	}
	if strings.Contains(r.stdout, "Stream key") {
		t.Error("get printed a key section")
	}

	// Flags before or after the ID.
	for _, args := range [][]string{
		{"get", "0190f5a4-0000-7000-8000-000000000002", "-o", "json"},
		{"get", "-o", "json", "0190f5a4-0000-7000-8000-000000000002"},
		{"-o", "json", "get", "0190f5a4-0000-7000-8000-000000000002"},
		{"get", "--output=json", "0190f5a4-0000-7000-8000-000000000002"},
	} {
		r := run(t, envFor(f), args...)
		wantOK(t, r)
		if r.stdout != indented(t, liveJSON) {
			t.Errorf("%q:\n%s", args, r.stdout)
		}
	}

	r = run(t, envFor(f), "get", "0190f5a4-0000-7000-8000-000000000002")
	wantOK(t, r)
	contains(t, r.stdout,
		"Status:     live since 2026-11-28T19:00:00Z (",
		"session 0190f5a4-0000-7000-8000-0000000000aa\n",
		"Ingest:     avc1.64001f 1280x720 @ 29.97 fps, audio mp4a.40.2\n",
		"Bitrate:    3128.4 kbps (video 3000.2, audio 128.2)\n",
		"Keyframes:  every 8 s\n",
		"Received:   4.6 MB\n",
		"Warnings:   keyframe interval 8.0 s is over 4 s: set the encoder's keyframe interval to 2 s\n"+
			"            audio stopped: no audio received for over 5 s\n")

	// IDs are escaped into the path; "--" ends the flags.
	f.reset()
	if r := run(t, envFor(f), "get", "a/b?c"); r.code != 1 {
		t.Errorf("exit %d", r.code)
	}
	if r := run(t, envFor(f), "get", "--", "-odd"); r.code != 1 || r.stderr != "gopcast: not_found: stream not found\n" {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
	wantRequests(t, f, recorded{Method: "GET", Path: "/v1/streams/a%2Fb%3Fc"}, recorded{Method: "GET", Path: "/v1/streams/-odd"})

	for _, args := range [][]string{{"get"}, {"get", "a", "b"}, {"get", ""}} {
		if r := run(t, envFor(f), args...); r.code != 2 || !strings.Contains(r.stderr, "gopcast streams get: ") {
			t.Errorf("%q: exit %d, %q", args, r.code, r.stderr)
		}
	}
}

func TestUpdate(t *testing.T) {
	f := newFakeAPI(t)
	f.handle("PATCH /v1/streams/{id}", 200, streamJSON)
	path := "/v1/streams/0190f5a4-0000-7000-8000-000000000001"
	for _, tc := range []struct {
		args []string
		body string
	}{
		{[]string{"ID", "--record=false"}, `{"record":false}`},
		{[]string{"--record", "ID"}, `{"record":true}`},
		{[]string{"--name", "New name", "ID"}, `{"name":"New name"}`},
		{[]string{"ID", "--profile", "passthrough", "--name=B"}, `{"profile":"passthrough","name":"B"}`},
		{[]string{"ID", "--name", ""}, `{"name":""}`}, // the API says what is wrong with it
	} {
		f.reset()
		args := []string{"update"}
		for _, a := range tc.args {
			args = append(args, strings.ReplaceAll(a, "ID", "0190f5a4-0000-7000-8000-000000000001"))
		}
		r := run(t, envFor(f), args...)
		wantOK(t, r)
		wantRequests(t, f, recorded{Method: "PATCH", Path: path, ContentType: "application/json", Body: tc.body})
		contains(t, r.stdout, "Stream updated.\n", "Name:      Main stage\n")
	}

	f.reset()
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"update", "X"}, "nothing to change"},
		{[]string{"update", "X", "--record", "false"}, `write --record=false`},
		{[]string{"update", "--name", "n"}, "give the stream's ID"},
		{[]string{"update", "X", "--record=maybe"}, "invalid boolean"},
	} {
		r := run(t, envFor(f), tc.args...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.msg) {
			t.Errorf("%q: exit %d, stderr %q", tc.args, r.code, r.stderr)
		}
	}
	if n := len(f.requests()); n != 0 {
		t.Errorf("%d requests for bad command lines", n)
	}
}

func TestRotateKey(t *testing.T) {
	f := newFakeAPI(t)
	f.handle("POST /v1/streams/{id}/rotate-key", 200, keyedJSON)
	r := run(t, envFor(f), "rotate-key", "0190f5a4-0000-7000-8000-000000000001")
	wantOK(t, r)
	wantRequests(t, f, recorded{Method: "POST", Path: "/v1/streams/0190f5a4-0000-7000-8000-000000000001/rotate-key"})
	contains(t, r.stdout, "Stream key rotated.\n",
		"Stream key:   sk_0123456789abcdef0123456789abcdef01234567\n",
		"Publish URL:  rtmp://live.example.com:1935/live/sk_0123456789abcdef0123456789abcdef01234567\n",
		"shown only this once", "old key no longer works")

	r = run(t, envFor(f), "rotate-key", "-o", "json", "0190f5a4-0000-7000-8000-000000000001")
	wantOK(t, r)
	if r.stdout != indented(t, keyedJSON) {
		t.Errorf("json:\n%s", r.stdout)
	}
}

func TestDelete(t *testing.T) {
	f := newFakeAPI(t)
	f.handle("DELETE /v1/streams/0190f5a4-0000-7000-8000-000000000001", 204, "")
	f.mux.HandleFunc("DELETE /v1/streams/{id}", func(w http.ResponseWriter, r *http.Request) {
		apiErr(w, 404, "not_found", "stream not found")
	})
	r := run(t, envFor(f), "delete", "0190f5a4-0000-7000-8000-000000000001")
	wantOK(t, r)
	wantRequests(t, f, recorded{Method: "DELETE", Path: "/v1/streams/0190f5a4-0000-7000-8000-000000000001"})
	if r.stdout != "Stream 0190f5a4-0000-7000-8000-000000000001 deleted.\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	if r := run(t, envFor(f), "delete", "0190f5a4-0000-7000-8000-000000000001", "-o", "json"); r.code != 0 || r.stdout != "" {
		t.Errorf("json: %d %q", r.code, r.stdout)
	}
	r = run(t, envFor(f), "delete", "nope")
	if r.code != 1 || r.stdout != "" || r.stderr != "gopcast: not_found: stream not found\n" {
		t.Errorf("unknown: %d %q %q", r.code, r.stdout, r.stderr)
	}
}

func TestSessions(t *testing.T) {
	f := newFakeAPI(t)
	f.handle("GET /v1/streams/{id}/sessions", 200, sessionsJSON)
	r := run(t, envFor(f), "sessions", "0190f5a4-0000-7000-8000-000000000001")
	wantOK(t, r)
	wantRequests(t, f, recorded{Method: "GET", Path: "/v1/streams/0190f5a4-0000-7000-8000-000000000001/sessions"})
	want := "" +
		"ID                                    STATUS  STARTED               ENDED                 DURATION  RECEIVED  END REASON\n" +
		"0190f5a4-0000-7000-8000-0000000000aa  live    2026-11-28T19:00:00Z  -                     1m31s     4.6 MB    -\n" +
		"0190f5a4-0000-7000-8000-000000000099  ended   2026-11-28T17:00:00Z  2026-11-28T17:20:00Z  20m0s     123.5 MB  publisher left\n"
	if r.stdout != want {
		t.Errorf("table:\n%s\nwant:\n%s", r.stdout, want)
	}

	f.reset()
	r = run(t, envFor(f), "sessions", "--limit", "5", "X", "-o", "json")
	wantOK(t, r)
	wantRequests(t, f, recorded{Method: "GET", Path: "/v1/streams/X/sessions", Query: "limit=5"})
	if r.stdout != indented(t, sessionsJSON) {
		t.Errorf("json:\n%s", r.stdout)
	}
	if r := run(t, envFor(f), "sessions", "X", "--limit", "-1"); r.code != 2 {
		t.Errorf("bad limit: exit %d", r.code)
	}
}

func TestRecordings(t *testing.T) {
	f := newFakeAPI(t)
	f.handle("GET /v1/streams/{id}/recordings", 200, recordingJSON)
	r := run(t, envFor(f), "recordings", "X")
	wantOK(t, r)
	wantRequests(t, f, recorded{Method: "GET", Path: "/v1/streams/X/recordings"})
	want := "" +
		"SESSION                               STARTED               DURATION  SIZE    HLS                                           MP4\n" +
		"0190f5a4-0000-7000-8000-000000000099  2026-11-28T17:00:00Z  20m1s     1.4 GB  https://cdn.example.com/vod/1/99/master.m3u8  https://cdn.example.com/vod/1/99/recording.mp4\n" +
		"0190f5a4-0000-7000-8000-000000000098  2026-11-28T16:00:00Z  1m0s      1.0 kB  https://cdn.example.com/vod/1/98/master.m3u8  -\n"
	if r.stdout != want {
		t.Errorf("table:\n%s\nwant:\n%s", r.stdout, want)
	}
	r = run(t, envFor(f), "recordings", "X", "-o", "json")
	wantOK(t, r)
	if r.stdout != indented(t, recordingJSON) {
		t.Errorf("json:\n%s", r.stdout)
	}
}

func TestErrors(t *testing.T) {
	f := newFakeAPI(t)
	f.mux.HandleFunc("POST /v1/streams", func(w http.ResponseWriter, r *http.Request) {
		apiErr(w, 400, "invalid_profile", `unknown profile "4k" (known: [default hd passthrough])`)
	})
	f.mux.HandleFunc("GET /v1/streams", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(502)
		_, _ = io.WriteString(w, "<html>\n<h1>502 Bad Gateway</h1>\n</html>")
	})
	f.mux.HandleFunc("GET /v1/streams/{id}", func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // never answers
	})

	r := run(t, envFor(f), "create", "--name", "a", "--profile", "4k")
	if r.code != 1 || r.stdout != "" || r.stderr != "gopcast: invalid_profile: unknown profile \"4k\" (known: [default hd passthrough])\n" {
		t.Errorf("API error: %d %q %q", r.code, r.stdout, r.stderr)
	}

	r = run(t, envFor(f), "list")
	if r.code != 1 || !strings.Contains(r.stderr, "HTTP 502 Bad Gateway: <html> <h1>502 Bad Gateway</h1> </html>") {
		t.Errorf("proxy error: %d %q", r.code, r.stderr)
	}

	r = run(t, envFor(f), "get", "X", "--timeout", "50ms")
	if r.code != 1 || !strings.Contains(r.stderr, "cannot reach the API at "+f.URL) || !strings.Contains(r.stderr, "deadline exceeded") {
		t.Errorf("timeout: %d %q", r.code, r.stderr)
	}

	env := envFor(f)
	env["GOPCAST_API_TOKEN"] = "wrong"
	r = run(t, env, "list")
	if r.code != 1 || !strings.HasPrefix(r.stderr, "gopcast: unauthorized: invalid bearer token\n") || !strings.Contains(r.stderr, "GOPCAST_API_TOKEN") {
		t.Errorf("bad token: %d %q", r.code, r.stderr)
	}

	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	r = run(t, map[string]string{"GOPCAST_API_URL": dead.URL, "GOPCAST_API_TOKEN": token}, "list")
	if r.code != 1 || !strings.HasPrefix(r.stderr, "gopcast: cannot reach the API at "+dead.URL+": ") {
		t.Errorf("unreachable: %d %q", r.code, r.stderr)
	}
}

func TestSettings(t *testing.T) {
	f := newFakeAPI(t)
	f.handle("GET /v1/streams", 200, `{"streams":[]}`)
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()

	// Flags beat the environment, before or after the command.
	for _, args := range [][]string{
		{"--api-url", f.URL, "--api-token", token, "list"},
		{"list", "--api-url=" + f.URL, "--api-token=" + token},
		{"--api-url", f.URL + "/", "list", "--api-token", token},
	} {
		r := run(t, map[string]string{"GOPCAST_API_URL": dead.URL, "GOPCAST_API_TOKEN": "wrong"}, args...)
		wantOK(t, r)
	}
	// The token from the environment, trimmed.
	r := run(t, map[string]string{"GOPCAST_API_URL": f.URL, "GOPCAST_API_TOKEN": token + "\n"}, "list")
	wantOK(t, r)
	for _, q := range f.requests() {
		if q.Auth != "Bearer "+token {
			t.Errorf("Authorization %q", q.Auth)
		}
	}

	// An API behind a path prefix.
	prefixed := httptest.NewServer(http.StripPrefix("/gopcast", f.Config.Handler))
	defer prefixed.Close()
	f.reset()
	r = run(t, map[string]string{"GOPCAST_API_URL": prefixed.URL + "/gopcast/", "GOPCAST_API_TOKEN": token}, "list")
	wantOK(t, r)
	wantRequests(t, f, recorded{Method: "GET", Path: "/v1/streams"})

	// The default address.
	var c cli
	c.getenv = func(string) string { return "" }
	c.token = "x"
	if _, ok := c.settle(); !ok || c.apiURL != "http://localhost:8080" || c.output != "table" {
		t.Errorf("defaults: %q %q", c.apiURL, c.output)
	}

	f.reset()
	for _, tc := range []struct {
		env  map[string]string
		args []string
		msg  string
	}{
		{map[string]string{"GOPCAST_API_URL": f.URL}, []string{"list"}, "no API token"},
		{envFor(f), []string{"list", "-o", "yaml"}, `-o "yaml": want table or json`},
		{envFor(f), []string{"list", "--api-url", "localhost:8080"}, "is not an http(s) URL"},
		{map[string]string{"GOPCAST_API_URL": "ftp://x", "GOPCAST_API_TOKEN": token}, []string{"list"}, "is not an http(s) URL"},
		{envFor(f), []string{"list", "--timeout", "soon"}, "invalid value"},
	} {
		r := run(t, tc.env, tc.args...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.msg) {
			t.Errorf("%v %q: exit %d, stderr %q", tc.env, tc.args, r.code, r.stderr)
		}
	}
	if n := len(f.requests()); n != 0 {
		t.Errorf("%d requests with bad settings", n)
	}
}

func TestHelp(t *testing.T) {
	env := map[string]string{}
	r := run(t, env)
	if r.code != 2 || r.stdout != "" || !strings.Contains(r.stderr, "Usage:\n  gopcast streams [global flags] COMMAND") {
		t.Errorf("no args: %d %q", r.code, r.stderr)
	}
	for _, args := range [][]string{{"-h"}, {"--help"}, {"help"}} {
		r := run(t, env, args...)
		if r.code != 0 || r.stderr != "" || !strings.Contains(r.stdout, "Commands:\n  create") {
			t.Errorf("%q: %d %q", args, r.code, r.stdout)
		}
	}
	for _, cmd := range commands {
		for _, args := range [][]string{{cmd.name, "-h"}, {"help", cmd.name}, {cmd.name, "X", "--help"}} {
			r := run(t, env, args...) // no token needed for help
			if r.code != 0 || r.stderr != "" || !strings.Contains(r.stdout, "Usage:\n  gopcast streams "+cmd.name) || !strings.Contains(r.stdout, "--api-url") {
				t.Errorf("%q: %d %q %q", args, r.code, r.stdout, r.stderr)
			}
		}
	}
	for _, args := range [][]string{{"publish"}, {"help", "publish"}, {"--bogus", "list"}} {
		r := run(t, env, args...)
		if r.code != 2 || r.stdout != "" || r.stderr == "" {
			t.Errorf("%q: %d %q", args, r.code, r.stderr)
		}
	}
}

func TestParseFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		pos  []string
		name string
	}{
		{[]string{"a", "--name", "n", "b"}, []string{"a", "b"}, "n"},
		{[]string{"--name", "--", "a"}, []string{"a"}, "--"},
		{[]string{"--", "--name", "x"}, []string{"--name", "x"}, ""},
		{[]string{"a", "--", "-b"}, []string{"a", "-b"}, ""},
		{[]string{"--all", "--", "-b"}, []string{"-b"}, ""},
		{[]string{"-"}, []string{"-"}, ""},
	} {
		var c cli
		fs := c.flagSet("t")
		name := fs.String("name", "", "")
		fs.Bool("all", false, "")
		pos, err := parseFlags(fs, tc.args, true)
		if err != nil || strings.Join(pos, "|") != strings.Join(tc.pos, "|") || *name != tc.name {
			t.Errorf("%q: %q %q %v, want %q %q", tc.args, pos, *name, err, tc.pos, tc.name)
		}
	}
}
