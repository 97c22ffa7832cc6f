package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
)

// The API's JSON, as far as the tables need it (services/api/openapi.yaml is the contract).
type stream struct {
	ID         string    `json:"id"`
	Name       string    `json:"name"`
	Profile    string    `json:"profile"`
	Record     bool      `json:"record"`
	StreamKey  string    `json:"stream_key"`
	RTMPURL    string    `json:"rtmp_url"`
	PublishURL string    `json:"publish_url"`
	Playback   playback  `json:"playback"`
	Status     string    `json:"status"`
	Live       *live     `json:"live"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
}

type playback struct {
	HLS  string `json:"hls"`
	DASH string `json:"dash"`
}

type live struct {
	SessionID string    `json:"session_id"`
	StartedAt time.Time `json:"started_at"`
	Ingest    *health   `json:"ingest"`
}

type health struct {
	VideoCodec       string   `json:"video_codec"`
	AudioCodec       string   `json:"audio_codec"`
	Width            int      `json:"width"`
	Height           int      `json:"height"`
	FrameRate        float64  `json:"frame_rate"`
	BitrateKbps      float64  `json:"bitrate_kbps"`
	VideoBitrateKbps float64  `json:"video_bitrate_kbps"`
	AudioBitrateKbps float64  `json:"audio_bitrate_kbps"`
	KeyframeInterval float64  `json:"keyframe_interval_s"`
	BytesIn          uint64   `json:"bytes_in"`
	Warnings         []string `json:"warnings"`
}

type streamPage struct {
	Streams    []stream `json:"streams"`
	NextCursor string   `json:"next_cursor"`
	raw        []byte
}

type session struct {
	ID        string     `json:"id"`
	Status    string     `json:"status"`
	StartedAt time.Time  `json:"started_at"`
	EndedAt   *time.Time `json:"ended_at"`
	Duration  float64    `json:"duration_s"`
	BytesIn   uint64     `json:"bytes_in"`
	EndReason string     `json:"end_reason"`
}

type recording struct {
	SessionID string    `json:"session_id"`
	HLS       string    `json:"hls"`
	DASH      string    `json:"dash"`
	MP4       string    `json:"mp4"`
	Duration  float64   `json:"duration_s"`
	Bytes     int64     `json:"bytes"`
	MP4Bytes  int64     `json:"mp4_bytes"`
	StartedAt time.Time `json:"started_at"`
	CreatedAt time.Time `json:"created_at"`
}

const (
	keyNoteCreate = `The stream key is shown only this once: store it now. If it is lost, run
"gopcast streams rotate-key %s" for a new one.
`
	keyNoteRotate = `The new stream key is shown only this once: store it now. The old key no longer works,
and a publisher using it has been disconnected.
`
)

// printJSON prints the API's JSON re-indented.
func (c *cli) printJSON(raw []byte) int {
	var b bytes.Buffer
	if err := json.Indent(&b, bytes.TrimSpace(raw), "", "  "); err != nil {
		return c.fail(fmt.Errorf("the API's response is not JSON: %w", err))
	}
	b.WriteByte('\n')
	_, _ = c.stdout.Write(b.Bytes())
	return exitOK
}

// joinPages makes one {"streams": [...]} of the pages followed by list --all.
func joinPages(pages []streamPage) []byte {
	all := []json.RawMessage{}
	for _, p := range pages {
		var v struct {
			Streams []json.RawMessage `json:"streams"`
		}
		_ = json.Unmarshal(p.raw, &v)
		all = append(all, v.Streams...)
	}
	b, _ := json.Marshal(map[string]any{"streams": all})
	return b
}

func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

// printStream prints one stream: the API's JSON, or a headline, the stream's fields, and its
// key with keyNote when the response has one.
func (c *cli) printStream(raw []byte, headline, keyNote string) int {
	if c.output == "json" {
		return c.printJSON(raw)
	}
	var s stream
	if err := decode(raw, &s); err != nil {
		return c.fail(err)
	}
	if headline != "" {
		fmt.Fprintln(c.stdout, headline)
	}
	tw := newTable(c.stdout)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, clean(v)) }
	row("ID", s.ID)
	row("Name", s.Name)
	row("Profile", s.Profile)
	row("Record", yesNo(s.Record))
	switch {
	case s.Status == "live" && s.Live != nil:
		row("Status", fmt.Sprintf("live since %s (%s), session %s", fmtTime(s.Live.StartedAt),
			fmtDuration(time.Since(s.Live.StartedAt).Seconds()), s.Live.SessionID))
		if h := s.Live.Ingest; h != nil {
			media := fmt.Sprintf("%s %dx%d @ %s fps", h.VideoCodec, h.Width, h.Height, fmtNum(h.FrameRate))
			if h.AudioCodec != "" {
				media += ", audio " + h.AudioCodec
			} else {
				media += ", no audio"
			}
			row("Ingest", media)
			row("Bitrate", fmt.Sprintf("%s kbps (video %s, audio %s)", fmtNum(h.BitrateKbps), fmtNum(h.VideoBitrateKbps), fmtNum(h.AudioBitrateKbps)))
			row("Keyframes", "every "+fmtNum(h.KeyframeInterval)+" s")
			row("Received", fmtBytes(int64(h.BytesIn)))
			if len(h.Warnings) == 0 {
				row("Warnings", "none")
			}
			for i, w := range h.Warnings {
				k := ""
				if i == 0 {
					k = "Warnings:"
				}
				fmt.Fprintf(tw, "%s\t%s\n", k, clean(w))
			}
		}
	default:
		row("Status", s.Status)
	}
	row("RTMP URL", s.RTMPURL)
	row("HLS", s.Playback.HLS)
	row("DASH", s.Playback.DASH)
	row("Created", fmtTime(s.CreatedAt))
	row("Updated", fmtTime(s.UpdatedAt))
	_ = tw.Flush()
	if s.StreamKey != "" {
		fmt.Fprintln(c.stdout)
		tw = newTable(c.stdout)
		row("Stream key", s.StreamKey)
		row("Publish URL", s.PublishURL)
		_ = tw.Flush()
		if keyNote != "" {
			fmt.Fprintln(c.stdout)
			if strings.Contains(keyNote, "%s") {
				keyNote = fmt.Sprintf(keyNote, clean(s.ID))
			}
			fmt.Fprint(c.stdout, keyNote)
		}
	}
	return exitOK
}

func (c *cli) printStreamTable(list []stream) {
	if len(list) == 0 {
		fmt.Fprintln(c.stdout, "No streams.")
		return
	}
	tw := newTable(c.stdout)
	fmt.Fprintln(tw, "ID\tNAME\tPROFILE\tSTATUS\tRECORD\tCREATED")
	for _, s := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", clean(s.ID), clean(s.Name), clean(s.Profile), clean(s.Status), yesNo(s.Record), fmtTime(s.CreatedAt))
	}
	_ = tw.Flush()
}

func (c *cli) printSessionTable(list []session) {
	if len(list) == 0 {
		fmt.Fprintln(c.stdout, "No sessions.")
		return
	}
	tw := newTable(c.stdout)
	fmt.Fprintln(tw, "ID\tSTATUS\tSTARTED\tENDED\tDURATION\tRECEIVED\tEND REASON")
	for _, s := range list {
		ended := "-"
		if s.EndedAt != nil {
			ended = fmtTime(*s.EndedAt)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", clean(s.ID), clean(s.Status), fmtTime(s.StartedAt), ended,
			fmtDuration(s.Duration), fmtBytes(int64(s.BytesIn)), ifNot(clean(s.EndReason), "-"))
	}
	_ = tw.Flush()
}

func (c *cli) printRecordingTable(list []recording) {
	if len(list) == 0 {
		fmt.Fprintln(c.stdout, "No recordings.")
		return
	}
	tw := newTable(c.stdout)
	fmt.Fprintln(tw, "SESSION\tSTARTED\tDURATION\tSIZE\tHLS\tMP4")
	for _, r := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", clean(r.SessionID), fmtTime(r.StartedAt), fmtDuration(r.Duration),
			fmtBytes(r.Bytes), clean(r.HLS), ifNot(clean(r.MP4), "-"))
	}
	_ = tw.Flush()
}

// clean keeps control characters the server sent out of the terminal (and out of the table's
// columns).
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return '?'
		}
		return r
	}, s)
}

// ifNot returns s, or alt when s is empty.
func ifNot(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func fmtDuration(sec float64) string {
	if sec < 0 {
		sec = 0
	}
	return time.Duration(sec * float64(time.Second)).Round(time.Second).String()
}

func fmtNum(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

func fmtBytes(n int64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %cB", float64(n)/float64(div), "kMGTP"[exp])
}
