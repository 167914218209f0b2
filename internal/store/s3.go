package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/pkgfleet/pkgfleet/internal/config"
	"github.com/pkgfleet/pkgfleet/internal/registry"
)

// Bucket keeps artifacts in an S3 bucket (S3Storage.*), through the AWS
// SDK: credentials from its default chain only (environment, shared
// files, web identity, instance role), so no key is in a setting, a log
// or an error here. Every write is conditional (If-None-Match: *): an
// existing key is never replaced. Files larger than one part go up in a
// multipart upload, aborted when it fails.
type Bucket struct {
	client   *s3.Client
	presign  *s3.PresignClient
	bucket   string
	prefix   string
	endpoint string // for messages: the setting, or "AWS"
}

var (
	_ Artifacts = (*Bucket)(nil)
	_ Presigner = (*Bucket)(nil)
)

// partSize is the multipart threshold and part size: a part is held in
// memory while it is sent, and up to partConcurrency at once.
const (
	partSize        = 8 << 20
	partConcurrency = 4
	presignFor      = 15 * time.Minute
)

// NewBucket returns the bucket the settings name. It does not reach it:
// Check does.
func NewBucket(ctx context.Context, c config.S3Storage) (*Bucket, error) {
	return newBucket(ctx, c)
}

// newBucket is NewBucket with more of the SDK's options (a test's
// credentials, its own process's, instead of the environment's).
func newBucket(ctx context.Context, c config.S3Storage, opts ...func(*awsconfig.LoadOptions) error) (*Bucket, error) {
	if c.Region != "" {
		opts = append(opts, awsconfig.WithRegion(c.Region))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("S3 bucket %s: AWS configuration: %w", c.Bucket, err)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1" // S3-compatible servers take any
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		if c.Endpoint != "" {
			o.BaseEndpoint = aws.String(c.Endpoint)
		}
		o.UsePathStyle = c.EnablePathStyle
		// A ranged read, or a multipart object, has no whole-object
		// checksum to validate; that is no news for the log.
		o.DisableLogOutputChecksumValidationSkipped = true
	})
	b := &Bucket{
		client:   client,
		presign:  s3.NewPresignClient(client),
		bucket:   c.Bucket,
		prefix:   c.Prefix,
		endpoint: c.Endpoint,
	}
	if b.endpoint == "" {
		b.endpoint = "AWS (" + cfg.Region + ")"
	}
	return b, nil
}

func (b *Bucket) String() string {
	return fmt.Sprintf("S3 bucket %s at %s", b.bucket, b.endpoint)
}

func (b *Bucket) key(source, pkg string, buildID, token int64, file string) string {
	return b.prefix + source + "/" + pkg + "/" + attemptPrefix(buildID, token) + file
}

// Put implements Artifacts: each file is durable once its PUT (or its
// multipart upload's completion) succeeded.
func (b *Bucket) Put(ctx context.Context, source, pkg string, buildID, token int64, from string, arts []registry.Artifact) ([]registry.Artifact, error) {
	return b.put(ctx, source, pkg, buildID, token, arts, fromDir(from))
}

// PutBytes implements Artifacts, as Put does.
func (b *Bucket) PutBytes(ctx context.Context, source, pkg string, buildID, token int64, a registry.Artifact, data []byte) (registry.Artifact, error) {
	return one(b.put(ctx, source, pkg, buildID, token, []registry.Artifact{a}, inMemory(data)))
}

func (b *Bucket) put(ctx context.Context, source, pkg string, buildID, token int64, arts []registry.Artifact, src func(registry.Artifact) content) (_ []registry.Artifact, err error) {
	if err := checkElems(source, pkg); err != nil {
		return nil, err
	}
	out := make([]registry.Artifact, 0, len(arts))
	defer func() {
		if err != nil {
			// The failed file's upload was aborted; its fellows go too.
			_ = b.Discard(context.WithoutCancel(ctx), source, pkg, buildID, token, out)
		}
	}()
	for _, a := range arts {
		if !plainName(a.File) {
			return nil, fmt.Errorf("artifact store: bad artifact name %q", a.File)
		}
		stored, err := b.upload(ctx, src(a), b.key(source, pkg, buildID, token, a.File))
		if err != nil {
			return nil, fmt.Errorf("store %s: %w", a.File, err)
		}
		// The recipe's description (kind, platform, tags) stays; the
		// store adds what it measured.
		a.Size, a.SHA256 = stored.Size, stored.SHA256
		out = append(out, a)
	}
	return out, nil
}

// upload sends src to the new object key, and returns the size and
// digest of the bytes sent: in one PUT up to partSize, in a multipart
// upload above it.
func (b *Bucket) upload(ctx context.Context, src content, key string) (registry.Artifact, error) {
	in, size, err := src.open()
	if err != nil {
		return registry.Artifact{}, err
	}
	defer in.Close()
	h := sha256.New()
	var n int64
	if size <= partSize {
		data, err := io.ReadAll(io.LimitReader(in, partSize+1))
		if err != nil {
			return registry.Artifact{}, err
		}
		h.Write(data)
		n = int64(len(data))
		_, err = b.client.PutObject(ctx, &s3.PutObjectInput{
			Bucket: aws.String(b.bucket), Key: aws.String(key), Body: bytes.NewReader(data), ContentLength: aws.Int64(n),
			IfNoneMatch: aws.String("*"), ContentType: aws.String("application/octet-stream"),
		})
		if err != nil {
			return registry.Artifact{}, b.opError("put", key, err)
		}
	} else if n, err = b.multipart(ctx, io.TeeReader(in, h), key); err != nil {
		return registry.Artifact{}, err
	}
	if n != size {
		return registry.Artifact{}, fmt.Errorf("s3://%s/%s: sent %d bytes of %d", b.bucket, key, n, size)
	}
	return registry.Artifact{Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// multipart sends in as a multipart upload of partSize parts, up to
// partConcurrency at once, read in order (so a digest of in is of the
// object). The object appears only when the upload completes, and only
// if the key is free (If-None-Match); an upload that fails is aborted,
// even when ctx ended.
func (b *Bucket) multipart(ctx context.Context, in io.Reader, key string) (int64, error) {
	created, err := b.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{
		Bucket: aws.String(b.bucket), Key: aws.String(key), ContentType: aws.String("application/octet-stream"),
		ChecksumAlgorithm: types.ChecksumAlgorithmCrc32,
	})
	if err != nil {
		return 0, b.opError("put", key, err)
	}
	id := created.UploadId
	abort := func(cause error) error {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_, _ = b.client.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{Bucket: aws.String(b.bucket), Key: aws.String(key), UploadId: id})
		return cause
	}
	pctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		parts []types.CompletedPart
		total int64
		slots = make(chan struct{}, partConcurrency)
	)
	for num := int32(1); pctx.Err() == nil; num++ {
		buf := make([]byte, partSize)
		n, rerr := io.ReadFull(in, buf)
		if n > 0 {
			total += int64(n)
			select {
			case slots <- struct{}{}:
			case <-pctx.Done():
				continue // the loop ends: a part failed
			}
			wg.Add(1)
			go func(num int32, data []byte) {
				defer wg.Done()
				defer func() { <-slots }()
				out, err := b.client.UploadPart(pctx, &s3.UploadPartInput{
					Bucket: aws.String(b.bucket), Key: aws.String(key), UploadId: id, PartNumber: aws.Int32(num),
					Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data))), ChecksumAlgorithm: types.ChecksumAlgorithmCrc32,
				})
				if err != nil {
					stop(b.opError("put", key, err))
					return
				}
				mu.Lock()
				parts = append(parts, types.CompletedPart{PartNumber: aws.Int32(num), ETag: out.ETag, ChecksumCRC32: out.ChecksumCRC32})
				mu.Unlock()
			}(num, buf[:n])
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			stop(rerr)
		}
	}
	wg.Wait()
	if err := context.Cause(pctx); err != nil {
		return 0, abort(err)
	}
	slices.SortFunc(parts, func(x, y types.CompletedPart) int { return int(aws.ToInt32(x.PartNumber) - aws.ToInt32(y.PartNumber)) })
	_, err = b.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: aws.String(b.bucket), Key: aws.String(key), UploadId: id,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts}, IfNoneMatch: aws.String("*"),
	})
	if err != nil {
		return 0, abort(b.opError("put", key, err))
	}
	return total, nil
}

// Open implements Artifacts: a HEAD now, then ranged GETs as the file is
// read and sought.
func (b *Bucket) Open(ctx context.Context, source, pkg string, buildID, token int64, file string) (File, error) {
	if !plainName(file) {
		return nil, fmt.Errorf("artifact %q: %w", file, fs.ErrNotExist)
	}
	if err := checkElems(source, pkg); err != nil {
		return nil, err
	}
	key := b.key(source, pkg, buildID, token, file)
	head, err := b.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(b.bucket), Key: aws.String(key)})
	if err != nil {
		return nil, b.opError("head", key, err)
	}
	return &object{ctx: ctx, b: b, key: key, etag: aws.ToString(head.ETag),
		size: aws.ToInt64(head.ContentLength), mod: aws.ToTime(head.LastModified)}, nil
}

// object reads an S3 object through ranged GETs: one GET from the offset
// to the end, streamed, replaced when a Seek moves the offset.
type object struct {
	ctx       context.Context
	b         *Bucket
	key, etag string
	size      int64
	mod       time.Time
	off       int64
	body      io.ReadCloser
}

func (o *object) Size() int64        { return o.size }
func (o *object) ModTime() time.Time { return o.mod }

func (o *object) Read(p []byte) (int, error) {
	if o.off >= o.size {
		return 0, io.EOF
	}
	if o.body == nil {
		in := &s3.GetObjectInput{Bucket: aws.String(o.b.bucket), Key: aws.String(o.key),
			Range: aws.String(fmt.Sprintf("bytes=%d-", o.off))}
		if o.etag != "" {
			in.IfMatch = aws.String(o.etag)
		}
		out, err := o.b.client.GetObject(o.ctx, in)
		if err != nil {
			return 0, o.b.opError("get", o.key, err)
		}
		o.body = out.Body
	}
	n, err := o.body.Read(p)
	o.off += int64(n)
	if err == io.EOF && o.off < o.size {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// ReadAt reads with a GET of exactly the range asked, apart from Read's.
func (o *object) ReadAt(p []byte, off int64) (int, error) {
	if off >= o.size {
		return 0, io.EOF
	}
	end := min(off+int64(len(p)), o.size) - 1
	in := &s3.GetObjectInput{Bucket: aws.String(o.b.bucket), Key: aws.String(o.key),
		Range: aws.String(fmt.Sprintf("bytes=%d-%d", off, end))}
	if o.etag != "" {
		in.IfMatch = aws.String(o.etag)
	}
	out, err := o.b.client.GetObject(o.ctx, in)
	if err != nil {
		return 0, o.b.opError("get", o.key, err)
	}
	defer out.Body.Close()
	n, err := io.ReadFull(out.Body, p[:end-off+1])
	if err == nil && n < len(p) {
		err = io.EOF
	}
	return n, err
}

func (o *object) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		offset += o.off
	case io.SeekEnd:
		offset += o.size
	}
	if offset < 0 {
		return 0, errors.New("seek before the start")
	}
	if offset != o.off && o.body != nil {
		o.body.Close()
		o.body = nil
	}
	o.off = offset
	return offset, nil
}

func (o *object) Close() error {
	if o.body != nil {
		return o.body.Close()
	}
	return nil
}

// PresignGet implements Presigner.
func (b *Bucket) PresignGet(ctx context.Context, source, pkg string, buildID, token int64, file string) (string, error) {
	if err := checkElems(source, pkg); err != nil || !plainName(file) {
		return "", fmt.Errorf("artifact %q: %w", file, fs.ErrNotExist)
	}
	key := b.key(source, pkg, buildID, token, file)
	req, err := b.presign.PresignGetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(b.bucket), Key: aws.String(key)},
		s3.WithPresignExpires(presignFor))
	if err != nil {
		return "", b.opError("presign", key, err)
	}
	return req.URL, nil
}

// Discard implements Artifacts.
func (b *Bucket) Discard(ctx context.Context, source, pkg string, buildID, token int64, arts []registry.Artifact) error {
	if checkElems(source, pkg) != nil || token == 0 {
		return nil
	}
	var errs []error
	for _, a := range arts {
		if plainName(a.File) {
			errs = append(errs, b.delete(ctx, b.key(source, pkg, buildID, token, a.File)))
		}
	}
	return errors.Join(errs...)
}

func (b *Bucket) delete(ctx context.Context, key string) error {
	_, err := b.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(b.bucket), Key: aws.String(key)})
	if err != nil && !notFound(err) {
		return b.opError("delete", key, err)
	}
	return nil
}

// Walk implements Artifacts: a listing of the prefix.
func (b *Bucket) Walk(ctx context.Context, fn func(Stored) error) error {
	pages := s3.NewListObjectsV2Paginator(b.client, &s3.ListObjectsV2Input{Bucket: aws.String(b.bucket), Prefix: aws.String(b.prefix)})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return b.opError("list", b.prefix, err)
		}
		for _, o := range page.Contents {
			st, ok := parseName(strings.TrimPrefix(aws.ToString(o.Key), b.prefix))
			if !ok {
				continue
			}
			st.Size, st.ModTime = aws.ToInt64(o.Size), aws.ToTime(o.LastModified)
			if err := fn(st); err != nil {
				return err
			}
		}
	}
	return nil
}

// AbortStale aborts the multipart uploads under the prefix begun before
// t: those a killed worker, or a failed upload whose abort failed too,
// left. Their parts are invisible but are paid for.
func (b *Bucket) AbortStale(ctx context.Context, t time.Time) (int, error) {
	pages := s3.NewListMultipartUploadsPaginator(b.client, &s3.ListMultipartUploadsInput{Bucket: aws.String(b.bucket), Prefix: aws.String(b.prefix)})
	n := 0
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return n, b.opError("list uploads", b.prefix, err)
		}
		for _, u := range page.Uploads {
			if !aws.ToTime(u.Initiated).Before(t) {
				continue
			}
			_, err := b.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: aws.String(b.bucket), Key: u.Key, UploadId: u.UploadId})
			if err != nil && !notFound(err) {
				return n, b.opError("abort upload", aws.ToString(u.Key), err)
			}
			n++
		}
	}
	return n, nil
}

// Remove implements Artifacts.
func (b *Bucket) Remove(ctx context.Context, f Stored) error {
	if _, ok := parseName(f.Name()); !ok {
		return fmt.Errorf("artifact store: %q is no attempt's file", f.Name())
	}
	return b.delete(ctx, b.prefix+f.Name())
}

// Check implements Artifacts: it writes and deletes a probe object, and
// fails with one line naming the bucket, the endpoint and the error.
func (b *Bucket) Check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var r [8]byte
	_, _ = rand.Read(r[:])
	key := b.prefix + ".pkgfleet-probe-" + hex.EncodeToString(r[:])
	_, err := b.client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(b.bucket), Key: aws.String(key),
		Body: strings.NewReader("probe"), IfNoneMatch: aws.String("*")})
	if err == nil {
		_, err = b.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(b.bucket), Key: aws.String(key)})
	}
	if err != nil {
		return fmt.Errorf("S3 bucket %s at %s is not reachable and writable: %s", b.bucket, b.endpoint, oneLine(err))
	}
	return nil
}

// opError names the object and keeps fs.ErrNotExist and the refusal of
// an overwrite recognisable.
func (b *Bucket) opError(op, key string, err error) error {
	switch {
	case notFound(err):
		return fmt.Errorf("%s s3://%s/%s: %w", op, b.bucket, key, fs.ErrNotExist)
	case status(err) == http.StatusPreconditionFailed && op == "put":
		return fmt.Errorf("put s3://%s/%s: %w", b.bucket, key, fs.ErrExist)
	}
	return fmt.Errorf("%s s3://%s/%s at %s: %s", op, b.bucket, key, b.endpoint, oneLine(err))
}

func notFound(err error) bool {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "NotFound", "NoSuchKey":
			return true
		}
	}
	return status(err) == http.StatusNotFound
}

func status(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// oneLine keeps an error on one log line.
func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}
