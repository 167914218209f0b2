package deploy

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/pkgfleet/pkgfleet/internal/testenv"
)

// sentinelPod is one pod of the chart's Redis with Sentinel, played on this
// machine: its two containers' scripts (charts/pkgfleet/files/redis) run as
// processes on a loopback address of its own, as each pod has its own IP.
type sentinelPod struct {
	host, data string
	env        []string
	procs      []*exec.Cmd
	exited     []chan struct{}
}

const (
	testRedisPassword    = "redis-test-pw"
	testSentinelPassword = "sentinel-test-pw"
	testMasterName       = "pkgfleet"
)

// freePortOnAll is a TCP port free on every host, for a server per host
// on the same port, as every pod of the StatefulSet listens on 6379.
func freePortOnAll(t *testing.T, hosts []string) int {
	t.Helper()
	for range 50 {
		p := testenv.FreePort(t)
		ok := true
		for _, h := range hosts {
			l, err := net.Listen("tcp", net.JoinHostPort(h, fmt.Sprint(p)))
			if err != nil {
				ok = false
				break
			}
			l.Close()
		}
		if ok {
			return p
		}
	}
	t.Fatal("no port free on every loopback address")
	return 0
}

func (p *sentinelPod) start(t *testing.T) {
	t.Helper()
	p.procs, p.exited = nil, nil
	for _, script := range []string{"redis.sh", "sentinel.sh"} {
		log, err := os.OpenFile(filepath.Join(p.data, script+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("sh", repoPath(chartDir, "files", "redis", script))
		cmd.Env = append(os.Environ(), p.env...)
		cmd.Stdout, cmd.Stderr = log, log
		// A group of its own: the pod's death also kills what redis-server
		// forked (an AOF rewrite or RDB save), which would otherwise go on
		// writing into the data directory the test removes.
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		log.Close()
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		p.procs, p.exited = append(p.procs, cmd), append(p.exited, exited)
	}
}

// kill is the pod's death: both containers, SIGKILL.
func (p *sentinelPod) kill() {
	for i, c := range p.procs {
		_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
		<-p.exited[i]
	}
	p.procs = nil
}

func (p *sentinelPod) logs() string {
	var b strings.Builder
	for _, script := range []string{"redis.sh", "sentinel.sh"} {
		data, _ := os.ReadFile(filepath.Join(p.data, script+".log"))
		if len(data) > 3000 {
			data = data[len(data)-3000:]
		}
		fmt.Fprintf(&b, "--- %s %s:\n%s\n", p.host, script, data)
	}
	return b.String()
}

// The chart's Redis with Sentinel, its scripts run for real with Debian's
// redis-server and redis-sentinel on three loopback addresses, passwords
// on: the first pod starts as master and the others as its replicas; every
// sentinel agrees on it and knows the two others; a write needs a replica
// (min-replicas-to-write); when the master's pod dies, the sentinels
// promote a replica that keeps the write; and the dead pod, started again,
// asks the sentinels and rejoins as a replica of the new master instead of
// coming back as a second master.
func TestChartRedisSentinelScriptsFailOver(t *testing.T) {
	testenv.Require(t, "redis-server", "redis-sentinel", "redis-cli", "getent", "timeout")
	hosts := []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"}
	redisPort, sentinelPort := freePortOnAll(t, hosts), 0
	for sentinelPort == 0 || sentinelPort == redisPort {
		sentinelPort = freePortOnAll(t, hosts)
	}
	pods := make([]*sentinelPod, len(hosts))
	for i, h := range hosts {
		pods[i] = &sentinelPod{host: h, data: t.TempDir(), env: []string{
			"ME=" + h, "PEERS=" + strings.Join(hosts, " "), "BIND=" + h,
			fmt.Sprintf("REDIS_PORT=%d", redisPort), fmt.Sprintf("SENTINEL_PORT=%d", sentinelPort),
			"MASTER_NAME=" + testMasterName, "QUORUM=2", "DOWN_AFTER=1000", "FAILOVER_TIMEOUT=5000",
			"APPENDFSYNC=everysec", "MIN_REPLICAS=1", "MAX_LAG=10",
			"REDIS_PASSWORD=" + testRedisPassword, "SENTINEL_PASSWORD=" + testSentinelPassword,
		}}
	}
	for i := range pods {
		pods[i].env = append(pods[i].env, "DATA_DIR="+pods[i].data)
	}
	t.Cleanup(func() {
		for _, p := range pods {
			p.kill()
		}
		if t.Failed() {
			for _, p := range pods {
				t.Log(p.logs())
			}
		}
	})
	ctx := context.Background()
	data := func(h string) *redis.Client {
		c := redis.NewClient(&redis.Options{Addr: net.JoinHostPort(h, fmt.Sprint(redisPort)), Password: testRedisPassword, MaxRetries: -1})
		t.Cleanup(func() { c.Close() })
		return c
	}
	sentinel := func(h string) *redis.SentinelClient {
		c := redis.NewSentinelClient(&redis.Options{Addr: net.JoinHostPort(h, fmt.Sprint(sentinelPort)), Password: testSentinelPassword, MaxRetries: -1})
		t.Cleanup(func() { c.Close() })
		return c
	}
	role := func(h string) (string, string) { // role, and for a replica its master and link
		info, err := data(h).Info(ctx, "replication").Result()
		if err != nil {
			return "", ""
		}
		get := func(k string) string {
			for _, l := range strings.Split(info, "\r\n") {
				if v, ok := strings.CutPrefix(l, k+":"); ok {
					return v
				}
			}
			return ""
		}
		return get("role"), get("master_host") + " " + get("master_link_status")
	}
	// Pods start in order, each once the one before serves (the
	// StatefulSet's OrderedReady).
	for _, p := range pods {
		p.start(t)
		testenv.Eventually(t, 30*time.Second, p.host+" redis answering", func() bool {
			c, err := net.Dial("tcp", net.JoinHostPort(p.host, fmt.Sprint(redisPort)))
			if err != nil {
				return false
			}
			c.Close()
			return data(p.host).Ping(ctx).Err() == nil
		})
	}
	agree := func(want string, among []*sentinelPod) {
		t.Helper()
		testenv.Eventually(t, 60*time.Second, "every sentinel names "+want+" and knows the other sentinels and the replicas", func() bool {
			for _, p := range among {
				s := sentinel(p.host)
				addr, err := s.GetMasterAddrByName(ctx, testMasterName).Result()
				if err != nil || len(addr) != 2 || addr[0] != want {
					return false
				}
				others, err := s.Sentinels(ctx, testMasterName).Result()
				if err != nil || len(others) != len(pods)-1 {
					return false
				}
				// A failover can only move replicas a sentinel knows of
				// (it learns them from the master's INFO every 10 s).
				replicas, err := s.Replicas(ctx, testMasterName).Result()
				if err != nil || len(replicas) != len(pods)-1 {
					return false
				}
				for _, r := range replicas {
					if strings.Contains(r["flags"], "down") {
						return false
					}
				}
			}
			return true
		})
	}
	agree(hosts[0], pods)
	for _, h := range hosts[1:] {
		testenv.Eventually(t, 30*time.Second, h+" replicating from "+hosts[0], func() bool {
			r, link := role(h)
			return r == "slave" && link == hosts[0]+" up"
		})
	}
	if r, _ := role(hosts[0]); r != "master" {
		t.Fatalf("%s is %q, want master", hosts[0], r)
	}
	if err := data(hosts[0]).Set(ctx, "build:1", "kept", 0).Err(); err != nil {
		t.Fatalf("write to the master with two replicas: %v", err)
	}
	if n, err := data(hosts[0]).Wait(ctx, 2, 5000).Result(); err != nil || n != 2 {
		t.Fatalf("WAIT 2: %d replicas acknowledged, %v", n, err)
	}

	// The master's pod dies.
	pods[0].kill()
	var promoted string
	testenv.Eventually(t, 60*time.Second, "a replica promoted", func() bool {
		addr, err := sentinel(hosts[1]).GetMasterAddrByName(ctx, testMasterName).Result()
		if err != nil || len(addr) != 2 || addr[0] == hosts[0] {
			return false
		}
		promoted = addr[0]
		r, _ := role(promoted)
		return r == "master"
	})
	if v, err := data(promoted).Get(ctx, "build:1").Result(); err != nil || v != "kept" {
		t.Fatalf("the promoted master %s lost the acknowledged write: %q, %v", promoted, v, err)
	}
	testenv.Eventually(t, 30*time.Second, "the promoted master takes writes with its one replica", func() bool {
		return data(promoted).Set(ctx, "build:2", "after", 0).Err() == nil
	})

	// It comes back: a replica of the new master, not a second master.
	pods[0].start(t)
	testenv.Eventually(t, 60*time.Second, hosts[0]+" rejoining as a replica of "+promoted, func() bool {
		r, link := role(hosts[0])
		return r == "slave" && link == promoted+" up"
	})
	agree(promoted, pods)
	testenv.Eventually(t, 30*time.Second, "the rejoined replica has the write made while it was dead", func() bool {
		v, err := data(hosts[0]).Get(ctx, "build:2").Result()
		return err == nil && v == "after"
	})
	for _, p := range pods {
		conf, err := os.ReadFile(filepath.Join(p.data, "sentinel.conf"))
		if err != nil {
			t.Fatal(err)
		}
		if st, _ := os.Stat(filepath.Join(p.data, "sentinel.conf")); st.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s: sentinel.conf (it holds the passwords) is mode %v", p.host, st.Mode().Perm())
		}
		if !strings.Contains(string(conf), "sentinel monitor "+testMasterName+" "+promoted+" ") {
			t.Errorf("%s: sentinel.conf does not name the new master %s:\n%s", p.host, promoted, conf)
		}
	}
	for _, p := range pods {
		for _, script := range []string{"redis.sh", "sentinel.sh"} {
			log, _ := os.ReadFile(filepath.Join(p.data, script+".log"))
			if strings.Contains(string(log), testRedisPassword) || strings.Contains(string(log), testSentinelPassword) {
				t.Errorf("%s %s logged a password", p.host, script)
			}
		}
	}
}

// checkRedisSentinelValues: ci/redis-sentinel-values.yaml renders three
// Redis pods, each a redis-server and a redis-sentinel running the scripts
// TestChartRedisSentinelScriptsFailOver runs, on claims of their own,
// reachable by DNS before they are ready, spread over nodes, with the
// durability settings; pkgfleet is pointed at their sentinels.
func checkRedisSentinelValues(t *testing.T, r *rendered) {
	t.Helper()
	name := fullname + "-redis"
	s := r.statefulSets[name]
	if s == nil {
		t.Fatalf("no StatefulSet %s", name)
	}
	if s.Spec.Replicas == nil || *s.Spec.Replicas != 3 {
		t.Errorf("Redis pods: %v, want 3", s.Spec.Replicas)
	}
	if len(s.Spec.VolumeClaimTemplates) != 1 || !slices.Equal(s.Spec.VolumeClaimTemplates[0].Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}) {
		t.Errorf("Redis pods: claim templates %+v, want one ReadWriteOnce claim each", s.Spec.VolumeClaimTemplates)
	}
	pod := s.Spec.Template.Spec
	var peers []string
	for i := range 3 {
		peers = append(peers, fmt.Sprintf("%s-%d.%s.%s.svc", name, i, name, namespace))
	}
	wantEnv := map[string]string{
		"ME": "$(POD_NAME)." + name + "." + namespace + ".svc", "PEERS": strings.Join(peers, " "),
		"REDIS_PORT": "6379", "SENTINEL_PORT": "26379", "MASTER_NAME": "pkgfleet", "DATA_DIR": "/data",
		"APPENDFSYNC": "always", "MIN_REPLICAS": "1", "MAX_LAG": "10", "QUORUM": "2",
	}
	for _, want := range []string{"redis", "sentinel"} {
		i := slices.IndexFunc(pod.Containers, func(c corev1.Container) bool { return c.Name == want })
		if i < 0 {
			t.Fatalf("Redis pod has no %s container", want)
		}
		c := pod.Containers[i]
		if !slices.Equal(c.Command, []string{"sh", "/scripts/" + want + ".sh"}) {
			t.Errorf("%s container runs %v", want, c.Command)
		}
		for k, v := range wantEnv {
			if got := envValue(c, k); got != v {
				t.Errorf("%s container: %s = %q, want %q", want, k, got, v)
			}
		}
		if ref := envSecret(c, "REDIS_PASSWORD"); ref == nil || ref.Name != name {
			t.Errorf("%s container: REDIS_PASSWORD from %v", want, ref)
		}
		if ref := envSecret(c, "SENTINEL_PASSWORD"); ref == nil || ref.Name != name+"-sentinel" {
			t.Errorf("%s container: SENTINEL_PASSWORD from %v", want, ref)
		}
		if m := mountOf(pod, c, "/data"); m != nil || !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == "data" && m.MountPath == "/data" }) {
			t.Errorf("%s container: /data is not the pod's claim", want)
		}
	}
	// The scripts in the ConfigMap are the files the failover test runs.
	cm := r.configMaps[name+"-scripts"]
	if cm == nil {
		t.Fatalf("no ConfigMap %s-scripts", name)
	}
	for _, f := range []string{"discover.sh", "redis.sh", "sentinel.sh"} {
		want := strings.TrimSpace(string(readRepoFile(t, chartDir, "files", "redis", f)))
		if strings.TrimSpace(cm.Data[f]) != want {
			t.Errorf("ConfigMap %s-scripts: %s differs from charts/pkgfleet/files/redis/%s", name, f, f)
		}
	}
	svc := r.services[name]
	if svc == nil || !svc.Spec.PublishNotReadyAddresses || !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == "sentinel" && p.Port == 26379 }) {
		t.Errorf("Service %s: want headless, publishing pods before they are ready, with the sentinel port: %+v", name, svc)
	}
	if aff := pod.Affinity; aff == nil || aff.PodAntiAffinity == nil || len(aff.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) != 1 {
		t.Errorf("Redis pods are not spread over nodes: %+v", pod.Affinity)
	}
	if _, ok := r.pdbs[name]; !ok {
		t.Errorf("no PodDisruptionBudget for the Redis pods")
	}
	np := r.netpols[name]
	if np == nil || len(np.Spec.Ingress) != 1 || len(np.Spec.Ingress[0].From) != 3 ||
		!slices.ContainsFunc(np.Spec.Ingress[0].Ports, func(p networkingv1.NetworkPolicyPort) bool { return p.Port.String() == "sentinel" }) {
		t.Errorf("NetworkPolicy %s: want the sentinel port open to the API, the workers and the Redis pods: %+v", name, np)
	}
	_, raw := r.config(t)
	var addrs []string
	for _, p := range peers {
		addrs = append(addrs, p+":26379")
	}
	if raw["Redis.SentinelAddresses"] != strings.Join(addrs, ",") || raw["Redis.SentinelMaster"] != "pkgfleet" {
		t.Errorf("Redis.SentinelAddresses %q, Redis.SentinelMaster %q: want each pod's sentinel and pkgfleet", raw["Redis.SentinelAddresses"], raw["Redis.SentinelMaster"])
	}
	if raw["Redis.Address"] != "" {
		t.Errorf("Redis.Address %q is set beside the sentinels", raw["Redis.Address"])
	}
	for _, d := range []string{fullname + "-api", fullname + "-worker"} {
		c := r.deployments[d].Spec.Template.Spec.Containers[0]
		if ref := envSecret(c, "PKGFLEET_REDIS_SENTINELPASSWORD"); ref == nil || ref.Name != name+"-sentinel" || ref.Key != "sentinel-password" {
			t.Errorf("%s: Redis.SentinelPassword from %v", d, ref)
		}
		if ref := envSecret(c, "PKGFLEET_REDIS_PASSWORD"); ref == nil || ref.Name != name {
			t.Errorf("%s: Redis.Password from %v", d, ref)
		}
	}
}

// checkExternalSentinelValues: ci/external-sentinel-values.yaml points
// pkgfleet at an existing Sentinel set and renders no Redis of its own.
func checkExternalSentinelValues(t *testing.T, r *rendered) {
	t.Helper()
	r.wantCount(t, "StatefulSet", 0)
	_, raw := r.config(t)
	if want := "sentinel-0.redis.example.internal:26379,sentinel-1.redis.example.internal:26379,sentinel-2.redis.example.internal:26379"; raw["Redis.SentinelAddresses"] != want {
		t.Errorf("Redis.SentinelAddresses = %q, want %q", raw["Redis.SentinelAddresses"], want)
	}
	if raw["Redis.SentinelMaster"] != "fleet-master" || raw["Redis.Address"] != "" {
		t.Errorf("Redis.SentinelMaster %q, Redis.Address %q", raw["Redis.SentinelMaster"], raw["Redis.Address"])
	}
	for _, d := range []string{fullname + "-api", fullname + "-worker"} {
		c := r.deployments[d].Spec.Template.Spec.Containers[0]
		if ref := envSecret(c, "PKGFLEET_REDIS_SENTINELPASSWORD"); ref == nil || ref.Name != "pkgfleet-redis-sentinel" || ref.Key != "password" {
			t.Errorf("%s: Redis.SentinelPassword from %v", d, ref)
		}
	}
}
