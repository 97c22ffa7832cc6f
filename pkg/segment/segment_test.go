package segment

import (
	"testing"

	"github.com/gopcast/gopcast/pkg/media"
)

func TestEstimateFPS(t *testing.T) {
	t.Parallel()
	frames := func(n int, step int64) []media.VideoFrame {
		out := make([]media.VideoFrame, n)
		for i := range out {
			out[i].DTS = 1_000_000 + int64(i)*step
			out[i].PTS = out[i].DTS + 2*step
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		frames []media.VideoFrame
		want   float64
	}{
		{"30 fps", frames(60, 3000), 30},
		{"25 fps", frames(50, 3600), 25},
		{"60 fps", frames(10, 1500), 60},
		{"one frame", frames(1, 3000), 30},
		{"no frames", nil, 30},
		{"no time passes", frames(5, 0), 30},
	} {
		if got := EstimateFPS(tc.frames); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	f := frames(4, 3000)
	f[0].PTS = 5
	if got := MinPTS(f); got != 5 {
		t.Errorf("minPTS %d", got)
	}
}
