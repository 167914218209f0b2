package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// S3Bucket is a fresh bucket on a real S3 server (versitygw with its POSIX
// backend, on a loopback port), and what a client needs to reach it. The
// secret key is random per server and never printed: String leaves it out.
type S3Bucket struct {
	Endpoint  string // http://127.0.0.1:<port>
	Region    string
	Bucket    string
	AccessKey string
	SecretKey string
	// Server is the server the bucket is on: the package's shared one
	// (S3) or the test's own (NewS3Server), which Kill and Restart act on.
	Server *S3Server
}

// S3Region is the region the test servers answer for.
const S3Region = "us-east-1"

// versitygwModule is the module deploy/tools/versitygw/go.mod pins; its
// version names the cached binary (scripts/versitygw.sh builds it).
const versitygwModule = "github.com/versity/versitygw"

// The package's shared server: started by the first S3 call, stopped by
// StopS3 (MainWithRedis calls it) or killed with the test binary. A
// package-level value because "one server per test package" is exactly
// the scope of a test binary's process.
var shared struct {
	once sync.Once
	srv  *S3Server
	err  error
}

// S3 returns a fresh bucket on the test package's S3 server, started on
// first use. Tests that kill or slow down the server use NewS3Server or
// Slow instead, so that other tests keep theirs. When versitygw is not
// built, S3 fails the test under CI=true and skips it otherwise.
func S3(t testing.TB) S3Bucket {
	t.Helper()
	bin := versitygw(t)
	shared.once.Do(func() { shared.srv, shared.err = startS3Server(bin, "127.0.0.1", true) })
	if shared.err != nil {
		t.Fatalf("start the S3 server: %v", shared.err)
	}
	return shared.srv.Bucket(t)
}

// StopS3 stops the package's shared S3 server if S3 started one, and
// removes its directory. MainWithRedis calls it; a TestMain of its own
// calls it after m.Run.
func StopS3() {
	if shared.srv != nil {
		shared.srv.stop()
	}
}

// NewS3Server starts an S3 server of the test's own, for fault tests
// (Kill, Restart); it is stopped and its directory removed when the test
// ends.
func NewS3Server(t testing.TB) *S3Server {
	t.Helper()
	return NewS3ServerOn(t, "127.0.0.1")
}

// NewS3ServerOn is NewS3Server listening on host's address instead of
// loopback, for clients outside the test's network namespace (the pods of
// the cluster tests reach the host on its bridge address).
func NewS3ServerOn(t testing.TB, host string) *S3Server {
	t.Helper()
	srv, err := startS3Server(versitygw(t), host, false)
	if err != nil {
		t.Fatalf("start the S3 server: %v", err)
	}
	t.Cleanup(srv.stop)
	return srv
}

// versitygw is the path of the cached versitygw binary: $PKGFLEET_VERSITYGW,
// else the one scripts/versitygw.sh built for the version that
// deploy/tools/versitygw/go.mod pins.
func versitygw(t testing.TB) string {
	t.Helper()
	bin, err := versitygwPath()
	if err == nil {
		_, err = os.Stat(bin)
	}
	if err != nil {
		missing(t, "versitygw (bash scripts/versitygw.sh builds it, about three minutes once)", err)
	}
	return bin
}

func versitygwPath() (string, error) {
	if p := os.Getenv("PKGFLEET_VERSITYGW"); p != "" {
		return p, nil
	}
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	mod, err := os.ReadFile(filepath.Join(root, "deploy", "tools", "versitygw", "go.mod"))
	if err != nil {
		return "", err
	}
	version := ""
	for line := range strings.Lines(string(mod)) {
		// "require M v1.2.3" or "\tM v1.2.3 // indirect" (go mod tidy
		// marks a tool's module indirect).
		f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(line), "require "))
		if len(f) >= 2 && f[0] == versitygwModule {
			version = f[1]
		}
	}
	if version == "" {
		return "", fmt.Errorf("deploy/tools/versitygw/go.mod requires no %s", versitygwModule)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(cache, "pkgfleet", "tools", "versitygw-"+version, "versitygw"), nil
}

// moduleRoot is the directory of pkgfleet's go.mod, found upwards from the
// test's working directory (its package's directory).
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.HasPrefix(b, []byte("module github.com/pkgfleet/pkgfleet\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no pkgfleet go.mod above the working directory")
		}
		dir = parent
	}
}

// S3Server is one versitygw process serving a temp dir on a port (loopback's
// unless NewS3ServerOn)
// with random root credentials.
type S3Server struct {
	bin, dir, addr    string
	accessKey, secret string
	args              []string
	shared            bool
	nextBucket        atomic.Int64

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	stopped bool
}

func startS3Server(bin, host string, shared bool) (*S3Server, error) {
	dir, err := os.MkdirTemp("", "pkgfleet-s3-")
	if err != nil {
		return nil, err
	}
	backend := filepath.Join(dir, "data")
	if err := os.Mkdir(backend, 0o700); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	args := []string{"posix"}
	// The POSIX backend keeps object metadata (content type, ETag) in user
	// xattrs; where the temp dir's filesystem has none (tmpfs before Linux
	// 6.6, some overlays), it keeps them in a sidecar directory instead.
	if err := syscall.Setxattr(backend, "user.pkgfleet-probe", []byte("1"), 0); err != nil {
		meta := filepath.Join(dir, "meta")
		if err := os.Mkdir(meta, 0o700); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		args = append(args, "--sidecar", meta)
	} else {
		_ = syscall.Removexattr(backend, "user.pkgfleet-probe")
	}
	args = append(args, backend)
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	addr := l.Addr().String()
	l.Close()
	s := &S3Server{bin: bin, dir: dir, addr: addr, args: args, shared: shared,
		accessKey: "pkgfleet" + randomHex(6), secret: randomHex(20)}
	if err := s.start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// start runs versitygw and waits until it answers HTTP. The credentials
// go in its environment, not its arguments, which any process can list.
func (s *S3Server) start() error {
	log, err := os.OpenFile(filepath.Join(s.dir, "versitygw.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.Command(s.bin, s.args...)
	cmd.Env = append(os.Environ(),
		"ROOT_ACCESS_KEY_ID="+s.accessKey, "ROOT_SECRET_ACCESS_KEY="+s.secret,
		"VGW_PORT="+s.addr, "VGW_REGION="+S3Region)
	cmd.Stdout, cmd.Stderr = log, log
	// The server dies with the test binary, even when nothing stops it.
	// Pdeathsig fires when the thread that started it exits, not the
	// process, and Go ends threads (one a sandbox test left locked, say):
	// the server is started on a locked thread that lives until it exits.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	exited := make(chan struct{})
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the server
		err := cmd.Start()
		started <- err
		if err == nil {
			_ = cmd.Wait()
			close(exited)
		}
	}()
	if err := <-started; err != nil {
		return err
	}
	s.mu.Lock()
	s.cmd, s.exited = cmd, exited
	s.mu.Unlock()
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(20 * time.Second)
	for {
		// Any HTTP answer (403 to an anonymous request) means it serves.
		if resp, err := client.Get("http://" + s.addr + "/"); err == nil {
			resp.Body.Close()
			break
		}
		select {
		case <-exited:
			return fmt.Errorf("versitygw exited at start: %s", s.logTail())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.kill()
			return fmt.Errorf("versitygw did not answer on %s within 20s: %s", s.addr, s.logTail())
		}
	}
	return nil
}

// logTail is the end of the server's log, for an error.
func (s *S3Server) logTail() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "versitygw.log"))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

func (s *S3Server) kill() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-exited
}

func (s *S3Server) stop() {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	s.stopped = true
	s.mu.Unlock()
	s.kill()
	os.RemoveAll(s.dir)
}

// Kill stops the server with SIGKILL, as a crash would; what it stored
// stays for Restart.
func (s *S3Server) Kill(t testing.TB) {
	t.Helper()
	s.mustOwn(t)
	s.kill()
}

// Restart starts the server again on the same port, directory and
// credentials, after Kill, and waits until it answers.
func (s *S3Server) Restart(t testing.TB) {
	t.Helper()
	s.mustOwn(t)
	s.kill()
	if err := s.start(); err != nil {
		t.Fatalf("restart the S3 server: %v", err)
	}
}

func (s *S3Server) mustOwn(t testing.TB) {
	t.Helper()
	if s.shared {
		t.Fatal("the package's shared S3 server serves other tests: kill or restart one from testenv.NewS3Server")
	}
}

// Dir is the POSIX backend's directory: bucket b's object k is the file
// Dir()/b/k, for a test that looks behind the server's back.
func (s *S3Server) Dir() string { return filepath.Join(s.dir, "data") }

// Bucket creates a fresh bucket on the server for the test.
func (s *S3Server) Bucket(t testing.TB) S3Bucket {
	t.Helper()
	b := S3Bucket{
		Endpoint:  "http://" + s.addr,
		Region:    S3Region,
		Bucket:    fmt.Sprintf("pkgfleet-test-%d", s.nextBucket.Add(1)),
		AccessKey: s.accessKey,
		SecretKey: s.secret,
		Server:    s,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := b.Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &b.Bucket}); err != nil {
		t.Fatalf("create bucket %s on %s: %v", b.Bucket, b.Endpoint, err)
	}
	return b
}

// String names the bucket and endpoint, never the secret key.
func (s S3Bucket) String() string {
	return fmt.Sprintf("s3://%s at %s (%s, access key %s)", s.Bucket, s.Endpoint, s.Region, s.AccessKey)
}

// Credentials are the server's root credentials, for a client built in
// the test's own process.
func (s S3Bucket) Credentials() aws.Credentials {
	return aws.Credentials{AccessKeyID: s.AccessKey, SecretAccessKey: s.SecretKey, Source: "testenv"}
}

// CredentialsProvider hands out Credentials.
func (s S3Bucket) CredentialsProvider() aws.CredentialsProvider {
	return aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) { return s.Credentials(), nil })
}

// Env is what a process (an API or worker the test starts) needs in its
// environment for the AWS default credential chain to find these
// credentials; no shared config file or instance metadata is consulted.
func (s S3Bucket) Env() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + s.AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + s.SecretKey,
		"AWS_REGION=" + s.Region,
		"AWS_CONFIG_FILE=" + os.DevNull,
		"AWS_SHARED_CREDENTIALS_FILE=" + os.DevNull,
		"AWS_EC2_METADATA_DISABLED=true",
	}
}

// Settings are the PKGFLEET_ settings that store artifacts in this bucket
// (Storage.Default = s3, S3Storage.*), to merge into Redis.Settings.
func (s S3Bucket) Settings() map[string]string {
	return map[string]string{
		"PKGFLEET_STORAGE_DEFAULT":           "s3",
		"PKGFLEET_S3STORAGE_BUCKET":          s.Bucket,
		"PKGFLEET_S3STORAGE_REGION":          s.Region,
		"PKGFLEET_S3STORAGE_ENDPOINT":        s.Endpoint,
		"PKGFLEET_S3STORAGE_ENABLEPATHSTYLE": "true",
	}
}

// Client is an S3 client for the test's own checks (what is in the
// bucket, an object deleted behind pkgfleet's back), path-style as the
// server needs.
func (s S3Bucket) Client() *s3.Client {
	return s3.New(s3.Options{
		Region:       s.Region,
		BaseEndpoint: aws.String(s.Endpoint),
		UsePathStyle: true,
		Credentials:  s.CredentialsProvider(),
	})
}

// Slow returns the bucket reached through a relay that holds back every
// response by delay (the "slow S3" fault); the relay closes when the test
// ends.
func (s S3Bucket) Slow(t testing.TB, delay time.Duration) (S3Bucket, *Relay) {
	t.Helper()
	r := NewRelay(t, strings.TrimPrefix(s.Endpoint, "http://"), delay)
	s.Endpoint = "http://" + r.Addr()
	return s, r
}
