package testenv_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"

	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.StopS3()
	os.Exit(code)
}

func put(t *testing.T, b testenv.S3Bucket, key string, body []byte, ifNoneMatch bool) error {
	t.Helper()
	in := &s3.PutObjectInput{Bucket: &b.Bucket, Key: &key, Body: bytes.NewReader(body)}
	if ifNoneMatch {
		in.IfNoneMatch = aws.String("*")
	}
	_, err := b.Client().PutObject(context.Background(), in)
	return err
}

func get(t *testing.T, b testenv.S3Bucket, key, rng string) ([]byte, error) {
	t.Helper()
	in := &s3.GetObjectInput{Bucket: &b.Bucket, Key: &key}
	if rng != "" {
		in.Range = &rng
	}
	out, err := b.Client().GetObject(context.Background(), in)
	if err != nil {
		return nil, err
	}
	defer out.Body.Close()
	return io.ReadAll(out.Body)
}

func errorCode(err error) string {
	var api smithy.APIError
	if errors.As(err, &api) {
		return api.ErrorCode()
	}
	return ""
}

// The shared server stores and serves objects, ranges included, keeps
// each call's bucket apart, refuses to overwrite under If-None-Match: *
// (the store's defence in depth), and never prints its secret.
func TestS3PutGetRange(t *testing.T) {
	b := testenv.S3(t)
	other := testenv.S3(t)
	if b.Bucket == other.Bucket || b.Endpoint != other.Endpoint {
		t.Fatalf("two calls: buckets %s and %s at %s and %s, want two buckets on one server", b.Bucket, other.Bucket, b.Endpoint, other.Endpoint)
	}
	body := make([]byte, 3<<20)
	_, _ = rand.Read(body)
	key := "cran/hellofleet/7-3-hellofleet_0.1.0.tar.gz"
	if err := put(t, b, key, body, true); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	got, err := get(t, b, key, "")
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("get %s: %d bytes, equal %v, err %v", key, len(got), bytes.Equal(got, body), err)
	}
	got, err = get(t, b, key, "bytes=1000-1999")
	if err != nil || !bytes.Equal(got, body[1000:2000]) {
		t.Fatalf("get %s bytes=1000-1999: %d bytes, err %v", key, len(got), err)
	}
	head, err := b.Client().HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: &b.Bucket, Key: &key})
	if err != nil || aws.ToInt64(head.ContentLength) != int64(len(body)) {
		t.Fatalf("head %s: %v, err %v", key, head, err)
	}
	err = put(t, b, key, []byte("second"), true)
	if code := errorCode(err); code != "PreconditionFailed" {
		t.Fatalf("second put of %s with If-None-Match *: error %v (code %q), want PreconditionFailed", key, err, code)
	}
	if got, _ := get(t, b, key, ""); !bytes.Equal(got, body) {
		t.Fatalf("a refused put replaced %s", key)
	}
	if _, err := get(t, other, key, ""); errorCode(err) != "NoSuchKey" {
		t.Fatalf("the other bucket: %v, want NoSuchKey", err)
	}
	for _, s := range []string{b.String(), fmt.Sprint(b), fmt.Sprintf("%+v", b)} {
		if strings.Contains(s, b.SecretKey) {
			t.Fatalf("the secret key is printed: %s", s)
		}
	}
	env := strings.Join(b.Env(), "\n")
	for _, want := range []string{"AWS_ACCESS_KEY_ID=" + b.AccessKey, "AWS_SECRET_ACCESS_KEY=" + b.SecretKey, "AWS_REGION=" + b.Region} {
		if !strings.Contains(env, want+"\n") {
			t.Fatalf("Env lacks %s", strings.SplitN(want, "=", 2)[0])
		}
	}
}

// Wrong credentials are refused, as the store's startup check expects.
func TestS3WrongCredentials(t *testing.T) {
	b := testenv.S3(t)
	b.SecretKey += "x"
	err := put(t, b, "k", []byte("v"), false)
	if code := errorCode(err); code != "SignatureDoesNotMatch" {
		t.Fatalf("put with a wrong secret: %v (code %q), want SignatureDoesNotMatch", err, code)
	}
}

// A server of the test's own is killed and restarted on the same port,
// and keeps what it stored.
func TestS3KillRestart(t *testing.T) {
	start := time.Now()
	srv := testenv.NewS3Server(t)
	t.Logf("versitygw started in %s", time.Since(start).Round(time.Millisecond))
	b := srv.Bucket(t)
	if err := put(t, b, "a", []byte("kept"), true); err != nil {
		t.Fatal(err)
	}
	srv.Kill(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := b.Client().GetObject(ctx, &s3.GetObjectInput{Bucket: &b.Bucket, Key: aws.String("a")}); err == nil {
		t.Fatal("a killed server answered")
	}
	start = time.Now()
	srv.Restart(t)
	t.Logf("versitygw restarted in %s", time.Since(start).Round(time.Millisecond))
	if got, err := get(t, b, "a", ""); err != nil || string(got) != "kept" {
		t.Fatalf("after restart: %q, %v", got, err)
	}
}

// The relay holds back each answer by its delay, and relays the bytes
// unchanged (signatures stay valid).
func TestS3Slow(t *testing.T) {
	b := testenv.S3(t)
	if err := put(t, b, "obj", []byte("through the relay"), false); err != nil {
		t.Fatal(err)
	}
	const delay = 700 * time.Millisecond
	slow, relay := b.Slow(t, delay)
	if slow.Endpoint == b.Endpoint {
		t.Fatal("Slow returned the server's own endpoint")
	}
	for range 2 { // a second request on a kept-alive connection is held back too
		start := time.Now()
		got, err := get(t, slow, "obj", "")
		if err != nil || string(got) != "through the relay" {
			t.Fatalf("get through the relay: %q, %v", got, err)
		}
		if took := time.Since(start); took < delay {
			t.Fatalf("an answer through the relay took %s, less than its delay %s", took, delay)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), delay/4)
	defer cancel()
	if _, err := slow.Client().HeadObject(ctx, &s3.HeadObjectInput{Bucket: &slow.Bucket, Key: aws.String("obj")}); err == nil {
		t.Fatalf("a request with a deadline of %s answered through a relay delaying %s", delay/4, delay)
	}
	relay.SetDelay(0)
	if err := put(t, slow, "obj2", []byte("after"), true); err != nil {
		t.Fatalf("put through the relay: %v", err)
	}
	if got, err := get(t, b, "obj2", ""); err != nil || string(got) != "after" {
		t.Fatalf("what went through the relay: %q, %v", got, err)
	}
}
