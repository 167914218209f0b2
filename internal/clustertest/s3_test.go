//go:build cluster

package clustertest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// TestS3ValuesOnTheNode is the chart README's install on a cluster with
// only ReadWriteOnce volumes, as printed there: the access key pair in a
// Secret made from files, then ci/s3-values.yaml with the bucket and the
// endpoint of an S3 server (versitygw) on the host's bridge address, where
// the pods reach it. The release makes no artifact claim (only the Redis
// pod's); an R build through the API lands in the bucket under the
// attempt's key, and the package downloads from the index with its
// recorded sha256.
func TestS3ValuesOnTheNode(t *testing.T) {
	n := requireNode(t)
	const ns, release = "s3", "pkgfleet"
	bucket := testenv.NewS3ServerOn(t, n.hostIP).Bucket(t)
	n.namespace(t, ns, "privileged") // the defaults' worker is Unconfined
	n.claimVolumes(t, ns, redisClaim(release, 0))

	// The keys go to kubectl in files, never in an argument list.
	keys := t.TempDir()
	for file, v := range map[string]string{"access-key-id": bucket.AccessKey, "secret-access-key": bucket.SecretKey} {
		if err := os.WriteFile(filepath.Join(keys, file), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	n.k(t, "-n", ns, "create", "secret", "generic", "pkgfleet-s3",
		"--from-file=access-key-id="+filepath.Join(keys, "access-key-id"),
		"--from-file=secret-access-key="+filepath.Join(keys, "secret-access-key"))
	f := n.install(t, ns, release, "ci/s3-values.yaml",
		"-f", repoPath("charts", "pkgfleet", "ci", "s3-values.yaml"),
		"--set", "storage.s3.bucket="+bucket.Bucket, "--set", "storage.s3.endpoint="+bucket.Endpoint)

	// No artifact claim, and no pod mounts one: Redis's claim is the only.
	if pvcs := strings.Fields(n.k(t, "-n", ns, "get", "pvc", "-o", `jsonpath={.items[*].metadata.name}`)); len(pvcs) != 1 || pvcs[0] != redisClaim(release, 0).name {
		t.Errorf("the release's claims are %v, want only %s (no artifact claim with storage.type s3)", pvcs, redisClaim(release, 0).name)
	}
	if mounted := n.k(t, "-n", ns, "get", "pods", "-l", "app.kubernetes.io/component in (api,worker)", "-o",
		`jsonpath={.items[*].spec.volumes[*].persistentVolumeClaim.claimName}`); strings.TrimSpace(mounted) != "" {
		t.Errorf("the API and worker pods mount claims %q with storage.type s3", mounted)
	}

	f.pkgfleet(t, "create", "source", "--name", "r-demo", "--type", "git")
	f.pkgfleet(t, "create", "git-builder", "--source", "r-demo", "--url", f.git+"/hellofleet", "--branch", "main", "--wait")
	list := f.api.builds("r-demo/hellofleet")
	if len(list) != 1 || list[0].Status != "succeeded" || len(list[0].Artifacts) == 0 {
		t.Fatalf("the R build: %+v", list)
	}
	b := list[0]

	// The build's files are in the bucket, named by the attempt
	// (<prefix><source>/<package>/<build id>-<token>-<file>).
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := bucket.Client().ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: &bucket.Bucket})
	if err != nil {
		t.Fatalf("list %s: %v", bucket, err)
	}
	var keysInBucket []string
	for _, o := range out.Contents {
		keysInBucket = append(keysInBucket, *o.Key)
	}
	for _, a := range b.Artifacts {
		prefix := fmt.Sprintf("pkgfleet/r-demo/hellofleet/%d-", b.ID)
		found := false
		for _, k := range keysInBucket {
			found = found || strings.HasPrefix(k, prefix) && strings.HasSuffix(k, "-"+a.File)
		}
		if !found {
			t.Errorf("no object %s…-%s in the bucket; it holds %v", prefix, a.File, keysInBucket)
		}
	}

	// The index serves it from the bucket with the recorded sha256.
	a := b.Artifacts[0]
	url := f.api.base + "/cran/r-demo/src/contrib/" + a.File
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	if sum := sha256.Sum256(body); resp.StatusCode != 200 || hex.EncodeToString(sum[:]) != a.SHA256 {
		t.Errorf("GET %s: %d, sha256 %x, want the recorded %s", url, resp.StatusCode, sum, a.SHA256)
	}
}
