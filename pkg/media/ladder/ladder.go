// Package ladder defines the adaptive-bitrate ladders gopcast encodes and the ffmpeg command
// line that encodes one chunk into every rung of one. Building the arguments is a pure
// function, golden-tested; running ffmpeg is the transcoder's job.
package ladder

import (
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strconv"

	ffmpeg "github.com/u2takey/ffmpeg-go"
)

// Rung is one encoded video rendition.
type Rung struct {
	Name    string // rendition directory name, e.g. "720p"
	Height  int    // output height; width follows the source aspect ratio
	Bitrate int    // target video bits/s
}

// Profile is a named ladder.
type Profile struct {
	Name  string
	Rungs []Rung // highest first
	// Preset is the x264 preset every rung uses.
	Preset string
}

// Profiles are the ladders gopcast knows. "passthrough" encodes nothing: the source video and
// audio are repackaged only.
var Profiles = map[string]Profile{
	"default": {Name: "default", Preset: "veryfast", Rungs: []Rung{
		{Name: "720p", Height: 720, Bitrate: 3_000_000},
		{Name: "480p", Height: 480, Bitrate: 1_200_000},
		{Name: "360p", Height: 360, Bitrate: 700_000},
	}},
	"hd": {Name: "hd", Preset: "veryfast", Rungs: []Rung{
		{Name: "1080p", Height: 1080, Bitrate: 6_000_000},
		{Name: "720p", Height: 720, Bitrate: 3_000_000},
		{Name: "480p", Height: 480, Bitrate: 1_200_000},
		{Name: "360p", Height: 360, Bitrate: 700_000},
	}},
	"passthrough": {Name: "passthrough"},
}

// Names lists the profile names, sorted.
func Names() []string {
	n := make([]string, 0, len(Profiles))
	for k := range Profiles {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// Lookup returns the named profile.
func Lookup(name string) (Profile, error) {
	p, ok := Profiles[name]
	if !ok {
		return Profile{}, fmt.Errorf("unknown profile %q (known: %v)", name, Names())
	}
	return p, nil
}

// Select returns the rungs worth encoding for a source of the given height and measured video
// bitrate: never above the source height, and at the source height only when the rung saves
// real bandwidth over passing the source through.
func (p Profile) Select(srcHeight, srcBitrate int) []Rung {
	var out []Rung
	for _, r := range p.Rungs {
		switch {
		case r.Height > srcHeight:
		case r.Height == srcHeight && srcBitrate > 0 && float64(r.Bitrate) >= 0.8*float64(srcBitrate):
		default:
			out = append(out, r)
		}
	}
	return out
}

// Job describes one ffmpeg run over one chunk.
type Job struct {
	Input  string // MPEG-TS chunk file
	OutDir string // each rung is written to OutDir/NAME.ts
	Rungs  []Rung
	Preset string
	// GOP is the keyframe interval in frames; every output also starts on a keyframe because
	// every chunk does.
	GOP int
	// Threads caps x264 threads per rung (0: ffmpeg's choice).
	Threads int
	// Stream reads the chunk from stdin as it arrives (Input is ignored), probing only its
	// first half second: by default ffmpeg probes up to 5 MB or 5 s, a whole 1080p chunk,
	// before it encodes anything.
	Stream bool
	// Chain encodes chunk after chunk of one stream read from stdin (with Stream) on one
	// timeline: rung i is written to file descriptor 3+i (OutDir is unused), and a keyframe
	// is forced wherever the source has one, so each chunk's frames begin with their own IDR
	// and can be cut apart again.
	Chain bool
}

// Output is the path ffmpeg writes rung r to.
func (j Job) Output(r Rung) string { return filepath.Join(j.OutDir, r.Name+".ts") }

// Args returns ffmpeg's arguments (without the program name). The input is decoded once and
// each rung scaled and encoded from it. Timestamps are copied through (-copyts, no mux delay)
// into MPEG-TS, which keeps them exactly; frames are neither dropped nor duplicated
// (-fps_mode passthrough) so frames in = frames out.
func (j Job) Args() []string {
	if len(j.Rungs) == 0 {
		return nil // nothing to encode: no ffmpeg run
	}
	input, inKw := j.Input, ffmpeg.KwArgs{"f": "mpegts", "copyts": ""}
	if j.Stream {
		// ffmpeg probes half a second of the chunk (not the default 5 s or 5 MB, a whole
		// chunk), enough for the frame rate, then catches up with the rest as it arrives.
		input, inKw["probesize"], inKw["analyzeduration"] = "pipe:0", "2000000", "500000"
	}
	in := ffmpeg.Input(input, inKw)
	var outs []*ffmpeg.Stream
	for _, r := range j.Rungs {
		kw := ffmpeg.KwArgs{
			"an":           "",
			"c:v":          "libx264",
			"preset":       j.Preset,
			"profile:v":    "high",
			"pix_fmt":      "yuv420p",
			"vf":           fmt.Sprintf("scale=-2:%d", r.Height),
			"b:v":          strconv.Itoa(r.Bitrate),
			"maxrate":      strconv.Itoa(r.Bitrate * 11 / 10),
			"bufsize":      strconv.Itoa(r.Bitrate * 2),
			"g":            strconv.Itoa(j.GOP),
			"keyint_min":   strconv.Itoa(j.GOP),
			"sc_threshold": "0",
			"flags":        "+cgop",
			"fps_mode":     "passthrough",
			"muxdelay":     "0",
			"muxpreload":   "0",
			"f":            "mpegts",
		}
		if j.Threads > 0 {
			kw["threads"] = strconv.Itoa(j.Threads)
		}
		out := j.Output(r)
		if j.Chain {
			out = "pipe:" + strconv.Itoa(3+len(outs))
			kw["force_key_frames"] = "source"
			kw["forced-idr"] = "1"
		}
		outs = append(outs, in.Video().Output(out, kw))
	}
	args := ffmpeg.MergeOutputs(outs...).GetArgs()
	return slices.Concat([]string{"-hide_banner", "-nostdin", "-loglevel", "error", "-y"}, args)
}
