//go:build cluster

package clustertest

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestSentinelValuesOnTheNode installs ci/redis-sentinel-values.yaml
// (redis.mode sentinel: three pods, each a redis-server and a
// redis-sentinel, with passwords and min-replicas-to-write 1) on the one
// node, where the soft anti-affinity lets all three run. After an R build
// through the API, the node is cordoned and the master's pod deleted, so
// that it cannot come back before the sentinels notice: they promote a
// replica, the API and the workers follow Sentinel to it
// (Redis.SentinelAddresses), the first build reads back and a Python build
// succeeds. Uncordoned, the deleted pod comes back as a replica of the
// promoted master.
func TestSentinelValuesOnTheNode(t *testing.T) {
	n := requireNode(t)
	const ns, release = "sentinel", "pkgfleet"
	n.namespace(t, ns, "privileged") // the defaults' worker is Unconfined
	n.claimVolumes(t, ns, redisClaim(release, 0), redisClaim(release, 1), redisClaim(release, 2),
		claim{release + "-artifacts", "ReadWriteMany", "50Gi", 10001})
	f := n.install(t, ns, release, "ci/redis-sentinel-values.yaml",
		"-f", repoPath("charts", "pkgfleet", "ci", "redis-sentinel-values.yaml"))
	if got := strings.Fields(n.k(t, "-n", ns, "get", "pods", "-l", selector(release, "redis"), "-o", `jsonpath={.items[*].metadata.name}`)); len(got) != 3 {
		t.Fatalf("Redis pods %v, want 3 on the one node", got)
	}

	begin := time.Now()
	f.pkgfleet(t, "create", "source", "--name", "r-demo", "--type", "git")
	f.pkgfleet(t, "create", "git-builder", "--source", "r-demo", "--url", f.git+"/hellofleet", "--branch", "main", "--wait")
	first := f.api.builds("r-demo/hellofleet")
	if len(first) != 1 || first[0].Status != "succeeded" {
		t.Fatalf("the R build before the failover: %+v", first)
	}

	// The master, as the sentinels name it: <pod>.<service>.<ns>.svc.
	masterOf := func(pod string) (string, string) {
		out, code, _ := run(30*time.Second, nil, n.kubectl, "-n", ns, "exec", pod, "-c", "sentinel", "--", "sh", "-c",
			`REDISCLI_AUTH=$SENTINEL_PASSWORD redis-cli -p 26379 sentinel get-master-addr-by-name "$MASTER_NAME" | head -n 1`)
		if code != 0 {
			return "", out
		}
		host := strings.TrimSpace(out)
		pod, _, _ = strings.Cut(host, ".")
		return pod, host
	}
	old, host := masterOf(release + "-redis-0")
	if !strings.HasPrefix(old, release+"-redis-") {
		t.Fatalf("the sentinels name the master %q", host)
	}
	nodeName := strings.TrimSpace(n.k(t, "get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"))
	n.k(t, "cordon", nodeName)
	uncordon := func() { _, _, _ = run(time.Minute, nil, n.kubectl, "uncordon", nodeName) }
	t.Cleanup(uncordon)
	t.Logf("an R build through the API, the sentinels asked for the master: %s", time.Since(begin).Round(time.Second))
	begin = time.Now()
	n.k(t, "-n", ns, "delete", "pod", old, "--wait=true", "--timeout=2m")
	t.Logf("%s deleted (its containers stopped): %s", old, time.Since(begin).Round(time.Second))
	var promoted string
	waitFor(t, 2*time.Minute, "the sentinels promote a replica of "+old, func() (bool, string) {
		for i := range 3 {
			pod := fmt.Sprintf("%s-redis-%d", release, i)
			if pod == old {
				continue
			}
			if m, out := masterOf(pod); m != "" && m != old {
				promoted = m
				return true, out
			} else if out != "" {
				host = out
			}
		}
		return false, host
	})
	t.Logf("the sentinels promoted %s %s after the deletion began", promoted, time.Since(begin).Round(time.Second))
	// With min-replicas-to-write 1 the promoted master takes writes once
	// the sentinels have pointed the other replica at it.
	waitFor(t, 2*time.Minute, "a replica follows "+promoted, func() (bool, string) {
		out, _, _ := run(30*time.Second, nil, n.kubectl, "-n", ns, "exec", promoted, "-c", "redis", "--", "sh", "-c",
			`REDISCLI_AUTH=$REDIS_PASSWORD redis-cli -p 6379 role`)
		f := strings.Fields(out)
		return len(f) > 2 && f[0] == "master", out
	})

	// The API and the workers follow: the first build reads back from the
	// promoted master, and a second build runs to the end.
	begin = time.Now()
	waitFor(t, 3*time.Minute, "the API reads the builds from the promoted master", func() (bool, string) {
		out, code, _ := run(10*time.Second, nil, "curl", "-fsS", "-H", "Authorization: Bearer "+f.api.token,
			f.api.base+"/api/v1/builds?source=r-demo&builder=hellofleet")
		return code == 0, out
	})
	if got := f.api.builds("r-demo/hellofleet"); len(got) != 1 || got[0].ID != first[0].ID || got[0].Status != "succeeded" {
		t.Errorf("after the failover the builds are %+v, were %+v", got, first)
	}
	f.pkgfleet(t, "create", "source", "--name", "py-demo", "--type", "git-python")
	f.pkgfleet(t, "create", "git-builder", "--source", "py-demo", "--name", "hellofleet-py", "--url", f.git+"/hellofleet-py",
		"--build-trigger", "tags", "--tag-pattern", "v*", "--wait")
	if got := f.api.builds("py-demo/hellofleet-py"); len(got) != 1 || got[0].Status != "succeeded" {
		t.Errorf("the Python build after the failover: %+v", got)
	}
	t.Logf("after the failover, the API read back and a Python build succeeded in %s", time.Since(begin).Round(time.Second))

	// Back on the node, the deleted pod joins the promoted master.
	begin = time.Now()
	uncordon()
	n.podsReady(t, ns, 3*time.Minute)
	t.Logf("uncordoned: every pod Ready again in %s", time.Since(begin).Round(time.Second))
	role := n.k(t, "-n", ns, "exec", old, "-c", "redis", "--", "sh", "-c", `REDISCLI_AUTH=$REDIS_PASSWORD redis-cli -p 6379 role | head -n 2`)
	if f := strings.Fields(role); len(f) < 2 || f[0] != "slave" || !strings.HasPrefix(f[1], promoted+".") {
		t.Errorf("%s came back with role %q, want a replica of %s", old, role, promoted)
	}
}
