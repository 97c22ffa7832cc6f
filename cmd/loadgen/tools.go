package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/gopcast/gopcast/pkg/media/ladder"
)

// mkbucket creates a bucket (if missing) and lets anonymous clients GET objects under the
// given prefixes, as a deployment where players read the bucket directly would.
func mkbucket(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("loadgen mkbucket", flag.ContinueOnError)
	endpoint := fs.String("endpoint", "http://127.0.0.1:9000", "S3 endpoint URL")
	bucket := fs.String("bucket", "gopcast", "bucket name")
	region := fs.String("region", "us-east-1", "region")
	access := fs.String("access-key", os.Getenv("AWS_ACCESS_KEY_ID"), "access key (default $AWS_ACCESS_KEY_ID)")
	secret := fs.String("secret-key", os.Getenv("AWS_SECRET_ACCESS_KEY"), "secret key (default $AWS_SECRET_ACCESS_KEY)")
	prefixes := fs.String("public-read", "live/,vod/", "comma-separated key prefixes readable anonymously")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to retry while the server starts")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	u, err := url.Parse(*endpoint)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return usageError{fmt.Errorf("--endpoint %q is not an http(s) URL", *endpoint)}
	}
	client, err := minio.New(u.Host, &minio.Options{
		Creds:  credentials.NewStaticV4(*access, *secret, ""),
		Secure: u.Scheme == "https",
		Region: *region,
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	for {
		err = client.MakeBucket(ctx, *bucket, minio.MakeBucketOptions{Region: *region})
		code := minio.ToErrorResponse(err).Code
		if err == nil || code == "BucketAlreadyOwnedByYou" || code == "BucketAlreadyExists" {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("create bucket %s: %w", *bucket, err)
		case <-time.After(200 * time.Millisecond): // a server just started may refuse for a moment
		}
	}
	var res []string
	for _, p := range strings.Split(*prefixes, ",") {
		if p = strings.TrimSpace(p); p != "" {
			res = append(res, strconv.Quote("arn:aws:s3:::"+*bucket+"/"+strings.TrimSuffix(p, "*")+"*"))
		}
	}
	if len(res) == 0 {
		return nil
	}
	policy := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":["*"]},` +
		`"Action":["s3:GetObject"],"Resource":[` + strings.Join(res, ",") + `]}]}`
	if err := client.SetBucketPolicy(ctx, *bucket, policy); err != nil {
		return fmt.Errorf("set public-read policy on %s: %w", *bucket, err)
	}
	return nil
}

// ladderArgs prints, NUL-separated, the ffmpeg arguments gopcast's transcoder would run for a
// chunk, applied to a whole MPEG-TS file: the same rungs (Profile.Select for the source height
// and bitrate), preset, GOP and x264 options, so a continuous ffmpeg run can be compared with
// the chunked pipeline.
func ladderArgs(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("loadgen ladder-args", flag.ContinueOnError)
	input := fs.String("input", "", "MPEG-TS input file")
	outDir := fs.String("out-dir", "", "directory for the rung outputs (NAME.ts)")
	profile := fs.String("profile", "default", "ladder profile")
	height := fs.Int("src-height", 1080, "source height, for rung selection")
	bitrate := fs.Int("src-bitrate", 6_000_000, "source video bits/s, for rung selection")
	fps := fs.Float64("fps", 30, "source frame rate (the GOP is 2 s of frames, as the transcoder sets it)")
	threads := fs.Int("threads", 0, "x264 threads per rung (0: ffmpeg decides, the transcoder's default)")
	lines := fs.Bool("lines", false, "one argument per line instead of NUL-separated")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if *input == "" || *outDir == "" {
		return usageError{errors.New("--input and --out-dir are required")}
	}
	prof, err := ladder.Lookup(*profile)
	if err != nil {
		return usageError{err}
	}
	rungs := prof.Select(*height, *bitrate)
	if len(rungs) == 0 {
		return fmt.Errorf("profile %s encodes nothing for a %dp %d bit/s source", *profile, *height, *bitrate)
	}
	job := ladder.Job{Input: *input, OutDir: *outDir, Rungs: rungs, Preset: prof.Preset,
		GOP: max(1, int(*fps*2+0.5)), Threads: *threads}
	sep := "\x00"
	if *lines {
		sep = "\n"
	}
	for _, a := range job.Args() {
		if _, err := io.WriteString(out, a+sep); err != nil {
			return err
		}
	}
	return nil
}

// freePorts prints n TCP ports free on 127.0.0.1 (all held open until every one is chosen, so
// they differ).
func freePorts(args []string, out io.Writer) error {
	n := 1
	if len(args) > 0 {
		v, err := strconv.Atoi(args[0])
		if err != nil || v < 1 || v > 100 {
			return usageError{fmt.Errorf("ports: want a count from 1 to 100, got %q", args[0])}
		}
		n = v
	}
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		lns = append(lns, l)
	}
	for _, l := range lns {
		fmt.Fprintln(out, l.Addr().(*net.TCPAddr).Port)
	}
	return nil
}
