//go:build containers

package containertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The images make images builds (scripts/images.sh); the tests never build
// or pull one themselves.
const (
	apiImage    = "pkgfleet-api:local"
	workerImage = "pkgfleet-worker:local"
	redisImage  = "pkgfleet-redis:local"
)

// label marks everything the tests create, so that a run killed halfway
// leaves nothing that cannot be found: docker ps -a --filter label=pkgfleet.containertest
const label = "pkgfleet.containertest"

// root is the repository root.
var root = func() string {
	dir, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		panic(err)
	}
	return dir
}()

func repoPath(parts ...string) string {
	return filepath.Join(append([]string{root}, parts...)...)
}

// missing fails the test under CI=true and skips it otherwise: a missing
// engine or image must never let CI pass silently.
func missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf(format+" (CI=true: required; make test-containers provides it)", args...)
	}
	t.Skipf(format+" (make test-containers provides it)", args...)
}

// requireImages checks that a Docker Engine answers and holds the images.
func requireImages(t testing.TB, images ...string) {
	t.Helper()
	if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		missing(t, "no Docker Engine answers: %v: %s", err, bytes.TrimSpace(out))
	}
	for _, img := range images {
		if out, err := exec.Command("docker", "image", "inspect", "--format", "{{.Id}}", img).CombinedOutput(); err != nil {
			missing(t, "image %s is not built: %s", img, bytes.TrimSpace(out))
		}
	}
}

// command runs name args with a deadline and returns its combined output
// and exit status (-1 when it could not run or timed out).
func command(timeout time.Duration, dir string, env []string, name string, args ...string) (string, int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return string(out), -1, fmt.Errorf("%s %s: no answer within %s", name, strings.Join(args, " "), timeout)
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode(), nil
	}
	if err != nil {
		return string(out), -1, err
	}
	return string(out), 0, nil
}

// docker runs a docker command that must succeed and returns its output.
func docker(t testing.TB, args ...string) string {
	t.Helper()
	out, code, err := command(5*time.Minute, root, nil, "docker", args...)
	if err != nil || code != 0 {
		t.Fatalf("docker %s: exit %d %v\n%s", strings.Join(args, " "), code, err, out)
	}
	return strings.TrimSpace(out)
}

// uniqueName is a Docker object name of this test that no other run shares.
func uniqueName(t testing.TB) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	base := strings.ToLower(regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(t.Name(), "-"))
	if len(base) > 40 {
		base = base[:40]
	}
	return "pkgfleet-ct-" + strings.Trim(base, "-") + "-" + hex.EncodeToString(b)
}

// runContainer runs one container to its end (docker run --rm) and returns
// its output and exit status. args are docker run's options, the image and
// the command; the container is removed even when the deadline passes.
func runContainer(t testing.TB, timeout time.Duration, args ...string) (string, int) {
	t.Helper()
	name := uniqueName(t)
	t.Cleanup(func() { removeContainers(name) })
	full := append([]string{"run", "--rm", "--name", name, "--label", label}, args...)
	out, code, err := command(timeout, root, nil, "docker", full...)
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(full, " "), err, out)
	}
	return out, code
}

func removeContainers(names ...string) {
	_, _, _ = command(time.Minute, root, nil, "docker", append([]string{"rm", "-f", "-v"}, names...)...)
}

// waitFor polls cond until it reports done or the deadline passes; then
// the test fails with what and the last state cond described.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() (done bool, state string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		done, state := cond()
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s; last: %s", what, timeout, state)
		}
		<-tick.C
	}
}

// composeProject is one docker compose project of a test, brought down
// with its volumes and networks when the test ends.
type composeProject struct {
	t     testing.TB
	name  string
	files []string
	env   []string
}

// composeCommand is the compose the machine has: the docker compose plugin,
// else the standalone docker-compose (Debian's).
func composeCommand() []string {
	if exec.Command("docker", "compose", "version").Run() == nil {
		return []string{"docker", "compose"}
	}
	return []string{"docker-compose"}
}

// startCompose brings up the services of files (the first is the main
// file, the others override it) under a project name of its own, with env
// added to the environment compose interpolates from.
func startCompose(t testing.TB, files []string, env []string, services ...string) *composeProject {
	t.Helper()
	if _, err := exec.LookPath(composeCommand()[0]); err != nil {
		missing(t, "no docker compose: %v", err)
	}
	p := &composeProject{t: t, name: strings.ReplaceAll(uniqueName(t), "-", ""), files: files, env: env}
	t.Cleanup(func() {
		if t.Failed() {
			out, _, _ := p.run(time.Minute, "logs", "--no-color", "--tail", "80")
			t.Logf("compose logs of %s:\n%s", p.name, out)
		}
		if out, code, err := p.run(3*time.Minute, "down", "-v", "--remove-orphans", "-t", "10"); err != nil || code != 0 {
			t.Logf("compose down %s: exit %d %v\n%s", p.name, code, err, out)
		}
	})
	p.must(10*time.Minute, append([]string{"up", "-d", "--no-build"}, services...)...)
	return p
}

func (p *composeProject) run(timeout time.Duration, args ...string) (string, int, error) {
	c := composeCommand()
	full := append(c[1:], "-p", p.name)
	for _, f := range p.files {
		full = append(full, "-f", f)
	}
	full = append(full, args...)
	return command(timeout, root, p.env, c[0], full...)
}

// must runs a compose command that has to succeed.
func (p *composeProject) must(timeout time.Duration, args ...string) string {
	p.t.Helper()
	out, code, err := p.run(timeout, args...)
	if err != nil || code != 0 {
		p.t.Fatalf("compose %s: exit %d %v\n%s", strings.Join(args, " "), code, err, out)
	}
	return out
}

// container is the name of a service's (first) container.
func (p *composeProject) container(service string) string {
	p.t.Helper()
	id := strings.TrimSpace(p.must(time.Minute, "ps", "-q", service))
	if id == "" {
		p.t.Fatalf("compose service %s has no container", service)
	}
	return strings.Fields(id)[0]
}
