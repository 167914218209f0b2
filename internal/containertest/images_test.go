//go:build containers

package containertest

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestImagesHoldTheirPackages checks that each image holds every package
// its Dockerfile's ARG PACKAGES names (make images builds them on local
// bases, so a package missing there would go unnoticed until a build
// needs it), and that the worker's compilers run.
func TestImagesHoldTheirPackages(t *testing.T) {
	requireImages(t, apiImage, workerImage, redisImage)
	arg := regexp.MustCompile(`(?m)^ARG PACKAGES="([^"]*)"$`)
	for _, img := range []struct{ image, dockerfile string }{
		{apiImage, "api.Dockerfile"},
		{workerImage, "worker.Dockerfile"},
		{redisImage, "redis.Dockerfile"},
	} {
		t.Run(img.image, func(t *testing.T) {
			t.Parallel()
			m := arg.FindSubmatch(mustRead(t, repoPath("docker", img.dockerfile)))
			if m == nil {
				t.Fatalf("docker/%s has no ARG PACKAGES", img.dockerfile)
			}
			pkgs := strings.Fields(string(m[1]))
			args := append([]string{"--network", "none", "--entrypoint", "dpkg-query", img.image, "-W", "-f", "${Package} ${Status}\n"}, pkgs...)
			out, code := runContainer(t, 2*time.Minute, args...)
			if code != 0 {
				t.Fatalf("dpkg-query in %s: exit %d\n%s", img.image, code, out)
			}
			for _, p := range pkgs {
				if !strings.Contains(out, p+" install ok installed\n") {
					t.Errorf("%s lacks %s:\n%s", img.image, p, out)
				}
			}
		})
	}
	t.Run("compilers", func(t *testing.T) {
		t.Parallel()
		out, code := runContainer(t, 2*time.Minute, "--network", "none", "--entrypoint", "/bin/sh", workerImage, "-c",
			"gcc --version && g++ --version && gfortran --version && make --version && R CMD config CC && python3-config --includes")
		if code != 0 {
			t.Fatalf("the worker image's build tools: exit %d\n%s", code, out)
		}
	})
}
