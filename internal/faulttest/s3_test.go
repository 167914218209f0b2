package faulttest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// s3Env is what a process needs to keep its artifacts in bucket b: the
// settings and, for the AWS default chain, the credentials (key, value
// pairs).
func s3Env(b testenv.S3Bucket) []string {
	var kv []string
	for k, v := range b.Settings() {
		kv = append(kv, k, v)
	}
	for _, e := range b.Env() {
		k, v, _ := strings.Cut(e, "=")
		kv = append(kv, k, v)
	}
	return kv
}

// TestWorkerKilledAfterItsUploadLeavesOrphansTheSweepRemoves: a worker
// is killed (SIGKILL) once its build's file is in the bucket and before
// the record names it. Another worker builds the build again under a new
// attempt token, and the API's orphan sweep deletes the dead attempt's
// file once older than Storage.OrphanGrace: the bucket then holds only
// what the record names, and the metric counts it.
func TestWorkerKilledAfterItsUploadLeavesOrphansTheSweepRemoves(t *testing.T) {
	t.Parallel()
	srv := testenv.NewS3Server(t)
	b := srv.Bucket(t)
	slow, relay := b.Slow(t, 0)
	f := setup(t, append(s3Env(b), "PKGFLEET_STORAGE_ORPHANGRACE", "2s")...)
	f.startRedis()
	f.start("api", "api")
	// The first worker reaches the bucket through the relay, which will
	// hold back the answer to its upload: the file is stored, the worker
	// does not know it yet.
	w1 := f.start("worker", "w1", "PKGFLEET_S3STORAGE_ENDPOINT", slow.Endpoint)
	testenv.Eventually(t, 30*time.Second, "the API to be ready", f.ready)
	testenv.Eventually(t, 60*time.Second, "the worker to be ready", func() bool { return w1.logged("worker ready") })
	f.builders(map[string]string{"victim": "0.1"})
	relay.SetDelay(time.Minute)
	id := f.run("victim")
	prefix := fmt.Sprintf("py/victim/%d-", id)
	keys := func() []string {
		out, err := b.Client().ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String(b.Bucket), Prefix: aws.String(prefix)})
		if err != nil {
			t.Fatal(err)
		}
		var ks []string
		for _, o := range out.Contents {
			ks = append(ks, aws.ToString(o.Key))
		}
		return ks
	}
	var orphans []string
	testenv.Eventually(t, 2*time.Minute, "the first attempt's upload to reach the bucket", func() bool {
		orphans = keys()
		return len(orphans) > 0
	})
	w1.stop(t, syscall.SIGKILL)
	if got := f.build(id); got == nil || registry.Terminal(got.Status) {
		t.Fatalf("the killed attempt's build: %+v", got)
	}

	f.start("worker", "w2")
	done := f.waitStatus(id, 4*time.Minute, func(b *registry.Build) bool { return registry.Terminal(b.Status) }, "to finish on w2")
	if done.Status != registry.StatusSucceeded {
		t.Fatalf("build %d: %s: %s", id, done.Status, done.Detail)
	}
	named := map[string]bool{}
	for _, a := range done.Artifacts {
		named[fmt.Sprintf("%s%d-%s", prefix, done.AttemptToken, a.File)] = true
	}
	for _, k := range orphans {
		if named[k] {
			t.Fatalf("the record names the dead attempt's %s", k)
		}
	}
	testenv.Eventually(t, time.Minute, "the sweep to remove the dead attempt's files", func() bool {
		// The succeeding attempt's log joins its files once it moved
		// out of Redis (internal/buildlog).
		if b := f.build(id); b != nil && b.Log != nil {
			named[fmt.Sprintf("%s%d-%s", prefix, b.Log.Token, b.Log.File)] = true
		}
		ks := keys()
		for _, k := range ks {
			if !named[k] {
				return false
			}
		}
		return len(ks) == len(named)
	})
	_, metrics := f.do("GET", "/metrics", nil)
	m := regexp.MustCompile(`(?m)^pkgfleet_store_orphans_removed_total (\d+)`).FindSubmatch(metrics)
	if m == nil {
		t.Fatal("/metrics has no pkgfleet_store_orphans_removed_total")
	}
	if n, _ := strconv.Atoi(string(m[1])); n < len(orphans) {
		t.Fatalf("pkgfleet_store_orphans_removed_total %d, want at least %d", n, len(orphans))
	}
}

// TestChaosOnS3LosesNothingAndEveryArtifactIsReadable: two workers keep
// their artifacts in a bucket while Redis, the API and one worker are
// killed (SIGKILL) in turn during builds; every build succeeds, and every
// artifact every record names downloads with its recorded sha256. It runs
// on one redis-server and through Sentinel, where Redis killed is the
// master killed and a replica promoted.
func TestChaosOnS3LosesNothingAndEveryArtifactIsReadable(t *testing.T) {
	t.Parallel()
	for _, rs := range redisSetups() {
		t.Run(rs.name, func(t *testing.T) {
			t.Parallel()
			b := testenv.S3(t)
			f, killRedis := rs.fleet(t, s3Env(b)...)
			apiProc := f.start("api", "api")
			w1, w2 := f.start("worker", "w1"), f.start("worker", "w2")
			testenv.Eventually(t, 30*time.Second, "the API to be ready", f.ready)
			for _, w := range []*proc{w1, w2} {
				testenv.Eventually(t, 60*time.Second, "the workers to be ready", func() bool { return w.logged("worker ready") })
			}
			names := []string{"c1", "c2", "c3", "c4", "c5", "c6"}
			f.builders(map[string]string{"c1": "2.11", "c2": "2.12", "c3": "2.13", "c4": "1.14", "c5": "1.15", "c6": "1.16"})
			var ids []int64
			for _, n := range names {
				ids = append(ids, f.run(n))
			}
			f.waitStatus(ids[0], time.Minute, running, "to run")
			killRedis()
			testenv.Eventually(t, 30*time.Second, "the API to be ready again", f.ready)
			apiProc.stop(t, syscall.SIGKILL)
			f.start("api", "api2")
			testenv.Eventually(t, 30*time.Second, "the new API to be ready", f.ready)
			w1.stop(t, syscall.SIGKILL)
			f.checkNothingLost(names, ids)
			for _, id := range ids {
				f.checkArtifacts(f.build(id))
			}
		})
	}
}

// checkArtifacts asserts that b records artifacts and that each downloads
// with its recorded sha256.
func (f *fleet) checkArtifacts(b *registry.Build) {
	f.t.Helper()
	if len(b.Artifacts) == 0 {
		f.t.Errorf("build %d records no artifact", b.ID)
	}
	for _, a := range b.Artifacts {
		code, body := f.do("GET", fmt.Sprintf("/api/v1/builds/%d/artifacts/%s", b.ID, a.File), nil)
		if sum := sha256.Sum256(body); code != 200 || hex.EncodeToString(sum[:]) != a.SHA256 {
			f.t.Errorf("build %d %s: %d, sha256 %x, want the recorded %s", b.ID, a.File, code, sum, a.SHA256)
		}
	}
}
