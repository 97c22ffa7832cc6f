package api_test

// These tests keep openapi.yaml true to the handlers and double as the handlers' tests: every
// route is driven through the real mux with an in-memory registry, and every response is held
// to the document (status listed for the operation, content type, body schema, required
// headers, error codes) while the test asserts what matters to a user.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"

	"github.com/gopcast/gopcast/pkg/media/ladder"
	"github.com/gopcast/gopcast/pkg/streams"
	"github.com/gopcast/gopcast/services/api"
)

const (
	testToken  = "test-token-1"
	otherToken = "test-token-2"
	rtmpURL    = "rtmp://live.example.com:1935/live"
	publicURL  = "https://cdn.example.com/media"
)

// ---- the document ----

const docURL = "https://gopcast.invalid/openapi.json"

// spec is the parsed document and a schema compiler over it.
type spec struct {
	root     map[string]any
	compiler *jsonschema.Compiler
	mu       sync.Mutex
	schemas  map[string]*jsonschema.Schema
}

func loadSpec(t testing.TB) *spec {
	t.Helper()
	var y any
	if err := yaml.Unmarshal(api.OpenAPI, &y); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	j, err := json.Marshal(y)
	if err != nil {
		t.Fatalf("openapi.yaml as JSON: %v", err)
	}
	s := &spec{schemas: map[string]*jsonschema.Schema{}}
	if err := json.Unmarshal(j, &s.root); err != nil {
		t.Fatal(err)
	}
	// The compiler sees a copy in which every object schema without additionalProperties is
	// closed: the document leaves response objects open so clients tolerate new fields, but a
	// handler sending a field the document does not describe is a documentation bug.
	strict, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
	if err != nil {
		t.Fatal(err)
	}
	closeObjects(strict)
	s.compiler = jsonschema.NewCompiler()
	s.compiler.DefaultDraft(jsonschema.Draft2020)
	s.compiler.AssertFormat()
	if err := s.compiler.AddResource(docURL, strict); err != nil {
		t.Fatal(err)
	}
	return s
}

func closeObjects(v any) {
	switch v := v.(type) {
	case map[string]any:
		if _, ok := v["properties"].(map[string]any); ok {
			if _, set := v["additionalProperties"]; !set {
				v["additionalProperties"] = false
			}
		}
		for k, c := range v {
			if k != "example" && k != "examples" {
				closeObjects(c)
			}
		}
	case []any:
		for _, c := range v {
			closeObjects(c)
		}
	}
}

func esc(s string) string { return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1") }

// at returns the value at JSON pointer ptr ("" is the root).
func (s *spec) at(ptr string) any {
	var cur any = s.root
	if ptr == "" {
		return cur
	}
	for _, tok := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch c := cur.(type) {
		case map[string]any:
			cur = c[tok]
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(c) {
				return nil
			}
			cur = c[i]
		default:
			return nil
		}
	}
	return cur
}

func (s *spec) obj(ptr string) map[string]any { m, _ := s.at(ptr).(map[string]any); return m }

// deref follows a local $ref, returning the object and its pointer.
func (s *spec) deref(ptr string) (map[string]any, string) {
	for i := 0; i < 10; i++ {
		m := s.obj(ptr)
		ref, ok := m["$ref"].(string)
		if !ok {
			return m, ptr
		}
		ptr = strings.TrimPrefix(ref, "#")
	}
	return nil, ptr
}

func (s *spec) schema(t testing.TB, ptr string) *jsonschema.Schema {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if sch, ok := s.schemas[ptr]; ok {
		return sch
	}
	sch, err := s.compiler.Compile(docURL + "#" + ptr)
	if err != nil {
		t.Fatalf("compiling %s: %v", ptr, err)
	}
	s.schemas[ptr] = sch
	return sch
}

var httpMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// operations lists the document's operations as "METHOD /path".
func (s *spec) operations() []string {
	var out []string
	for p, item := range s.obj("/paths") {
		for _, m := range httpMethods {
			if _, ok := item.(map[string]any)[m]; ok {
				out = append(out, strings.ToUpper(m)+" "+p)
			}
		}
	}
	sort.Strings(out)
	return out
}

// matchPath finds the document's path template matching a request path.
func (s *spec) matchPath(path string) (string, bool) {
	for p := range s.obj("/paths") {
		ps, xs := strings.Split(p, "/"), strings.Split(path, "/")
		if len(ps) != len(xs) {
			continue
		}
		ok := true
		for i := range ps {
			if strings.HasPrefix(ps[i], "{") {
				ok = ok && xs[i] != ""
			} else {
				ok = ok && ps[i] == xs[i]
			}
		}
		if ok {
			return p, true
		}
	}
	return "", false
}

// params lists an operation's parameters (path-level and operation-level), dereferenced,
// with their pointers.
func (s *spec) params(pathTmpl, method string) map[string]string {
	out := map[string]string{}
	for _, base := range []string{"/paths/" + esc(pathTmpl), "/paths/" + esc(pathTmpl) + "/" + method} {
		list, _ := s.obj(base)["parameters"].([]any)
		for i := range list {
			p, ptr := s.deref(fmt.Sprintf("%s/parameters/%d", base, i))
			out[p["in"].(string)+":"+p["name"].(string)] = ptr
		}
	}
	return out
}

func TestOpenAPIDocument(t *testing.T) {
	s := loadSpec(t)
	if v := s.root["openapi"]; v != "3.1.0" {
		t.Errorf("openapi = %v, want 3.1.0", v)
	}

	// Every route is documented, and the document describes nothing else.
	routes := slices.Clone(api.Routes)
	sort.Strings(routes)
	if ops := s.operations(); !slices.Equal(ops, routes) {
		t.Errorf("document operations and api.Routes differ:\n doc:    %q\n routes: %q", ops, routes)
	}

	// Operations are complete: an id, a summary, a success status, the errors every
	// authenticated route can give, and no security only where the handler asks for no token.
	ids := map[string]bool{}
	for _, op := range s.operations() {
		method, path, _ := strings.Cut(op, " ")
		ptr := "/paths/" + esc(path) + "/" + strings.ToLower(method)
		o := s.obj(ptr)
		id, _ := o["operationId"].(string)
		if id == "" || ids[id] {
			t.Errorf("%s: operationId %q missing or repeated", op, id)
		}
		ids[id] = true
		if o["summary"] == nil || o["description"] == nil {
			t.Errorf("%s: no summary or description", op)
		}
		resps := s.obj(ptr + "/responses")
		ok2xx := false
		for code := range resps {
			if strings.HasPrefix(code, "2") {
				ok2xx = true
			}
			if _, rptr := s.deref(ptr + "/responses/" + code); s.obj(rptr) == nil {
				t.Errorf("%s %s: response $ref does not resolve", op, code)
			}
		}
		if !ok2xx {
			t.Errorf("%s: no 2xx response", op)
		}
		sec, overridden := o["security"].([]any)
		public := overridden && len(sec) == 0
		if public != (op == "GET /v1/openapi.yaml") {
			t.Errorf("%s: public = %v", op, public)
		}
		if !public && (resps["401"] == nil || resps["500"] == nil) {
			t.Errorf("%s: authenticated operation without 401 and 500 responses", op)
		}
		// The handlers refuse unknown fields; the compiler closes every object schema (see
		// loadSpec), so say it here for what clients see.
		if rb := s.obj(ptr + "/requestBody"); rb != nil {
			sch, _ := s.deref(ptr + "/requestBody/content/application~1json/schema")
			if sch["additionalProperties"] != false {
				t.Errorf("%s: request body schema without additionalProperties: false", op)
			}
		}
	}

	// Every schema and response schema compiles, so every $ref resolves.
	for name := range s.obj("/components/schemas") {
		s.schema(t, "/components/schemas/"+esc(name))
	}

	// The profile enum is the ladders the server knows.
	var enum []string
	for _, v := range s.at("/components/schemas/Profile/enum").([]any) {
		enum = append(enum, v.(string))
	}
	sort.Strings(enum)
	if !slices.Equal(enum, ladder.Names()) {
		t.Errorf("Profile enum %q, ladders %q", enum, ladder.Names())
	}
}

// ---- an in-memory registry ----

type fakeRegistry struct {
	mu       sync.Mutex
	seq      int
	streams  map[string]*streams.Stream
	live     map[string]*streams.Session
	sessions map[string][]*streams.Session   // newest first
	recs     map[string][]*streams.Recording // newest first
	fail     map[string]error                // method name → error it returns
	limits   map[string]int                  // method name → last limit asked for
}

func newFakeRegistry() *fakeRegistry {
	return &fakeRegistry{
		streams:  map[string]*streams.Stream{},
		live:     map[string]*streams.Session{},
		sessions: map[string][]*streams.Session{},
		recs:     map[string][]*streams.Recording{},
		fail:     map[string]error{},
		limits:   map[string]int{},
	}
}

var _ api.Registry = (*fakeRegistry)(nil)

// failing makes method fail with err until the test ends.
func (f *fakeRegistry) failing(t *testing.T, method string, err error) {
	f.mu.Lock()
	f.fail[method] = err
	f.mu.Unlock()
	t.Cleanup(func() {
		f.mu.Lock()
		delete(f.fail, method)
		f.mu.Unlock()
	})
}

func (f *fakeRegistry) newID() string {
	f.seq++
	return fmt.Sprintf("0190f5a4-0000-7000-8000-%012d", f.seq) // sorts in creation order, like UUIDv7
}

func (f *fakeRegistry) Create(_ context.Context, name, profile string, record bool) (*streams.Stream, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail["Create"]; err != nil {
		return nil, "", err
	}
	if err := streams.ValidateName(name); err != nil {
		return nil, "", err
	}
	key, err := streams.NewKey()
	if err != nil {
		return nil, "", err
	}
	now := time.Now().UTC()
	st := &streams.Stream{ID: f.newID(), Name: name, Profile: profile, Record: record, KeyHash: streams.HashKey(key), CreatedAt: now, UpdatedAt: now}
	f.streams[st.ID] = st
	c := *st
	return &c, key, nil
}

func (f *fakeRegistry) Get(_ context.Context, id string) (*streams.Stream, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail["Get"]; err != nil {
		return nil, err
	}
	st, ok := f.streams[id]
	if !ok {
		return nil, streams.ErrNotFound
	}
	c := *st
	return &c, nil
}

// List pages like streams.Registry.List: a next cursor only when another stream follows.
func (f *fakeRegistry) List(_ context.Context, limit int, cursor string) ([]*streams.Stream, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.limits["List"] = limit
	if err := f.fail["List"]; err != nil {
		return nil, "", err
	}
	var ids []string
	for id := range f.streams {
		if id > cursor {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	var out []*streams.Stream
	for _, id := range ids {
		if len(out) == limit {
			return out, out[len(out)-1].ID, nil
		}
		c := *f.streams[id]
		out = append(out, &c)
	}
	return out, "", nil
}

func (f *fakeRegistry) Update(_ context.Context, id string, p streams.Patch) (*streams.Stream, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail["Update"]; err != nil {
		return nil, err
	}
	if p.Name != nil {
		if err := streams.ValidateName(*p.Name); err != nil {
			return nil, err
		}
	}
	st, ok := f.streams[id]
	if !ok {
		return nil, streams.ErrNotFound
	}
	if p.Name != nil {
		st.Name = *p.Name
	}
	if p.Profile != nil {
		st.Profile = *p.Profile
	}
	if p.Record != nil {
		st.Record = *p.Record
	}
	st.UpdatedAt = time.Now().UTC()
	c := *st
	return &c, nil
}

func (f *fakeRegistry) RotateKey(_ context.Context, id string) (*streams.Stream, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail["RotateKey"]; err != nil {
		return nil, "", err
	}
	st, ok := f.streams[id]
	if !ok {
		return nil, "", streams.ErrNotFound
	}
	key, err := streams.NewKey()
	if err != nil {
		return nil, "", err
	}
	st.KeyHash, st.UpdatedAt = streams.HashKey(key), time.Now().UTC()
	c := *st
	return &c, key, nil
}

func (f *fakeRegistry) Delete(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail["Delete"]; err != nil {
		return err
	}
	if _, ok := f.streams[id]; !ok {
		return streams.ErrNotFound
	}
	delete(f.streams, id)
	return nil
}

func (f *fakeRegistry) DeleteSessions(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail["DeleteSessions"]; err != nil {
		return err
	}
	delete(f.sessions, id)
	delete(f.live, id)
	return nil
}

func (f *fakeRegistry) Live(_ context.Context, id string) (*streams.Session, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail["Live"]; err != nil {
		return nil, err
	}
	return f.live[id], nil
}

func (f *fakeRegistry) Sessions(_ context.Context, id string, limit int) ([]*streams.Session, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.limits["Sessions"] = limit
	if err := f.fail["Sessions"]; err != nil {
		return nil, err
	}
	list := f.sessions[id]
	return list[:min(limit, len(list))], nil
}

func (f *fakeRegistry) ListRecordings(_ context.Context, id string) ([]*streams.Recording, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail["ListRecordings"]; err != nil {
		return nil, err
	}
	return f.recs[id], nil
}

// addRecordings gives stream id two recordings, the older one without its MP4.
func (f *fakeRegistry) addRecordings(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	start := time.Now().UTC().Add(-3 * time.Hour)
	rec := func(session string, mp4 bool, at time.Time) *streams.Recording {
		prefix := "vod/" + id + "/" + session
		r := &streams.Recording{StreamID: id, SessionID: session, HLS: prefix + "/master.m3u8", DASH: prefix + "/manifest.mpd",
			Duration: 1200.5, Bytes: 987654321, FirstN: 0, LastN: 600, Renditions: []string{"720p", "480p", "source", "audio"},
			StartedAt: at, CreatedAt: at.Add(1201 * time.Second)}
		if mp4 {
			r.MP4, r.MP4Bytes = prefix+"/recording.mp4", 456789012
			r.Bytes += r.MP4Bytes
		}
		return r
	}
	f.recs[id] = []*streams.Recording{
		rec("0190f5a4-0000-7000-8000-000000000011", true, start.Add(time.Hour)),
		rec("0190f5a4-0000-7000-8000-000000000010", false, start),
	}
}

// goLive makes stream id live with a session that has a health report, and a history of one
// ended session.
func (f *fakeRegistry) goLive(id string) *streams.Session {
	f.mu.Lock()
	defer f.mu.Unlock()
	start := time.Now().UTC().Add(-90 * time.Second)
	ended := start.Add(-time.Hour)
	old := &streams.Session{ID: "0190f5a3-0000-7000-8000-000000000001", StreamID: id, StartedAt: ended.Add(-20 * time.Minute),
		EndedAt: &ended, BytesIn: 123456789, EndReason: "publisher left", UpdatedAt: ended}
	cur := &streams.Session{ID: "0190f5a4-0000-7000-8000-000000000002", StreamID: id, StartedAt: start, BytesIn: 4567890,
		UpdatedAt: time.Now().UTC(), Health: &streams.Health{
			VideoCodec: "avc1.64001f", AudioCodec: "mp4a.40.2", Width: 1280, Height: 720, FrameRate: 30,
			BitrateKbps: 3128.4, VideoBitrateKbps: 3000.2, AudioBitrateKbps: 128.2, KeyframeInterval: 2,
			BytesIn: 4567890, Warnings: []string{},
		}}
	f.live[id] = cur
	f.sessions[id] = []*streams.Session{cur, old}
	return cur
}

// ---- the harness ----

// syncBuffer collects the service's log.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

type harness struct {
	spec *spec
	reg  *fakeRegistry
	mux  *http.ServeMux
	logs *syncBuffer

	mu    sync.Mutex
	seen  map[string]bool // "METHOD /path STATUS" of every documented response produced
	codes map[string]bool // "responsePointer code" of every error code produced
	keys  []string        // every stream key handed out
}

func newHarness(t *testing.T) *harness {
	h := &harness{spec: loadSpec(t), reg: newFakeRegistry(), mux: http.NewServeMux(), logs: &syncBuffer{},
		seen: map[string]bool{}, codes: map[string]bool{}}
	svc := api.New(api.Config{Tokens: []string{testToken, otherToken}, RTMPURL: rtmpURL, PublicBaseURL: publicURL + "/"},
		slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})), h.reg)
	svc.Register(h.mux)
	return h
}

type result struct {
	status int
	header http.Header
	body   []byte
}

func (r result) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("response body %q: %v", r.body, err)
	}
	return m
}

func (r result) stream(t *testing.T) api.StreamView {
	t.Helper()
	var v api.StreamView
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("response body %q: %v", r.body, err)
	}
	return v
}

func (r result) errCode() string {
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	_ = json.Unmarshal(r.body, &e)
	return e.Error.Code
}

type reqOpt func(*http.Request)

func withHeader(k, v string) reqOpt { return func(r *http.Request) { r.Header.Set(k, v) } }

func noAuth(r *http.Request) { r.Header.Del("Authorization") }

// call sends a request through the mux with the test token (and a JSON Content-Type when there
// is a body), then holds request and response to the document.
func (h *harness) call(t *testing.T, method, path, body string, opts ...reqOpt) result {
	t.Helper()
	var rb io.Reader = http.NoBody
	if body != "" {
		rb = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, path, rb)
	req.Header.Set("Authorization", "Bearer "+testToken)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for _, o := range opts {
		o(req)
	}
	rec := httptest.NewRecorder()
	h.mux.ServeHTTP(rec, req)
	res := result{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
	h.check(t, req, body, res)
	return res
}

func (h *harness) check(t *testing.T, req *http.Request, body string, res result) {
	t.Helper()
	method := strings.ToLower(req.Method)
	tmpl, ok := h.spec.matchPath(req.URL.Path)
	if !ok {
		if res.status != http.StatusNotFound && res.status != http.StatusUnauthorized {
			t.Fatalf("%s %s (no such path in the document): status %d, want 404 or 401", req.Method, req.URL.Path, res.status)
		}
		h.checkComponentResponse(t, req, res)
		return
	}
	opPtr := "/paths/" + esc(tmpl) + "/" + method
	op := h.spec.obj(opPtr)
	if op == nil {
		// A method the path does not take: 405 naming the documented methods (after auth).
		if res.status == http.StatusMethodNotAllowed {
			var want []string
			for _, m := range httpMethods {
				if h.spec.obj("/paths/"+esc(tmpl)+"/"+m) != nil {
					want = append(want, strings.ToUpper(m))
				}
			}
			got := strings.Split(res.header.Get("Allow"), ", ")
			sort.Strings(got)
			sort.Strings(want)
			if !slices.Equal(got, want) {
				t.Errorf("%s %s: Allow %q, document has %q", req.Method, req.URL.Path, got, want)
			}
		} else if res.status != http.StatusUnauthorized {
			t.Fatalf("%s %s (method not in the document): status %d, want 405 or 401", req.Method, req.URL.Path, res.status)
		}
		h.checkComponentResponse(t, req, res)
		return
	}
	code := strconv.Itoa(res.status)
	if h.spec.obj(opPtr+"/responses/"+code) == nil {
		t.Fatalf("%s %s: status %d is not documented for %s %s; body %s", req.Method, req.URL.Path, res.status, req.Method, tmpl, res.body)
	}
	resp, respPtr := h.spec.deref(opPtr + "/responses/" + code)
	h.checkResponse(t, req, resp, respPtr, res)
	h.mu.Lock()
	h.seen[strings.ToUpper(method)+" "+tmpl+" "+code] = true
	h.mu.Unlock()
	h.checkRequest(t, req, body, tmpl, opPtr, res)
}

// checkComponentResponse checks a response given outside any operation (401, 404 or 405)
// against the shared response of that name.
func (h *harness) checkComponentResponse(t *testing.T, req *http.Request, res result) {
	t.Helper()
	name := map[int]string{401: "Unauthorized", 404: "NotFound", 405: "MethodNotAllowed"}[res.status]
	ptr := "/components/responses/" + name
	h.checkResponse(t, req, h.spec.obj(ptr), ptr, res)
}

func (h *harness) checkResponse(t *testing.T, req *http.Request, resp map[string]any, respPtr string, res result) {
	t.Helper()
	where := fmt.Sprintf("%s %s → %d", req.Method, req.URL.Path, res.status)
	content, _ := resp["content"].(map[string]any)
	if content == nil {
		if len(res.body) != 0 {
			t.Errorf("%s: body %q where the document has none", where, res.body)
		}
	} else {
		mt, _, err := mime.ParseMediaType(res.header.Get("Content-Type"))
		if err != nil || content[mt] == nil {
			t.Fatalf("%s: Content-Type %q not documented (%v)", where, res.header.Get("Content-Type"), err)
		}
		if strings.HasSuffix(mt, "json") {
			v, err := jsonschema.UnmarshalJSON(bytes.NewReader(res.body))
			if err != nil {
				t.Fatalf("%s: body is not JSON: %v\n%s", where, err, res.body)
			}
			if err := h.spec.schema(t, respPtr+"/content/"+esc(mt)+"/schema").Validate(v); err != nil {
				t.Errorf("%s: body does not match the document: %v\n%s", where, err, res.body)
			}
		}
	}
	headers, _ := resp["headers"].(map[string]any)
	for name := range headers {
		hdr, hdrPtr := h.spec.deref(respPtr + "/headers/" + esc(name))
		val := res.header.Get(name)
		if val == "" {
			if hdr["required"] == true {
				t.Errorf("%s: required header %s missing", where, name)
			}
			continue
		}
		if hdr["schema"] != nil {
			if err := h.spec.schema(t, hdrPtr+"/schema").Validate(val); err != nil {
				t.Errorf("%s: header %s: %v", where, name, err)
			}
		}
	}
	if codes, ok := resp["x-error-codes"].([]any); ok {
		code := res.errCode()
		if !slices.Contains(codes, any(code)) {
			t.Errorf("%s: error code %q, document lists %v", where, code, codes)
		}
		h.mu.Lock()
		h.codes[respPtr+" "+code] = true
		h.mu.Unlock()
	}
}

// checkRequest holds the document's request rules to the handler's: a request the handler
// accepts must be one the document allows, and one it refuses with 400 must be one the
// document forbids (when the body is JSON at all; a body that is not JSON has no schema to
// break).
func (h *harness) checkRequest(t *testing.T, req *http.Request, body, tmpl, opPtr string, res result) {
	t.Helper()
	if res.status != http.StatusBadRequest && res.status/100 != 2 {
		return
	}
	var problems []string
	if rb := h.spec.obj(opPtr + "/requestBody"); rb != nil {
		switch {
		case body == "":
			if rb["required"] == true {
				problems = append(problems, "no body")
			}
		case !json.Valid([]byte(body)):
			return
		default:
			v, _ := jsonschema.UnmarshalJSON(strings.NewReader(body))
			if err := h.spec.schema(t, opPtr+"/requestBody/content/application~1json/schema").Validate(v); err != nil {
				problems = append(problems, err.Error())
			}
		}
	}
	for key, ptr := range h.spec.params(tmpl, strings.ToLower(req.Method)) {
		in, name, _ := strings.Cut(key, ":")
		// An empty value counts as absent, as it does for the handlers' Query().Get.
		if in != "query" || req.URL.Query().Get(name) == "" {
			continue
		}
		raw := req.URL.Query().Get(name)
		var v any = raw
		if h.spec.at(ptr+"/schema/type") == "integer" {
			n, err := strconv.ParseInt(raw, 10, 64)
			if err != nil {
				problems = append(problems, name+" is not an integer")
				continue
			}
			v = json.Number(strconv.FormatInt(n, 10))
		}
		if err := h.spec.schema(t, ptr+"/schema").Validate(v); err != nil {
			problems = append(problems, err.Error())
		}
	}
	switch {
	case res.status/100 == 2 && len(problems) > 0:
		t.Errorf("%s %s: the handler accepted a request the document forbids: %v", req.Method, req.URL, problems)
	case res.status == http.StatusBadRequest && len(problems) == 0:
		t.Errorf("%s %s body %.80q: the handler refused (%s) a request the document allows", req.Method, req.URL, body, res.body)
	}
}

// ---- the tests ----

func TestAPI(t *testing.T) {
	h := newHarness(t)
	reg := h.reg

	var created api.StreamView
	t.Run("create", func(t *testing.T) {
		res := h.call(t, "POST", "/v1/streams", `{"name":"Main stage"}`)
		if res.status != http.StatusCreated {
			t.Fatalf("status %d: %s", res.status, res.body)
		}
		v := res.stream(t)
		created = v
		h.keys = append(h.keys, v.StreamKey)
		if !regexp.MustCompile(`^sk_[0-9a-f]{40}$`).MatchString(v.StreamKey) {
			t.Errorf("stream_key %q", v.StreamKey)
		}
		want := api.StreamView{
			ID: v.ID, Name: "Main stage", Profile: "default", Record: false, StreamKey: v.StreamKey,
			RTMPURL: rtmpURL, PublishURL: rtmpURL + "/" + v.StreamKey,
			Playback: api.Playback{HLS: publicURL + "/live/" + v.ID + "/master.m3u8", DASH: publicURL + "/live/" + v.ID + "/manifest.mpd"},
			Status:   "idle", CreatedAt: v.CreatedAt, UpdatedAt: v.UpdatedAt,
		}
		if !reflect.DeepEqual(v, want) {
			t.Errorf("got  %+v\nwant %+v", v, want)
		}
		if reg.streams[v.ID].KeyHash != streams.HashKey(v.StreamKey) {
			t.Error("the key returned is not the key stored")
		}
		if cc := res.header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("Cache-Control %q", cc)
		}

		res = h.call(t, "POST", "/v1/streams", `{"name":"Backup, 1080p","profile":"hd","record":true}`,
			withHeader("Content-Type", "application/json; charset=utf-8"), withHeader("Authorization", "Bearer "+otherToken))
		if res.status != http.StatusCreated {
			t.Fatalf("status %d: %s", res.status, res.body)
		}
		v = res.stream(t)
		h.keys = append(h.keys, v.StreamKey)
		if v.Profile != "hd" || !v.Record || v.Name != "Backup, 1080p" || v.StreamKey == "" || v.StreamKey == created.StreamKey {
			t.Errorf("got %+v", v)
		}

		// No Content-Type at all is taken as JSON.
		res = h.call(t, "POST", "/v1/streams", `{"name":"No type"}`, func(r *http.Request) { r.Header.Del("Content-Type") })
		if res.status != http.StatusCreated {
			t.Fatalf("status %d: %s", res.status, res.body)
		}
		h.keys = append(h.keys, res.stream(t).StreamKey)
	})

	t.Run("create errors", func(t *testing.T) {
		for _, tc := range []struct {
			name, body, ct string
			status         int
			code           string
		}{
			{"bad JSON", `{"name":`, "", 400, "invalid_json"},
			{"not an object", `["name"]`, "", 400, "invalid_json"},
			{"empty body", ``, "", 400, "invalid_json"},
			{"unknown field", `{"name":"a","nmae":"b"}`, "", 400, "invalid_json"},
			{"wrong type", `{"name":"a","record":"yes"}`, "", 400, "invalid_json"},
			{"trailing data", `{"name":"a"} {"name":"b"}`, "", 400, "invalid_json"},
			{"bad profile", `{"name":"a","profile":"4k"}`, "", 400, "invalid_profile"},
			{"no name", `{"profile":"hd"}`, "", 400, "invalid_request"},
			{"blank name", `{"name":"   "}`, "", 400, "invalid_request"},
			{"bad character", `{"name":"a<script>"}`, "", 400, "invalid_request"},
			{"long name", `{"name":"` + strings.Repeat("é", 129) + `"}`, "", 400, "invalid_request"},
			{"text/plain", `{"name":"a"}`, "text/plain", 415, "unsupported_media_type"},
			{"form", `name=a`, "application/x-www-form-urlencoded", 415, "unsupported_media_type"},
			{"over 64 KiB", `{"name":"` + strings.Repeat("a", 64<<10) + `"}`, "", 413, "body_too_large"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				var opts []reqOpt
				if tc.ct != "" {
					opts = append(opts, withHeader("Content-Type", tc.ct))
				}
				n := len(reg.streams)
				res := h.call(t, "POST", "/v1/streams", tc.body, opts...)
				if res.status != tc.status || res.errCode() != tc.code {
					t.Errorf("got %d %s, want %d %s: %s", res.status, res.errCode(), tc.status, tc.code, res.body)
				}
				if len(reg.streams) != n {
					t.Error("a stream was created")
				}
			})
		}
		// The longest name allowed is fine.
		res := h.call(t, "POST", "/v1/streams", `{"name":"`+strings.Repeat("é", 128)+`"}`)
		if res.status != http.StatusCreated {
			t.Errorf("128-letter name: %d %s", res.status, res.body)
		}
		h.keys = append(h.keys, res.stream(t).StreamKey)
	})

	t.Run("auth", func(t *testing.T) {
		for _, route := range api.Routes {
			method, pattern, _ := strings.Cut(route, " ")
			if route == "GET /v1/openapi.yaml" {
				continue
			}
			path := strings.ReplaceAll(pattern, "{id}", created.ID)
			for _, tc := range []struct {
				name, auth, challenge string
			}{
				{"no token", "", `Bearer realm="gopcast"`},
				{"wrong token", "Bearer nope", `Bearer realm="gopcast", error="invalid_token"`},
				{"another scheme", "Basic " + testToken, `Bearer realm="gopcast"`},
				{"empty token", "Bearer ", `Bearer realm="gopcast"`},
			} {
				opt := noAuth
				if tc.auth != "" {
					opt = withHeader("Authorization", tc.auth)
				}
				res := h.call(t, method, path, `{"name":"x"}`, opt)
				if res.status != http.StatusUnauthorized || res.errCode() != "unauthorized" || res.header.Get("WWW-Authenticate") != tc.challenge {
					t.Errorf("%s %s, %s: %d %s, WWW-Authenticate %q", method, path, tc.name, res.status, res.errCode(), res.header.Get("WWW-Authenticate"))
				}
			}
		}
		if n := len(reg.streams); n != 4 {
			t.Errorf("%d streams after unauthenticated requests, want 4", n)
		}
		// Unknown paths and methods are not revealed without a token either.
		for _, r := range [][2]string{{"GET", "/v1/nope"}, {"PUT", "/v1/streams"}} {
			if res := h.call(t, r[0], r[1], "", noAuth); res.status != http.StatusUnauthorized {
				t.Errorf("%s %s without a token: %d", r[0], r[1], res.status)
			}
		}
	})

	t.Run("openapi.yaml", func(t *testing.T) {
		res := h.call(t, "GET", "/v1/openapi.yaml", "", noAuth)
		if res.status != http.StatusOK || !bytes.Equal(res.body, api.OpenAPI) {
			t.Errorf("status %d, %d bytes", res.status, len(res.body))
		}
	})

	t.Run("get", func(t *testing.T) {
		res := h.call(t, "GET", "/v1/streams/"+created.ID, "")
		if res.status != http.StatusOK {
			t.Fatalf("status %d: %s", res.status, res.body)
		}
		m := res.json(t)
		if _, ok := m["stream_key"]; ok {
			t.Error("stream_key shown by get")
		}
		if _, ok := m["publish_url"]; ok {
			t.Error("publish_url shown by get")
		}
		v := res.stream(t)
		want := created
		want.StreamKey, want.PublishURL = "", ""
		if !v.CreatedAt.Equal(want.CreatedAt) || !v.UpdatedAt.Equal(want.UpdatedAt) {
			t.Errorf("times %v %v, want %v %v", v.CreatedAt, v.UpdatedAt, want.CreatedAt, want.UpdatedAt)
		}
		v.CreatedAt, v.UpdatedAt, want.CreatedAt, want.UpdatedAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
		if !reflect.DeepEqual(v, want) {
			t.Errorf("got  %+v\nwant %+v", v, want)
		}

		for _, id := range []string{"0190f5a4-0000-7000-8000-999999999999", "not-a-uuid", url.PathEscape("../x")} {
			res := h.call(t, "GET", "/v1/streams/"+id, "")
			if res.status != http.StatusNotFound || res.errCode() != "not_found" {
				t.Errorf("unknown id %s: %d %s", id, res.status, res.body)
			}
		}
	})

	t.Run("live", func(t *testing.T) {
		sess := reg.goLive(created.ID)
		res := h.call(t, "GET", "/v1/streams/"+created.ID, "")
		v := res.stream(t)
		if res.status != http.StatusOK || v.Status != "live" || v.Live == nil || v.Live.SessionID != sess.ID ||
			!v.Live.StartedAt.Equal(sess.StartedAt) || v.Live.Ingest == nil || v.Live.Ingest.Height != 720 {
			t.Fatalf("live stream: %d %s", res.status, res.body)
		}
		// Before ingest's first report there is no health.
		reg.mu.Lock()
		reg.live[created.ID] = &streams.Session{ID: sess.ID, StreamID: created.ID, StartedAt: sess.StartedAt, UpdatedAt: sess.StartedAt}
		reg.mu.Unlock()
		res = h.call(t, "GET", "/v1/streams/"+created.ID, "")
		if m := res.json(t); m["status"] != "live" || m["live"].(map[string]any)["ingest"] != nil {
			t.Errorf("live without health: %s", res.body)
		}
		reg.mu.Lock()
		reg.live[created.ID] = sess
		reg.mu.Unlock()
	})

	t.Run("list", func(t *testing.T) {
		var want []string
		for id := range reg.streams {
			want = append(want, id)
		}
		sort.Strings(want)

		var got []string
		cursor, pages := "", 0
		for {
			q := url.Values{"limit": {"2"}}
			if cursor != "" {
				q.Set("cursor", cursor)
			}
			res := h.call(t, "GET", "/v1/streams?"+q.Encode(), "")
			if res.status != http.StatusOK {
				t.Fatalf("status %d: %s", res.status, res.body)
			}
			var page struct {
				Streams    []map[string]any `json:"streams"`
				NextCursor *string          `json:"next_cursor"`
			}
			if err := json.Unmarshal(res.body, &page); err != nil {
				t.Fatal(err)
			}
			pages++
			for _, s := range page.Streams {
				got = append(got, s["id"].(string))
				if s["stream_key"] != nil || s["publish_url"] != nil {
					t.Errorf("list shows a stream key: %v", s)
				}
				if s["id"] == created.ID && s["status"] != "live" {
					t.Errorf("live stream listed as %v", s["status"])
				}
			}
			if page.NextCursor == nil {
				break
			}
			if *page.NextCursor == "" || len(page.Streams) != 2 || pages > 10 {
				t.Fatalf("page %d: %s", pages, res.body)
			}
			cursor = *page.NextCursor
		}
		if !slices.Equal(got, want) || pages != (len(want)+1)/2 {
			t.Errorf("paged through %q in %d pages, want %q in %d", got, pages, want, (len(want)+1)/2)
		}

		// Default limit, as documented.
		res := h.call(t, "GET", "/v1/streams", "")
		if res.status != http.StatusOK || len(res.json(t)["streams"].([]any)) != len(want) || res.json(t)["next_cursor"] != nil {
			t.Errorf("default page: %s", res.body)
		}
		if def := h.spec.at("/paths/~1v1~1streams/get/parameters/0/schema/default"); fmt.Sprint(def) != strconv.Itoa(reg.limits["List"]) {
			t.Errorf("default limit %d, document says %v", reg.limits["List"], def)
		}

		// The limit's range, value by value, is the document's (checkRequest compares them).
		for _, l := range []string{"-1", "0", "1", "50", "100", "101", "1000", "x", "2.5", ""} {
			res := h.call(t, "GET", "/v1/streams?limit="+l, "")
			if res.status == http.StatusBadRequest && res.errCode() != "invalid_request" {
				t.Errorf("limit=%s: %s", l, res.body)
			}
		}
	})

	t.Run("update", func(t *testing.T) {
		path := "/v1/streams/" + created.ID
		before := reg.streams[created.ID].UpdatedAt
		res := h.call(t, "PATCH", path, `{"name":"Main stage (backup)"}`)
		v := res.stream(t)
		if res.status != http.StatusOK || v.Name != "Main stage (backup)" || v.Profile != "default" || v.Record || v.StreamKey != "" || v.PublishURL != "" {
			t.Fatalf("rename: %d %s", res.status, res.body)
		}
		if v.UpdatedAt.Before(before) {
			t.Error("updated_at went back")
		}
		res = h.call(t, "PATCH", path, `{"profile":"passthrough","record":true}`)
		if v := res.stream(t); res.status != http.StatusOK || v.Name != "Main stage (backup)" || v.Profile != "passthrough" || !v.Record {
			t.Fatalf("settings: %d %s", res.status, res.body)
		}
		res = h.call(t, "PATCH", path, `{"record":false}`)
		if v := res.stream(t); res.status != http.StatusOK || v.Record || v.Profile != "passthrough" {
			t.Fatalf("record off: %d %s", res.status, res.body)
		}
		if st := reg.streams[created.ID]; st.KeyHash != streams.HashKey(created.StreamKey) {
			t.Error("update changed the key")
		}

		for _, tc := range []struct {
			name, path, body, ct string
			status               int
			code                 string
		}{
			{"empty patch", path, `{}`, "", 400, "invalid_request"},
			{"null name", path, `{"name":null}`, "", 400, "invalid_request"},
			{"blank name", path, `{"name":""}`, "", 400, "invalid_request"},
			{"bad profile", path, `{"profile":"4k"}`, "", 400, "invalid_profile"},
			{"unknown field", path, `{"stream_key":"sk_x"}`, "", 400, "invalid_json"},
			{"bad JSON", path, `{`, "", 400, "invalid_json"},
			{"no body", path, ``, "", 400, "invalid_json"},
			{"text/plain", path, `{"name":"a"}`, "text/plain", 415, "unsupported_media_type"},
			{"look-alike type", path, `{"name":"a"}`, "application/jsonx", 415, "unsupported_media_type"},
			{"over 64 KiB", path, `{"name":"` + strings.Repeat("a", 70000) + `"}`, "", 413, "body_too_large"},
			{"unknown id", "/v1/streams/0190f5a4-0000-7000-8000-999999999999", `{"name":"a"}`, "", 404, "not_found"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				var opts []reqOpt
				if tc.ct != "" {
					opts = append(opts, withHeader("Content-Type", tc.ct))
				}
				res := h.call(t, "PATCH", tc.path, tc.body, opts...)
				if res.status != tc.status || res.errCode() != tc.code {
					t.Errorf("got %d %s, want %d %s: %s", res.status, res.errCode(), tc.status, tc.code, res.body)
				}
			})
		}
		if st := reg.streams[created.ID]; st.Name != "Main stage (backup)" || st.Profile != "passthrough" || st.Record {
			t.Errorf("refused patches changed the stream: %+v", st)
		}
	})

	t.Run("rotate-key", func(t *testing.T) {
		res := h.call(t, "POST", "/v1/streams/"+created.ID+"/rotate-key", "")
		v := res.stream(t)
		if res.status != http.StatusOK || v.StreamKey == "" || v.StreamKey == created.StreamKey || v.PublishURL != rtmpURL+"/"+v.StreamKey || v.ID != created.ID {
			t.Fatalf("rotate: %d %s", res.status, res.body)
		}
		h.keys = append(h.keys, v.StreamKey)
		if reg.streams[created.ID].KeyHash != streams.HashKey(v.StreamKey) {
			t.Error("the new key is not the key stored")
		}
		if cc := res.header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("Cache-Control %q", cc)
		}
		if res := h.call(t, "GET", "/v1/streams/"+created.ID, ""); res.stream(t).StreamKey != "" {
			t.Error("get shows the rotated key")
		}
		res = h.call(t, "POST", "/v1/streams/0190f5a4-0000-7000-8000-999999999999/rotate-key", "")
		if res.status != http.StatusNotFound || res.errCode() != "not_found" {
			t.Errorf("unknown id: %d %s", res.status, res.body)
		}
	})

	t.Run("sessions", func(t *testing.T) {
		path := "/v1/streams/" + created.ID + "/sessions"
		res := h.call(t, "GET", path, "")
		if res.status != http.StatusOK {
			t.Fatalf("status %d: %s", res.status, res.body)
		}
		var out struct {
			Sessions []map[string]any `json:"sessions"`
		}
		if err := json.Unmarshal(res.body, &out); err != nil {
			t.Fatal(err)
		}
		if len(out.Sessions) != 2 {
			t.Fatalf("sessions: %s", res.body)
		}
		live, ended := out.Sessions[0], out.Sessions[1]
		if live["status"] != "live" || live["ended_at"] != nil || live["end_reason"] != nil || live["duration_s"].(float64) < 89 {
			t.Errorf("live session: %v", live)
		}
		if ended["status"] != "ended" || ended["ended_at"] == nil || ended["end_reason"] != "publisher left" ||
			ended["duration_s"] != 1200.0 || ended["bytes_in"] != 123456789.0 {
			t.Errorf("ended session: %v", ended)
		}
		if def := h.spec.at("/paths/~1v1~1streams~1{id}~1sessions/get/parameters/0/schema/default"); fmt.Sprint(def) != strconv.Itoa(reg.limits["Sessions"]) {
			t.Errorf("default limit %d, document says %v", reg.limits["Sessions"], def)
		}
		res = h.call(t, "GET", path+"?limit=1", "")
		if n := len(res.json(t)["sessions"].([]any)); res.status != http.StatusOK || n != 1 {
			t.Errorf("limit=1: %d sessions", n)
		}
		for _, l := range []string{"0", "1", "500", "501", "x"} {
			res := h.call(t, "GET", path+"?limit="+l, "")
			if res.status == http.StatusBadRequest && res.errCode() != "invalid_request" {
				t.Errorf("limit=%s: %s", l, res.body)
			}
		}
		// A stream that never went live has an empty list, not null.
		res = h.call(t, "GET", "/v1/streams/"+firstOther(reg, created.ID)+"/sessions", "")
		if res.status != http.StatusOK || !strings.Contains(string(res.body), `"sessions": []`) {
			t.Errorf("no sessions: %d %s", res.status, res.body)
		}
		res = h.call(t, "GET", "/v1/streams/0190f5a4-0000-7000-8000-999999999999/sessions", "")
		if res.status != http.StatusNotFound || res.errCode() != "not_found" {
			t.Errorf("unknown id: %d %s", res.status, res.body)
		}
	})

	t.Run("recordings", func(t *testing.T) {
		path := "/v1/streams/" + created.ID + "/recordings"
		res := h.call(t, "GET", path, "")
		if res.status != http.StatusOK || !strings.Contains(string(res.body), `"recordings": []`) {
			t.Errorf("no recordings: %d %s", res.status, res.body)
		}
		reg.addRecordings(created.ID)
		res = h.call(t, "GET", path, "")
		var out struct {
			Recordings []api.RecordingView `json:"recordings"`
		}
		if err := json.Unmarshal(res.body, &out); err != nil || res.status != http.StatusOK || len(out.Recordings) != 2 {
			t.Fatalf("recordings: %d %s", res.status, res.body)
		}
		newest, older := out.Recordings[0], out.Recordings[1]
		prefix := publicURL + "/vod/" + created.ID + "/" + newest.SessionID
		if newest.HLS != prefix+"/master.m3u8" || newest.DASH != prefix+"/manifest.mpd" || newest.MP4 != prefix+"/recording.mp4" ||
			newest.MP4Bytes != 456789012 || newest.Duration != 1200.5 {
			t.Errorf("newest recording: %+v", newest)
		}
		if older.MP4 != "" || older.MP4Bytes != 0 || strings.Contains(string(res.body), `"mp4": ""`) {
			t.Errorf("recording without an MP4: %s", res.body)
		}
		res = h.call(t, "GET", "/v1/streams/0190f5a4-0000-7000-8000-999999999999/recordings", "")
		if res.status != http.StatusNotFound || res.errCode() != "not_found" {
			t.Errorf("unknown id: %d %s", res.status, res.body)
		}
	})

	t.Run("conflict", func(t *testing.T) {
		reg.failing(t, "Update", fmt.Errorf("streams: %s: %w", created.ID, streams.ErrConflict))
		reg.failing(t, "RotateKey", fmt.Errorf("streams: %s: %w", created.ID, streams.ErrConflict))
		for _, r := range [][3]string{
			{"PATCH", "/v1/streams/" + created.ID, `{"name":"x"}`},
			{"POST", "/v1/streams/" + created.ID + "/rotate-key", ""},
		} {
			res := h.call(t, r[0], r[1], r[2])
			if res.status != http.StatusConflict || res.errCode() != "conflict" {
				t.Errorf("%s %s: %d %s", r[0], r[1], res.status, res.body)
			}
		}
	})

	t.Run("internal errors", func(t *testing.T) {
		secret := errors.New("kv: nats: connection refused to 10.0.0.7")
		id := created.ID
		for _, tc := range []struct {
			fail, method, path, body string
		}{
			{"Create", "POST", "/v1/streams", `{"name":"x"}`},
			{"List", "GET", "/v1/streams", ""},
			{"Get", "GET", "/v1/streams/" + id, ""},
			{"Update", "PATCH", "/v1/streams/" + id, `{"name":"x"}`},
			{"Delete", "DELETE", "/v1/streams/" + id, ""},
			{"RotateKey", "POST", "/v1/streams/" + id + "/rotate-key", ""},
			{"Get", "GET", "/v1/streams/" + id + "/sessions", ""},
			{"Sessions", "GET", "/v1/streams/" + id + "/sessions", ""},
			{"Get", "GET", "/v1/streams/" + id + "/recordings", ""},
			{"ListRecordings", "GET", "/v1/streams/" + id + "/recordings", ""},
		} {
			t.Run(tc.fail+" "+tc.method+" "+tc.path, func(t *testing.T) {
				reg.failing(t, tc.fail, secret)
				res := h.call(t, tc.method, tc.path, tc.body)
				if res.status != http.StatusInternalServerError || res.errCode() != "internal" {
					t.Errorf("%d %s", res.status, res.body)
				}
				if strings.Contains(string(res.body), "10.0.0.7") {
					t.Errorf("internal detail in the response: %s", res.body)
				}
			})
		}
		if _, ok := reg.streams[id]; !ok {
			t.Error("a failed delete deleted the stream")
		}
	})

	t.Run("methods and paths", func(t *testing.T) {
		// Every documented path refuses a method it does not take with 405 and an Allow header
		// listing the documented ones (checked by check).
		for tmpl := range h.spec.obj("/paths") {
			path := strings.ReplaceAll(tmpl, "{id}", created.ID)
			for _, m := range []string{"PUT", "DELETE", "PATCH", "POST"} {
				if h.spec.obj("/paths/"+esc(tmpl)+"/"+strings.ToLower(m)) != nil {
					continue
				}
				res := h.call(t, m, path, "")
				if res.status != http.StatusMethodNotAllowed || res.errCode() != "method_not_allowed" {
					t.Errorf("%s %s: %d %s", m, path, res.status, res.body)
				}
			}
		}
		for _, p := range []string{"/v1/nope", "/v1/streams/" + created.ID + "/chapters", "/v1/streams/" + created.ID + "/a/b", "/v1/streams/"} {
			res := h.call(t, "GET", p, "")
			if res.status != http.StatusNotFound || res.errCode() != "not_found" {
				t.Errorf("GET %s: %d %s", p, res.status, res.body)
			}
		}
	})

	t.Run("delete", func(t *testing.T) {
		path := "/v1/streams/" + created.ID
		reg.failing(t, "DeleteSessions", errors.New("kv down")) // history cleanup failing does not fail the delete
		res := h.call(t, "DELETE", path, "")
		if res.status != http.StatusNoContent || len(res.body) != 0 {
			t.Fatalf("delete: %d %s", res.status, res.body)
		}
		if _, ok := reg.streams[created.ID]; ok {
			t.Error("stream still there")
		}
		for _, r := range [][2]string{{"GET", path}, {"DELETE", path}, {"GET", path + "/sessions"}, {"POST", path + "/rotate-key"}} {
			if res := h.call(t, r[0], r[1], ""); res.status != http.StatusNotFound {
				t.Errorf("%s %s after delete: %d", r[0], r[1], res.status)
			}
		}
		reg.mu.Lock()
		delete(reg.fail, "DeleteSessions")
		reg.mu.Unlock()
		other := firstOther(reg, "")
		reg.goLive(other)
		if res := h.call(t, "DELETE", "/v1/streams/"+other, ""); res.status != http.StatusNoContent {
			t.Fatalf("delete: %d %s", res.status, res.body)
		}
		if reg.sessions[other] != nil || reg.live[other] != nil {
			t.Error("session history kept after delete")
		}
	})

	// The document promises nothing the handlers never do: every documented status of every
	// operation, and every error code of every error response, was produced above.
	t.Run("coverage", func(t *testing.T) {
		if f := flag.Lookup("test.run"); f != nil && strings.Contains(f.Value.String(), "/") {
			t.Skip("needs every subtest to have run")
		}
		for _, op := range h.spec.operations() {
			method, path, _ := strings.Cut(op, " ")
			for code := range h.spec.obj("/paths/" + esc(path) + "/" + strings.ToLower(method) + "/responses") {
				if !h.seen[op+" "+code] {
					t.Errorf("%s %s is documented but no test produced it", op, code)
				}
			}
		}
		for name, r := range h.spec.obj("/components/responses") {
			codes, _ := r.(map[string]any)["x-error-codes"].([]any)
			for _, c := range codes {
				if !h.codes["/components/responses/"+name+" "+c.(string)] {
					t.Errorf("response %s lists code %s but no test produced it", name, c)
				}
			}
		}
	})

	t.Run("secrets stay out of the log", func(t *testing.T) {
		logs := h.logs.String()
		if !strings.Contains(logs, "stream created") {
			t.Fatalf("no log captured: %q", logs)
		}
		for _, s := range append(h.keys, testToken, otherToken) {
			if s != "" && strings.Contains(logs, s) {
				t.Errorf("secret %q in the log", s)
			}
		}
	})
}

// firstOther returns a stream id other than not.
func firstOther(reg *fakeRegistry, not string) string {
	reg.mu.Lock()
	defer reg.mu.Unlock()
	var ids []string
	for id := range reg.streams {
		if id != not {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids[0]
}
