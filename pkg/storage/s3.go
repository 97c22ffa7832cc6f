package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// DefaultRegion is the region used when S3Config.Region is empty; MinIO and most S3-compatible
// servers accept it whatever their own setting.
const DefaultRegion = "us-east-1"

// Retry policy for every S3 call. A live segment is due every couple of seconds, so an attempt
// is retried quickly and a few times; a longer outage is the caller's to handle (a worker naks
// the job with a delay), not something to hide inside one call.
const (
	s3MaxAttempts = 5
	// s3BaseDelay is the first retry's maximum backoff for errors other than throttling; it
	// doubles per retry (with full jitter) up to s3MaxBackoff. Throttling ("SlowDown") starts
	// at one second, as the SDK does.
	s3BaseDelay  = 100 * time.Millisecond
	s3MaxBackoff = 2 * time.Second
)

// S3Config says where the bucket is and how to sign requests. The zero value of every field
// but Bucket has a working default.
type S3Config struct {
	// Endpoint is the base URL of an S3-compatible server (MinIO: "http://127.0.0.1:9000").
	// Empty: AWS S3. When set, requests use path-style addressing (endpoint/bucket/key).
	Endpoint string
	// Bucket must already exist; gopcast never creates it.
	Bucket string
	// Region defaults to DefaultRegion.
	Region string
	// AccessKey and SecretKey are static credentials. Both empty: the SDK's default chain
	// (environment, shared config, instance or pod role).
	AccessKey string
	SecretKey string
}

// String describes the configuration without the secret key, so logging it is safe.
func (c S3Config) String() string {
	return fmt.Sprintf("{Endpoint:%s Bucket:%s Region:%s AccessKey:%s SecretKey:%s}",
		c.Endpoint, c.Bucket, c.Region, c.AccessKey, redact(c.SecretKey))
}

// LogValue makes slog print the configuration without the secret key.
func (c S3Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("endpoint", c.Endpoint),
		slog.String("bucket", c.Bucket),
		slog.String("region", c.Region),
		slog.String("access_key", c.AccessKey),
		slog.String("secret_key", redact(c.SecretKey)),
	)
}

func redact(secret string) string {
	if secret == "" {
		return ""
	}
	return "REDACTED"
}

// validate checks the configuration, naming the setting (as the command line spells it) that is
// wrong.
func (c S3Config) validate() error {
	if c.Bucket == "" {
		return errors.New("storage: s3-bucket is required")
	}
	if c.Endpoint != "" {
		u, err := url.Parse(c.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("storage: s3-endpoint %q: want an http:// or https:// URL such as http://127.0.0.1:9000", c.Endpoint)
		}
		if u.User != nil {
			return errors.New("storage: s3-endpoint must not contain credentials; use s3-access-key and s3-secret-key")
		}
	}
	if (c.AccessKey == "") != (c.SecretKey == "") {
		return errors.New("storage: s3-access-key and s3-secret-key must be set together (or both left empty for the default credential chain)")
	}
	return nil
}

// S3Store is a Store on an S3-compatible bucket.
type S3Store struct {
	client *s3.Client
	bucket string
	where  string // endpoint for error messages
}

var _ Store = (*S3Store)(nil)

// NewS3 returns a store on cfg's bucket. It makes no request: call Check to find out whether
// the bucket is reachable.
func NewS3(ctx context.Context, cfg S3Config) (*S3Store, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	region := cfg.Region
	if region == "" {
		region = DefaultRegion
	}
	loadOpts := []func(*config.LoadOptions) error{
		config.WithRegion(region),
		config.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = s3MaxAttempts
				o.BaseDelay = s3BaseDelay
				o.MaxBackoff = s3MaxBackoff
				// The default client-side retry quota (a token bucket shared by all calls)
				// runs dry within seconds when many uploads fail together, as they do while
				// the server restarts; calls then fail without retrying long after it is back.
				o.RateLimiter = ratelimit.None
			})
		}),
	}
	if cfg.AccessKey != "" {
		loadOpts = append(loadOpts, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(cfg.AccessKey, cfg.SecretKey, "")))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, fmt.Errorf("storage: load AWS configuration: %w", err)
	}
	client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
			// MinIO and most S3-compatible servers do not serve bucket subdomains.
			o.UsePathStyle = true
		}
		// Since 2025 the SDK adds CRC32 checksums (as aws-chunked trailers) to every upload
		// and validates them on download; many S3-compatible servers reject or mangle those.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
	where := cfg.Endpoint
	if where == "" {
		where = "AWS S3 (" + region + ")"
	}
	return &S3Store{client: client, bucket: cfg.Bucket, where: where}, nil
}

// Put uploads data with its headers. The body is not hashed for the request's signature
// (UNSIGNED-PAYLOAD), over plain HTTP as the SDK already does over HTTPS, where TLS carries its
// integrity: on the private networks where an S3 server is reached over HTTP (MinIO beside
// the roles), SHA-256 over every media segment was an eighth of the ingest's CPU.
func (s *S3Store) Put(ctx context.Context, key string, data []byte, opts PutOptions) error {
	if err := validateKey(key); err != nil {
		return fmt.Errorf("storage: put: %w", err)
	}
	opts = withDefaults(key, opts)
	in := &s3.PutObjectInput{
		Bucket: aws.String(s.bucket),
		Key:    aws.String(key),
		// A bytes.Reader is seekable, so the SDK can sign the payload and rewind it to retry.
		Body:          bytes.NewReader(data),
		ContentLength: aws.Int64(int64(len(data))),
		ContentType:   aws.String(opts.ContentType),
	}
	if opts.CacheControl != "" {
		in.CacheControl = aws.String(opts.CacheControl)
	}
	if _, err := s.client.PutObject(ctx, in, s3.WithAPIOptions(v4.SwapComputePayloadSHA256ForUnsignedPayloadMiddleware)); err != nil {
		return s.wrap("put", key, err)
	}
	return nil
}

// Get downloads the whole object.
func (s *S3Store) Get(ctx context.Context, key string) ([]byte, error) {
	if err := validateKey(key); err != nil {
		return nil, fmt.Errorf("storage: get: %w", err)
	}
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{
		Bucket: aws.String(s.bucket),
		Key:    aws.String(key),
	})
	if err != nil {
		return nil, s.wrap("get", key, err)
	}
	defer out.Body.Close()
	var buf bytes.Buffer
	if n := aws.ToInt64(out.ContentLength); n > 0 {
		buf.Grow(int(n))
	}
	if _, err := io.Copy(&buf, out.Body); err != nil {
		return nil, fmt.Errorf("storage: get %s: read body: %w", key, err)
	}
	return buf.Bytes(), nil
}

// Delete removes the object; a missing key is not an error.
func (s *S3Store) Delete(ctx context.Context, key string) error {
	if err := validateKey(key); err != nil {
		return fmt.Errorf("storage: delete: %w", err)
	}
	_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{
		Bucket: aws.String(s.bucket),
		Key:    aws.String(key),
	})
	if err != nil {
		if errors.Is(s.classify(err), ErrNotFound) {
			return nil
		}
		return s.wrap("delete", key, err)
	}
	return nil
}

// List pages through every key under prefix.
func (s *S3Store) List(ctx context.Context, prefix string) ([]string, error) {
	if err := validatePrefix(prefix); err != nil {
		return nil, fmt.Errorf("storage: list: %w", err)
	}
	in := &s3.ListObjectsV2Input{Bucket: aws.String(s.bucket)}
	if prefix != "" {
		in.Prefix = aws.String(prefix)
	}
	keys := []string{}
	p := s3.NewListObjectsV2Paginator(s.client, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, s.wrap("list", prefix, err)
		}
		for _, obj := range page.Contents {
			keys = append(keys, aws.ToString(obj.Key))
		}
	}
	return keys, nil
}

// Check sends HeadBucket.
func (s *S3Store) Check(ctx context.Context) error {
	_, err := s.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(s.bucket)})
	if err == nil {
		return nil
	}
	// HeadBucket has no response body, so a missing bucket is only a bare 404.
	if status(err) == http.StatusNotFound || errors.Is(s.classify(err), ErrBucketMissing) {
		return s.bucketMissing()
	}
	if region := bucketRegion(err); status(err) == http.StatusMovedPermanently && region != "" {
		return fmt.Errorf("storage: check bucket %q at %s: the bucket is in region %s: set s3-region to it: %w",
			s.bucket, s.where, region, err)
	}
	if st := status(err); st == http.StatusForbidden || st == http.StatusUnauthorized {
		return fmt.Errorf("storage: check bucket %q at %s: access denied: check s3-access-key, s3-secret-key and the key's permissions on the bucket: %w",
			s.bucket, s.where, err)
	}
	return fmt.Errorf("storage: check bucket %q at %s: %w", s.bucket, s.where, err)
}

func (s *S3Store) bucketMissing() error {
	return fmt.Errorf("storage: %w: bucket %q does not exist at %s; creating it (with public read on live/ and vod/) is the deployment's job, gopcast never creates buckets",
		ErrBucketMissing, s.bucket, s.where)
}

// wrap names the operation and key, and turns the S3 answers the caller acts on into this
// package's sentinels.
func (s *S3Store) wrap(op, key string, err error) error {
	switch sentinel := s.classify(err); sentinel {
	case ErrNotFound:
		// The SDK's error adds only a request id to "does not exist".
		return fmt.Errorf("storage: %s %s: %w", op, key, ErrNotFound)
	case ErrBucketMissing:
		return fmt.Errorf("storage: %s %s: %w", op, key, s.bucketMissing())
	}
	return fmt.Errorf("storage: %s %s: %w", op, key, err)
}

// classify returns ErrNotFound, ErrBucketMissing or nil.
func (s *S3Store) classify(err error) error {
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode() {
		case "NoSuchBucket":
			return ErrBucketMissing
		case "NoSuchKey", "NotFound":
			return ErrNotFound
		}
	}
	if status(err) == http.StatusNotFound {
		return ErrNotFound
	}
	return nil
}

// status is the HTTP status of a failed request, or 0 when there was no response.
func status(err error) int {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// bucketRegion is the region AWS names when a request went to the wrong one, or "".
func bucketRegion(err error) string {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) && re.Response != nil {
		return re.Response.Header.Get("X-Amz-Bucket-Region")
	}
	return ""
}
