package transcoder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/gopcast/gopcast/pkg/ffmpeg"
	"github.com/gopcast/gopcast/pkg/media"
	"github.com/gopcast/gopcast/pkg/media/ladder"
	"github.com/gopcast/gopcast/pkg/media/tsedit"
	"github.com/gopcast/gopcast/pkg/queue"
)

// A chain is one ffmpeg that encodes a session's chunks one after another, instead of one
// ffmpeg per chunk. Starting ffmpeg for every 2 s chunk costs about 45 % more CPU than one
// ffmpeg running on (the decoder's and three x264 encoders' start-up and their first-touch
// page faults), which is the whole gap between per-chunk and continuous encoding.
//
// Each chunk's MPEG-TS restarts its clock at chunker.TSBase; on the way into ffmpeg its
// timestamps are moved by (its Start − the chain's first Start), so ffmpeg sees one stream.
// ffmpeg forces a keyframe wherever the source has one, so every chunk's frames begin with an
// IDR in every rendition, and each rendition's output is cut at the keyframe where the next
// chunk begins (the PTS of that chunk's first video frame, read as it goes in, less half a
// frame for ffmpeg's rounding of timestamps to the frame rate) and moved back
// to the chunk's own clock: what a chunk's own ffmpeg would have written. A chunk encoded on
// its own is a chain of one, whose input closes with the chunk.
//
// The price is latency: x264 holds back its lookahead and reorder frames until more frames
// come, so a chunk's last frames leave the encoder when the next chunk's first ones push them
// out (or when the chain's input is closed: the stream's last chunk, or no next chunk within
// chainFlush). A chain takes a chunk only if it is the next of the same session and needs the
// same rungs; anything that goes wrong ends the chain, and its unfinished chunks are encoded
// again on their own.
type chain struct {
	s      *Service
	stream string // stream/session
	rungs  []ladder.Rung
	base   int64 // Start of the chain's first chunk
	// tol is half a frame: ffmpeg hands x264 timestamps on a 1/fps grid, so a keyframe can
	// come out up to that much before its input PTS.
	tol    int64
	cancel context.CancelFunc
	exited chan struct{} // ffmpeg has exited and every output was read; runErr is then set
	runErr error

	// Input side. mu is never held while writing to ffmpeg, which can block for as long as
	// ffmpeg is behind: offers (join) and parts must not wait on it. What goes in is queued as
	// ops, in order, and one goroutine (writeInput) edits and writes them.
	mu      sync.Mutex
	ops     []chainOp
	opsCond *sync.Cond
	stdin   io.WriteCloser
	in      tsedit.Shifter // the writer goroutine's alone
	feeding []*member      // members whose bytes are not all queued yet, in order; [0] is fed
	last    *member        // the latest member taken
	closed  bool           // the input is closed (or failed): no more members
	inErr   error
	flush   *time.Timer

	// Output side: omu is never held while waiting on ffmpeg, and never taken before mu.
	omu     sync.Mutex
	members []*member // every member whose outputs are not all cut yet, in order
	outs    []*chainOut
}

// chainOut is one rendition's output being cut into the members' pieces.
type chainOut struct {
	cut  tsedit.Cutter
	next int // index into chain.members of the member whose piece comes next
}

// chainOp is one step for the input writer: begin feeding m (start), feed m's bytes (data),
// or close ffmpeg's input (end).
type chainOp struct {
	m     *member
	start bool
	data  []byte
	end   bool
}

// member is one chunk in a chain.
type member struct {
	seq   uint64
	delta int64 // added to the chunk's timestamps on the chain's timeline
	// key is the chain-timeline PTS of the chunk's first video frame: where the previous
	// member's outputs end (-1 until its first video PES went in).
	key     int64
	pending [][]byte // bytes that came before it was the member being fed
	dropped bool     // its input failed: its queued bytes are not written (under chain.mu)
	ended   bool     // all its bytes came
	pieces  [][]byte // per rung: the cut output, on the chunk's own clock
	frames  []int
	got     int
	ready   chan struct{} // closed when every piece is in, or err is set
	err     error
}

// chainFlush is how long a chain waits after a chunk ended for the next one before it closes
// its input to get the chunk's last frames out of the encoder; chainMaxSpan ends a chain
// before its timeline nears MPEG-TS's 33-bit wrap (26.5 hours).
var (
	chainFlush   = time.Second
	chainMaxSpan = int64(time.Hour/time.Second) * media.Timescale
)

// startChain starts an encoder for a session's chunk seq that starts at base: a chain whose
// first member it is.
func (s *Service) startChain(job *queue.EncodeJob, rungs []ladder.Rung, tmpl ladder.Job, seq uint64, base int64, fps float64) (*chain, *member, error) {
	c, err := s.newChain(job.StreamID+"/"+job.SessionID, rungs, tmpl, base, fps)
	if err != nil {
		return nil, nil, err
	}
	s.chainsStarted.Add(1)
	go func() {
		<-c.exited
		if c.runErr != nil {
			s.log.Warn("encoder ended with an error", "chain", c.stream, "err", c.runErr)
		}
	}()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c, c.add(seq, base), nil
}

// newChain starts ffmpeg for a chain whose first chunk starts at base.
func (s *Service) newChain(stream string, rungs []ladder.Rung, job ladder.Job, base int64, fps float64) (*chain, error) {
	job.Stream, job.Chain, job.Rungs = true, true, rungs
	ctx, cancel := context.WithCancel(context.Background())
	cmd, stderr := ffmpeg.Command(ctx, s.cfg.FFmpeg, job.Args())
	var readers []*os.File
	closeAll := func(fs []*os.File) {
		for _, f := range fs {
			f.Close()
		}
	}
	for range rungs {
		r, w, err := os.Pipe()
		if err != nil {
			closeAll(readers)
			closeAll(cmd.ExtraFiles)
			cancel()
			return nil, err
		}
		readers, cmd.ExtraFiles = append(readers, r), append(cmd.ExtraFiles, w)
	}
	stdin, err := cmd.StdinPipe()
	if err == nil {
		err = cmd.Start()
	}
	closeAll(cmd.ExtraFiles) // ffmpeg has its own copies
	if err != nil {
		closeAll(readers)
		cancel()
		return nil, err
	}
	c := &chain{s: s, stream: stream, rungs: rungs, base: base, tol: int64(media.Timescale / fps / 2), cancel: cancel, exited: make(chan struct{}),
		stdin: stdin, in: tsedit.Shifter{Renumber: true}}
	c.opsCond = sync.NewCond(&c.mu)
	go c.writeInput()
	for range rungs {
		c.outs = append(c.outs, &chainOut{})
	}
	var wg sync.WaitGroup
	errs := make([]error, len(rungs))
	for i, r := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer r.Close()
			errs[i] = c.readOutput(i, r)
		}()
	}
	go func() {
		defer close(c.exited)
		wg.Wait()
		c.runErr = errors.Join(ffmpeg.Err(cmd.Wait(), stderr), errors.Join(errs...))
		c.ended()
	}()
	return c, nil
}

// join adds the chunk seq starting at start to the chain if it can take it: the next chunk of
// the chain's session, needing the same rungs, while the chain's input is open.
func (c *chain) join(seq uint64, start int64, rungs []ladder.Rung) *member {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.last == nil || seq != c.last.seq+1 || !slices.Equal(rungs, c.rungs) ||
		start < c.base || start-c.base > chainMaxSpan {
		return nil
	}
	return c.add(seq, start)
}

// add appends a member; c.mu is held.
func (c *chain) add(seq uint64, start int64) *member {
	m := &member{seq: seq, delta: start - c.base, key: -1, pieces: make([][]byte, len(c.rungs)),
		frames: make([]int, len(c.rungs)), ready: make(chan struct{})}
	if c.flush != nil {
		c.flush.Stop()
		c.flush = nil
	}
	c.last = m
	c.feeding = append(c.feeding, m)
	c.omu.Lock()
	c.members = append(c.members, m)
	c.omu.Unlock()
	if len(c.feeding) == 1 {
		c.startFeeding(m)
	}
	return m
}

// part takes a member's next bytes (a copy: they are edited in place on the way in).
func (c *chain) part(m *member, p []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	b := append([]byte(nil), p...)
	if len(c.feeding) == 0 || c.feeding[0] != m {
		m.pending = append(m.pending, b)
		return
	}
	c.queue(chainOp{m: m, data: b})
}

// queue hands an op to the writer; c.mu is held.
func (c *chain) queue(op chainOp) {
	c.ops = append(c.ops, op)
	c.opsCond.Signal()
}

// end records that all of a member's bytes came (err nil), or that it was given up, which
// ends the chain: ffmpeg has part of it.
func (c *chain) end(m *member, last bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.fail(m, err)
		return
	}
	m.ended = true
	for len(c.feeding) > 0 && c.feeding[0].ended && c.inErr == nil {
		c.feeding = c.feeding[1:]
		if len(c.feeding) > 0 {
			c.startFeeding(c.feeding[0])
		}
	}
	switch {
	case last:
		c.closeInput()
	case len(c.feeding) == 0 && c.inErr == nil && c.flush == nil:
		// The next chunk is not here yet; the encoder keeps this one's last frames until it
		// comes, or until the input is closed.
		c.flush = time.AfterFunc(chainFlush, func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			if len(c.feeding) == 0 {
				c.closeInput()
			}
		})
	}
}

// startFeeding makes m the member being fed: its clock moved onto the chain's, what came of
// it so far queued; c.mu is held.
func (c *chain) startFeeding(m *member) {
	c.queue(chainOp{m: m, start: true})
	for _, b := range m.pending {
		c.queue(chainOp{m: m, data: b})
	}
	m.pending = nil
}

// writeInput feeds the queued ops to ffmpeg until the input is closed.
func (c *chain) writeInput() {
	for {
		c.mu.Lock()
		for len(c.ops) == 0 {
			c.opsCond.Wait()
		}
		op := c.ops[0]
		c.ops[0] = chainOp{}
		c.ops = c.ops[1:]
		failed := c.inErr != nil
		dropped := op.m != nil && op.m.dropped
		c.mu.Unlock()
		switch {
		case op.end:
			if rest := c.in.Pending(); rest > 0 && !failed {
				c.s.log.Warn("encoder chain: its input ended in a partial packet", "chain", c.stream, "bytes", rest)
			}
			_ = c.stdin.Close()
			return
		case dropped:
			// The member failed: its bytes (and those of the members after it) stay out.
		case op.start:
			c.in.Delta = op.m.delta
			c.in.WatchVideo()
		default:
			if err := c.write(op.m, op.data); err != nil {
				if errors.Is(err, errInput) {
					// ffmpeg stopped reading: it has most likely exited, and its exit says why
					// (ended gives the members its error), which a broken pipe does not.
					select {
					case <-c.exited:
					case <-time.After(exitWait):
					}
				}
				c.mu.Lock()
				c.fail(op.m, fmt.Errorf("feeding the chain's ffmpeg: %w", err))
				c.mu.Unlock()
			}
		}
	}
}

// write edits b, of the member being fed, onto the chain's clock and writes it to ffmpeg. A
// panic in the editing (input it cannot parse) is an error: it fails the member, not the worker.
func (c *chain) write(m *member, b []byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("editing the input panicked: %v", r)
		}
	}()
	out, err := c.in.Shift(b)
	if err != nil {
		return err
	}
	if k, ok := c.in.FirstVideoPTS(); ok {
		c.omu.Lock()
		if m.key < 0 {
			// Before the keyframe goes in, so its output cannot come before the cut is known.
			m.key = k
		}
		c.omu.Unlock()
	}
	if len(out) > 0 {
		if _, err := c.stdin.Write(out); err != nil {
			return fmt.Errorf("%w: %w", errInput, err)
		}
	}
	return nil
}

// errInput marks a failed write to ffmpeg's input; exitWait is how long the writer then waits
// for ffmpeg's exit, whose error says more.
var (
	errInput = errors.New("ffmpeg stopped reading its input")
	exitWait = 5 * time.Second
)

// fail ends the chain's input after m went wrong: m and the members after it fail, the ones
// before it still get their outputs (ffmpeg is flushed); c.mu is held.
func (c *chain) fail(m *member, err error) {
	if c.inErr == nil {
		c.inErr = err
	}
	m.dropped = true
	for _, x := range c.feeding {
		if x.seq > m.seq {
			x.dropped = true
		}
	}
	c.omu.Lock()
	// They stay listed: the member before m is still cut at m's keyframe, if it went in.
	if i := slices.Index(c.members, m); i >= 0 {
		for _, x := range c.members[i:] {
			x.fail(err)
		}
	}
	c.omu.Unlock()
	c.closeInput()
}

// closeInput has ffmpeg's stdin closed once what is queued is written, which flushes the
// encoders; c.mu is held.
func (c *chain) closeInput() {
	if c.flush != nil {
		c.flush.Stop()
		c.flush = nil
	}
	if !c.closed {
		c.closed = true
		c.queue(chainOp{end: true})
	}
}

// stopInput takes no more members: the chain ends with the ones it has, which get their
// outputs once ffmpeg has flushed.
func (c *chain) stopInput() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeInput()
}

// stop kills the chain's ffmpeg and takes no more members; what it had fails.
func (c *chain) stop() {
	c.cancel()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeInput()
}

// readOutput reads rung i's output and cuts it into the members' pieces.
func (c *chain) readOutput(i int, r io.Reader) error {
	o := c.outs[i]
	buf := make([]byte, 256<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if werr := c.cut(i, o, buf[:n]); werr != nil {
				c.cancel() // its outputs can no longer be cut: the members fail
				return fmt.Errorf("rung %s output: %w", c.rungs[i].Name, werr)
			}
		}
		if errors.Is(err, io.EOF) {
			return c.finishOutput(i)
		}
		if err != nil {
			return err
		}
	}
}

// cut takes rung i's next output bytes and delivers what can be cut. A panic in the cutting
// (output it cannot parse) is an error: it fails the chain, not the worker.
func (c *chain) cut(i int, o *chainOut, b []byte) (err error) {
	c.omu.Lock()
	defer c.omu.Unlock()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("cutting the output panicked: %v", r)
		}
	}()
	if err := o.cut.Write(b); err != nil {
		return err
	}
	c.deliver(i)
	return nil
}

// deliver cuts rung i's pieces for every member whose successor's keyframe is known; c.omu is
// held.
func (c *chain) deliver(i int) {
	o := c.outs[i]
	for o.next+1 < len(c.members) {
		m, next := c.members[o.next], c.members[o.next+1]
		if next.key < 0 {
			return
		}
		piece, frames, ok := o.cut.Cut(next.key - c.tol)
		if !ok {
			return
		}
		m.put(i, piece, frames, len(c.rungs))
		o.next++
	}
	c.prune()
}

// prune forgets the members every rendition has been cut for; c.omu is held.
func (c *chain) prune() {
	for len(c.members) > 0 {
		for _, o := range c.outs {
			if o.next == 0 {
				return
			}
		}
		c.members = c.members[1:]
		for _, o := range c.outs {
			o.next--
		}
	}
}

// finishOutput gives what is left of rung i's output, at its end, to the member it belongs
// to; c.omu is taken.
func (c *chain) finishOutput(i int) error {
	c.omu.Lock()
	defer c.omu.Unlock()
	o := c.outs[i]
	c.deliver(i)
	piece, frames, partial := o.cut.Rest()
	if partial > 0 {
		return fmt.Errorf("rung %s output ends in a partial packet", c.rungs[i].Name)
	}
	if o.next < len(c.members) && piece != nil {
		c.members[o.next].put(i, piece, frames, len(c.rungs))
		o.next++
	}
	return nil
}

// ended fails every member still without all its outputs once ffmpeg is gone.
func (c *chain) ended() {
	// A chain whose ffmpeg is gone takes no more chunks: one joining it now would only fail
	// and be encoded again on its own, where a new chain could have taken it as it arrived.
	c.mu.Lock()
	c.closeInput()
	c.mu.Unlock()
	err := c.runErr
	if err == nil {
		err = errors.New("the chain's ffmpeg ended without this chunk's output")
	}
	c.omu.Lock()
	for _, m := range c.members {
		m.fail(err)
	}
	c.members = nil
	c.omu.Unlock()
	c.cancel()
}

// put stores rung i's piece, moved back to the member's own clock; c.omu is held.
func (m *member) put(i int, piece []byte, frames, rungs int) {
	if m.err != nil || m.pieces[i] != nil {
		return
	}
	sh := tsedit.Shifter{Delta: -m.delta}
	out, err := sh.Shift(piece)
	if err != nil {
		m.fail(fmt.Errorf("moving rung output back to the chunk's clock: %w", err))
		return
	}
	m.pieces[i], m.frames[i] = out, frames
	if m.got++; m.got == rungs {
		close(m.ready)
	}
}

// fail marks the member failed, unless it already has all its outputs; c.omu is held.
func (m *member) fail(err error) {
	if m.err != nil || m.got == len(m.pieces) {
		return
	}
	m.err = err
	close(m.ready)
}

// wait returns the member's outputs once they are all in (or why they will not be).
func (m *member) wait(ctx context.Context) ([][]byte, []int, error) {
	select {
	case <-m.ready:
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	if m.err != nil {
		return nil, nil, m.err
	}
	return m.pieces, m.frames, nil
}
