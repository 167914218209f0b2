package deploy

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"
)

// The chart's defaults, and the values the cluster phase installs on its
// one node (ci/s3-values.yaml, ci/redis-sentinel-values.yaml: three Redis
// pods, each a redis-server and a redis-sentinel), install on one small
// node: every pod they make requests, in all, at most 1.5 CPUs, so that a
// 2-CPU node keeps room for its own pods (DNS, the CNI). A worker that
// asked for a whole CPU left the second worker Pending ("Insufficient
// cpu") on a 2-CPU node, and `helm install --wait` of the defaults timed
// out there.
func TestChartDefaultsFitOneTwoCPUNode(t *testing.T) {
	t.Parallel()
	for _, vs := range []valueSet{
		{name: "defaults"},
		{name: "s3", file: "s3-values.yaml"},
		{name: "redis-sentinel", file: "redis-sentinel-values.yaml"},
	} {
		r := render(t, vs)
		total := resource.NewMilliQuantity(0, resource.DecimalSI)
		for _, w := range r.workloads() {
			replicas := int64(1)
			if d, ok := r.deployments[w.name]; ok && d.Spec.Replicas != nil {
				replicas = int64(*d.Spec.Replicas)
			}
			if s, ok := r.statefulSets[w.name]; ok && s.Spec.Replicas != nil {
				replicas = int64(*s.Spec.Replicas)
			}
			for _, c := range w.pod.Spec.Containers {
				cpu := c.Resources.Requests.Cpu()
				total.Add(*resource.NewMilliQuantity(cpu.MilliValue()*replicas, resource.DecimalSI))
			}
		}
		if limit := resource.MustParse("1500m"); total.Cmp(limit) > 0 {
			t.Errorf("%s: the pods request %s CPU in all, more than %s: a 2-CPU node cannot start them all", vs.name, total, &limit)
		}
	}
}

// The chart's Redis serves the API and the workers, which reach it over
// the pod network, not its loopback. Redis turns protected mode on when it
// has no password (Debian's redis-server, as in pkgfleet-redis:local, does;
// the official image's entrypoint turns it off), and then answers every
// other client "-DENIED … protected mode": the API and workers waited for
// Redis forever. The NetworkPolicy, not protected mode, limits who reaches
// it; a password (redis.password) is the way to more.
func TestChartRedisServesClientsOffItsLoopback(t *testing.T) {
	t.Parallel()
	r := render(t, valueSet{name: "defaults"})
	for name, s := range r.statefulSets {
		for _, c := range s.Spec.Template.Spec.Containers {
			if c.Name != "redis" {
				continue
			}
			cmd := strings.Join(append(append([]string{}, c.Command...), c.Args...), " ")
			if !strings.Contains(cmd, "--protected-mode no") {
				t.Errorf("%s: redis runs %q, without --protected-mode no: Redis without a password refuses every client off its loopback", name, cmd)
			}
			return
		}
	}
	t.Fatal("the defaults render no redis container")
}
