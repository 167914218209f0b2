package deploy

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// checkS3Pod: with Storage.Default = s3 the API or worker pod d mounts no
// claim at all (the point of the bucket: no shared volume), and its AWS
// credentials, if any, come from a Secret, both keys or neither; none sits
// in the ConfigMap.
func checkS3Pod(t *testing.T, r *rendered, d *appsv1.Deployment, raw map[string]string) {
	t.Helper()
	pod := d.Spec.Template.Spec
	for _, v := range pod.Volumes {
		if v.PersistentVolumeClaim != nil {
			t.Errorf("%s: mounts claim %s although artifacts are in bucket %s", d.Name, v.PersistentVolumeClaim.ClaimName, raw["S3Storage.Bucket"])
		}
	}
	for _, c := range append(slices.Clone(pod.InitContainers), pod.Containers...) {
		id, secret := envSecret(c, "AWS_ACCESS_KEY_ID"), envSecret(c, "AWS_SECRET_ACCESS_KEY")
		if (id == nil) != (secret == nil) || (id != nil && id.Name != secret.Name) {
			t.Errorf("%s/%s: AWS_ACCESS_KEY_ID from %v, AWS_SECRET_ACCESS_KEY from %v: want both from one Secret, or neither", d.Name, c.Name, id, secret)
		}
		for _, e := range c.Env {
			if strings.HasPrefix(e.Name, "AWS_") && e.Value != "" {
				t.Errorf("%s/%s: %s is a literal in the pod spec; credentials come from a Secret or the AWS chain", d.Name, c.Name, e.Name)
			}
		}
	}
	if raw["S3Storage.Bucket"] == "" {
		t.Errorf("Storage.Default = s3 without S3Storage.Bucket")
	}
	if cm := r.configMaps[fullname].Data["pkgfleet.gcfg"]; regexp.MustCompile(`(?i)aws_|secret|accesskey`).MatchString(cm) {
		t.Errorf("the ConfigMap names a credential:\n%s", cm)
	}
}

// checkReadWriteOnceOnly: every claim the values make is ReadWriteOnce, so
// the release installs on a cluster without ReadWriteMany volumes.
func checkReadWriteOnceOnly(t *testing.T, r *rendered) {
	t.Helper()
	for name, pvc := range r.pvcs {
		if !slices.Equal(pvc.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}) {
			t.Errorf("PVC %s: access modes %v, want ReadWriteOnce only", name, pvc.Spec.AccessModes)
		}
	}
	claims := 0
	for name, s := range r.statefulSets {
		for _, c := range s.Spec.VolumeClaimTemplates {
			claims++
			if !slices.Equal(c.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}) {
				t.Errorf("StatefulSet %s claim %s: access modes %v, want ReadWriteOnce only", name, c.Name, c.Spec.AccessModes)
			}
		}
	}
	if claims == 0 {
		t.Errorf("no StatefulSet claim: the chart's Redis should keep its data on its own ReadWriteOnce claim")
	}
}

// checkS3Values: the settings and credentials of ci/s3-values.yaml reach
// the config and the pods.
func checkS3Values(t *testing.T, r *rendered) {
	t.Helper()
	r.wantCount(t, "PersistentVolumeClaim", 0)
	r.wantCount(t, "ServiceAccount", 0)
	checkReadWriteOnceOnly(t, r)
	_, raw := r.config(t)
	for k, want := range map[string]string{
		"Storage.Default": "s3", "S3Storage.Bucket": "pkgfleet-artifacts", "S3Storage.Region": "us-east-1",
		"S3Storage.Prefix": "pkgfleet/", "S3Storage.Endpoint": "https://s3.example.internal", "S3Storage.EnablePathStyle": "true",
	} {
		if raw[k] != want {
			t.Errorf("%s = %q, want %q", k, raw[k], want)
		}
	}
	for _, name := range []string{fullname + "-api", fullname + "-worker"} {
		c := r.deployments[name].Spec.Template.Spec.Containers[0]
		if ref := envSecret(c, "AWS_ACCESS_KEY_ID"); ref == nil || ref.Name != "pkgfleet-s3" || ref.Key != "access-key-id" {
			t.Errorf("%s: AWS_ACCESS_KEY_ID from %v, want pkgfleet-s3/access-key-id", name, ref)
		}
		if ref := envSecret(c, "AWS_SECRET_ACCESS_KEY"); ref == nil || ref.Name != "pkgfleet-s3" || ref.Key != "secret-access-key" {
			t.Errorf("%s: AWS_SECRET_ACCESS_KEY from %v, want pkgfleet-s3/secret-access-key", name, ref)
		}
		if sa := r.deployments[name].Spec.Template.Spec.ServiceAccountName; sa != "" {
			t.Errorf("%s: runs as ServiceAccount %s; none was asked for", name, sa)
		}
	}
}

// checkS3IRSAValues: ci/s3-irsa-values.yaml gives the API and the workers
// a ServiceAccount carrying the role, and no key at all.
func checkS3IRSAValues(t *testing.T, r *rendered) {
	t.Helper()
	r.wantCount(t, "PersistentVolumeClaim", 0)
	checkReadWriteOnceOnly(t, r)
	_, raw := r.config(t)
	if raw["Storage.Default"] != "s3" || raw["S3Storage.Bucket"] != "pkgfleet-artifacts" || raw["S3Storage.Region"] != "eu-west-1" {
		t.Errorf("storage settings %v", raw)
	}
	for _, k := range []string{"S3Storage.Endpoint", "S3Storage.Prefix"} {
		if _, ok := raw[k]; ok {
			t.Errorf("%s is written although its value is empty", k)
		}
	}
	sa := r.serviceAccounts[fullname]
	if sa == nil || sa.Annotations["eks.amazonaws.com/role-arn"] == "" {
		t.Fatalf("no ServiceAccount %s with the IRSA role annotation: %v", fullname, sa)
	}
	if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
		t.Errorf("ServiceAccount %s mounts an API token into every pod", fullname)
	}
	for _, name := range []string{fullname + "-api", fullname + "-worker"} {
		pod := r.deployments[name].Spec.Template.Spec
		if pod.ServiceAccountName != fullname {
			t.Errorf("%s: ServiceAccount %q, want %s", name, pod.ServiceAccountName, fullname)
		}
		if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
			t.Errorf("%s: mounts a Kubernetes API token", name)
		}
		if ref := envSecret(pod.Containers[0], "AWS_ACCESS_KEY_ID"); ref != nil {
			t.Errorf("%s: AWS_ACCESS_KEY_ID from %v, want none (web identity)", name, ref)
		}
	}
}

var rwoInstall = regexp.MustCompile("(?s)## A cluster with only ReadWriteOnce volumes\n.*?```sh\n(.*?)```")

// The chart README's install for a cluster without ReadWriteMany volumes
// uses value files that TestChartRendersConsistentObjects renders and
// holds to ReadWriteOnce claims only, and that the admission test submits.
func TestChartReadmeReadWriteOnceInstallIsTested(t *testing.T) {
	t.Parallel()
	m := rwoInstall.FindSubmatch(readRepoFile(t, chartDir, "README.md"))
	if m == nil {
		t.Fatalf("charts/pkgfleet/README.md has no \"## A cluster with only ReadWriteOnce volumes\" section with a sh block")
	}
	files := regexp.MustCompile(`-f charts/pkgfleet/ci/(\S+\.yaml)`).FindAllSubmatch(m[1], -1)
	if len(files) == 0 {
		t.Fatalf("the ReadWriteOnce install uses no ci/ value file:\n%s", m[1])
	}
	for _, f := range files {
		i := slices.IndexFunc(valueSets, func(vs valueSet) bool { return vs.file == string(f[1]) })
		if i < 0 {
			t.Errorf("the ReadWriteOnce install uses ci/%s, which no value set renders", f[1])
			continue
		}
		if !strings.HasPrefix(valueSets[i].name, "s3") {
			t.Errorf("the ReadWriteOnce install uses ci/%s, whose value set does not check for ReadWriteOnce claims only", f[1])
		}
	}
}
