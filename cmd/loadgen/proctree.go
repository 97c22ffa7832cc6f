package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// procTree prints the CPU time and resident memory of processes and all their descendants, read
// from /proc, for the benchmark scripts (a server such as nginx is a master, workers and the
// ffmpeg processes its workers exec).
//
//	loadgen proctree PID...                     one line: cpu_s rss_kb processes
//	loadgen proctree --every 1s --out F PID...  the same line, prefixed by the unix time, every
//	                                            interval until the processes are gone or a signal
//
// CPU = utime + stime + cutime + cstime of every live process of the trees (cutime/cstime hold
// the descendants already waited for, which are no longer in the tree, so nothing counts twice).
// RSS = the sum of VmRSS.
func procTree(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("loadgen proctree", flag.ContinueOnError)
	every := fs.Duration("every", 0, "sample every interval (0: once)")
	outFile := fs.String("out", "", "with --every: append the samples to this file (default stdout)")
	clk := fs.Int("clk-tck", 100, "clock ticks per second of /proc/PID/stat (getconf CLK_TCK)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() == 0 || *clk <= 0 || *every < 0 {
		return usageError{errors.New("want --clk-tck > 0 and at least one PID")}
	}
	var roots []int
	for _, a := range fs.Args() {
		pid, err := strconv.Atoi(a)
		if err != nil || pid <= 0 {
			return usageError{fmt.Errorf("bad PID %q", a)}
		}
		roots = append(roots, pid)
	}
	if *every == 0 {
		s, err := sampleTree("/proc", roots, *clk)
		if err != nil {
			return err
		}
		if s.Procs == 0 {
			return fmt.Errorf("no process %v", roots)
		}
		_, err = fmt.Fprintf(out, "%.2f %d %d\n", s.CPU, s.RSSKB, s.Procs)
		return err
	}
	w := out
	if *outFile != "" {
		f, err := os.OpenFile(*outFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	t := time.NewTicker(*every)
	defer t.Stop()
	for {
		s, err := sampleTree("/proc", roots, *clk)
		if err != nil {
			return err
		}
		if s.Procs == 0 {
			return nil
		}
		if _, err := fmt.Fprintf(w, "%.3f %.2f %d %d\n", unixSeconds(time.Now()), s.CPU, s.RSSKB, s.Procs); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// treeSample is one reading of process trees.
type treeSample struct {
	CPU   float64 // seconds
	RSSKB int64
	Procs int
}

// procStat is the part of /proc/PID/stat proctree uses.
type procStat struct {
	PPID                         int
	UTime, STime, CUTime, CSTime int64 // clock ticks
}

// parseProcStat parses /proc/PID/stat. The command name (field 2) is in parentheses and may hold
// spaces and parentheses itself, so fields are counted after its last ')'.
func parseProcStat(b []byte) (procStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, errors.New("stat without (comm)")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): ppid is field 4, utime..cstime fields 14..17.
	if len(f) < 15 {
		return procStat{}, fmt.Errorf("stat with %d fields after comm", len(f))
	}
	var v [5]int64
	for j, k := range []int{1, 11, 12, 13, 14} {
		n, err := strconv.ParseInt(f[k], 10, 64)
		if err != nil {
			return procStat{}, fmt.Errorf("stat field %d: %w", k+3, err)
		}
		v[j] = n
	}
	return procStat{PPID: int(v[0]), UTime: v[1], STime: v[2], CUTime: v[3], CSTime: v[4]}, nil
}

// vmRSSKB reads VmRSS (kB) from /proc/PID/status (0 for a zombie or kernel thread).
func vmRSSKB(status []byte) int64 {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// sampleTree reads every process under procDir, keeps the roots and their descendants, and
// adds up their CPU and RSS. Processes that vanish while it reads are skipped.
func sampleTree(procDir string, roots []int, clkTck int) (treeSample, error) {
	ents, err := os.ReadDir(procDir)
	if err != nil {
		return treeSample{}, err
	}
	stats := map[int]procStat{}
	children := map[int][]int{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(procDir, e.Name(), "stat"))
		if err != nil {
			continue // gone
		}
		st, err := parseProcStat(b)
		if err != nil {
			continue
		}
		stats[pid] = st
		children[st.PPID] = append(children[st.PPID], pid)
	}
	var s treeSample
	seen := map[int]bool{}
	queue := append([]int(nil), roots...)
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		st, ok := stats[pid]
		if !ok || seen[pid] {
			continue
		}
		seen[pid] = true
		s.Procs++
		s.CPU += float64(st.UTime+st.STime+st.CUTime+st.CSTime) / float64(clkTck)
		if b, err := os.ReadFile(filepath.Join(procDir, strconv.Itoa(pid), "status")); err == nil {
			s.RSSKB += vmRSSKB(b)
		}
		queue = append(queue, children[pid]...)
	}
	return s, nil
}
