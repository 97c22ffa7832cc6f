package faults

import (
	"fmt"
	"net"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

// publisher is an ffmpeg process publishing over RTMP in real time.
type publisher struct {
	t       *testing.T
	cmd     *exec.Cmd
	out     *logBuffer
	started time.Time
	done    chan struct{}
	err     error
	ended   time.Time
}

// publishArgs encodes seconds of a 640x360 30 fps test pattern with a 2 s GOP and AAC: small
// and cheap (x264 ultrafast) so publishers spare the CPU the roles need, at 2 Mbit/s so the
// default ladder's 360p rung (700 kbit/s) is worth encoding from it. It has B-frames, as most
// encoders' defaults do (TestRungsWithoutSourceBFrames publishes without).
func publishArgs(url string, seconds int) []string {
	return publishArgsB(url, seconds, 3)
}

// publishArgsB is publishArgs with bframes B-frames (0: none, as x264's ultrafast preset,
// zerolatency tuning, the baseline profile and many hardware encoders send).
func publishArgsB(url string, seconds, bframes int) []string {
	return []string{"-hide_banner", "-loglevel", "error", "-nostdin", "-re",
		"-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", fmt.Sprint(seconds),
		"-c:v", "libx264", "-preset", "ultrafast", "-bf", fmt.Sprint(bframes), "-pix_fmt", "yuv420p",
		"-b:v", "2000k", "-maxrate", "2000k", "-bufsize", "2000k",
		"-g", "60", "-keyint_min", "60", "-sc_threshold", "0",
		"-c:a", "aac", "-b:a", "64k", "-ar", "48000", "-ac", "2",
		"-f", "flv", url}
}

// startPublisher starts ffmpeg with args; it is killed when the test ends.
func startPublisher(t *testing.T, ffmpeg string, args []string) *publisher {
	t.Helper()
	p := &publisher{t: t, out: &logBuffer{max: 64 << 10}, done: make(chan struct{})}
	p.cmd = exec.Command(ffmpeg, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start ffmpeg publisher: %v", err)
	}
	p.started = time.Now()
	go func() {
		p.err = p.cmd.Wait()
		p.ended = time.Now()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("ffmpeg publisher output:\n%s", p.out.String())
		}
	})
	return p
}

func (p *publisher) kill() {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// exited reports whether the publisher has stopped.
func (p *publisher) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits for ffmpeg to finish and returns its error.
func (p *publisher) wait(timeout time.Duration) error {
	p.t.Helper()
	select {
	case <-p.done:
		if p.err != nil {
			return fmt.Errorf("%v: %s", p.err, p.out.String())
		}
		return nil
	case <-time.After(timeout):
		p.t.Fatalf("publisher still running after %s", timeout)
		return nil
	}
}

// rtmpProxy forwards RTMP connections to the ingest and can cut them the two ways networks do:
// reset (the publisher's host dies or a middlebox drops the flow: the ingest gets a TCP RST)
// or blackhole (packets stop: no FIN, no RST, the ingest only sees silence).
type rtmpProxy struct {
	t      *testing.T
	ln     net.Listener
	target string

	mu    sync.Mutex
	pairs []*proxyPair
	mode  string // "" forward, "reset", "blackhole"
	// connected is when the first connection was accepted: the publisher's media clock starts
	// within moments of it (ffmpeg connects once its first frame is encoded).
	connected time.Time
	wg        sync.WaitGroup
}

type proxyPair struct {
	client, upstream *net.TCPConn
}

func newRTMPProxy(t *testing.T, target string) *rtmpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &rtmpProxy{t: t, ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// addr is the proxy's host:port.
func (p *rtmpProxy) addr() string { return p.ln.Addr().String() }

func (p *rtmpProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		pair := &proxyPair{client: c.(*net.TCPConn), upstream: u.(*net.TCPConn)}
		p.mu.Lock()
		p.pairs = append(p.pairs, pair)
		if p.connected.IsZero() {
			p.connected = time.Now()
		}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(pair, pair.upstream, pair.client)
		go p.pipe(pair, pair.client, pair.upstream)
	}
}

// pipe copies src to dst until src ends. When the publisher's side ends (ffmpeg killed), the
// proxy cuts the ingest's side the way its mode says.
func (p *rtmpProxy) pipe(pair *proxyPair, dst, src *net.TCPConn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			mode := p.mode
			p.mu.Unlock()
			if mode == "blackhole" {
				continue // swallowed: the other side hears nothing
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if src == pair.client {
				p.mu.Lock()
				mode := p.mode
				p.mu.Unlock()
				switch mode {
				case "reset":
					// SO_LINGER 0: close sends RST instead of FIN.
					_ = pair.upstream.SetLinger(0)
					_ = pair.upstream.Close()
				case "blackhole":
					// Keep the ingest's side open and silent.
				default:
					_ = pair.upstream.CloseWrite()
				}
			} else {
				_ = pair.client.Close()
			}
			return
		}
	}
}

// midGOP is the next instant, at least a second away, that lies about a second after a
// keyframe of the publisher's 2 s GOPs (media time 2k+1 s): a cut there is far from a chunk
// boundary. (ffmpeg's media clock runs about half a second behind its connection.)
func (p *rtmpProxy) midGOP() time.Time {
	p.mu.Lock()
	t0 := p.connected
	p.mu.Unlock()
	if t0.IsZero() {
		p.t.Fatal("no publisher connected through the proxy")
	}
	k := time.Since(t0)/(2*time.Second) + 1
	return t0.Add(2*k*time.Second + 1500*time.Millisecond)
}

// setMode switches how the publisher's connections are treated from now on.
func (p *rtmpProxy) setMode(mode string) {
	p.mu.Lock()
	p.mode = mode
	p.mu.Unlock()
}

func (p *rtmpProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for _, pr := range p.pairs {
		pr.client.Close()
		pr.upstream.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
