package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// The facts the images, the compose file and the chart must agree on.
const (
	imageUID   = "10001"
	apiPort    = 4242
	workerPort = 9464
	configFile = "/etc/pkgfleet/pkgfleet.gcfg"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	line int
	cmd  string // upper case
	args string
}

type stage struct {
	from, name string
	ins        []instruction
}

// argDefaults are the defaults of the ARGs declared before the first FROM
// (the only ones a FROM may use), by name.
func argDefaults(t *testing.T, path string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, line := range strings.Split(string(readRepoFile(t, path)), "\n") {
		if strings.HasPrefix(line, "FROM ") {
			break
		}
		if a, ok := strings.CutPrefix(line, "ARG "); ok {
			name, def, _ := strings.Cut(a, "=")
			out[name] = strings.Trim(def, `"`)
		}
	}
	return out
}

// expandFrom resolves ${NAME} in a FROM with the ARG defaults: the image a
// builder with registry access uses when no --build-arg is given.
func expandFrom(from string, args map[string]string) string {
	return os.Expand(from, func(name string) string { return args[name] })
}

// argDefault is the default of an ARG declared in a stage.
func (s stage) argDefault(name string) (string, bool) {
	for _, in := range s.all("ARG") {
		if n, def, ok := strings.Cut(in.args, "="); ok && n == name {
			return strings.Trim(def, `"`), true
		}
	}
	return "", false
}

var dockerfileCmds = []string{"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY",
	"ENTRYPOINT", "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}

// parseDockerfile reads a Dockerfile the way the builder splits it:
// comments dropped, backslash continuations joined, one instruction per
// logical line, grouped into stages.
func parseDockerfile(t *testing.T, path string) []stage {
	t.Helper()
	data := readRepoFile(t, path)
	var stages []stage
	var cur strings.Builder
	start := 0
	flush := func() {
		text := strings.TrimSpace(cur.String())
		cur.Reset()
		if text == "" {
			return
		}
		cmd, args, _ := strings.Cut(text, " ")
		in := instruction{line: start, cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		if !slices.Contains(dockerfileCmds, in.cmd) {
			t.Errorf("%s:%d: unknown instruction %s", path, in.line, cmd)
		}
		if in.cmd == "FROM" {
			f := strings.Fields(in.args)
			s := stage{from: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				s.name = f[2]
			} else if len(f) != 1 {
				t.Errorf("%s:%d: FROM %s", path, in.line, in.args)
			}
			stages = append(stages, s)
		} else if len(stages) == 0 && in.cmd != "ARG" {
			t.Errorf("%s:%d: %s before FROM", path, in.line, in.cmd)
			return
		}
		if len(stages) > 0 {
			stages[len(stages)-1].ins = append(stages[len(stages)-1].ins, in)
		}
	}
	for i, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") {
			continue
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if strings.HasSuffix(trimmed, `\`) {
			cur.WriteString(strings.TrimSuffix(trimmed, `\`) + " ")
			continue
		}
		cur.WriteString(trimmed)
		flush()
	}
	if cur.Len() > 0 {
		t.Errorf("%s: ends inside a continued line", path)
	}
	return stages
}

func (s stage) all(cmd string) []instruction {
	var out []instruction
	for _, in := range s.ins {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

func (s stage) last(t *testing.T, cmd string) string {
	t.Helper()
	ins := s.all(cmd)
	if len(ins) == 0 {
		t.Errorf("final stage has no %s", cmd)
		return ""
	}
	return ins[len(ins)-1].args
}

func TestImagesAreMultiStageNonRootAndMatchTheChart(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		file, cmd, binary string
		port              int
		packages          []string
	}{
		{"docker/api.Dockerfile", "./cmd/api", "/usr/local/bin/pkgfleet-api", apiPort, []string{"git", "ca-certificates"}},
		{"docker/worker.Dockerfile", "./cmd/worker", "/usr/local/bin/pkgfleet-worker", workerPort,
			[]string{"r-base-core", "python3-build", "python3-setuptools", "python3-wheel", "git", "ca-certificates",
				// the common PEP 517 backends Debian has (issue 13)
				"python3-hatchling", "python3-hatch-vcs", "flit", "python3-poetry-core", "python3-setuptools-scm", "python3-mesonpy"}},
	} {
		t.Run(filepath.Base(tc.file), func(t *testing.T) {
			t.Parallel()
			// A "# syntax=" directive makes BuildKit pull a frontend image,
			// which fails where no registry is reachable.
			if regexp.MustCompile(`(?im)^#\s*syntax\s*=`).Match(readRepoFile(t, tc.file)) {
				t.Errorf("%s has a # syntax= directive; the builder's own frontend needs no pull", tc.file)
			}
			stages := parseDockerfile(t, tc.file)
			if len(stages) < 2 {
				t.Fatalf("%d stages; want a golang builder and a runtime", len(stages))
			}
			args := argDefaults(t, tc.file)
			for i := range stages {
				stages[i].from = expandFrom(stages[i].from, args)
			}
			names := map[string]bool{}
			for i, s := range stages {
				if !regexp.MustCompile(`^[a-z0-9./-]+:[A-Za-z0-9._-]+$`).MatchString(s.from) || strings.HasSuffix(s.from, ":latest") {
					t.Errorf("stage %d: FROM %s is not a pinned tag", i, s.from)
				}
				for _, c := range s.all("COPY") {
					if m := regexp.MustCompile(`--from=(\S+)`).FindStringSubmatch(c.args); m != nil && !names[m[1]] {
						t.Errorf("line %d: COPY --from=%s names no earlier stage", c.line, m[1])
					}
				}
				if s.name != "" {
					names[s.name] = true
				}
			}
			build, final := stages[0], stages[len(stages)-1]
			if !strings.HasPrefix(build.from, "golang:1.26") {
				t.Errorf("builder FROM %s, want golang:1.26", build.from)
			}
			if final.from != "debian:bookworm-slim" {
				t.Errorf("runtime FROM %s, want debian:bookworm-slim", final.from)
			}
			built, prebuilt := false, false
			for _, r := range build.all("RUN") {
				if strings.Contains(r.args, "go build") && strings.Contains(r.args, " "+tc.cmd) {
					built = true
				}
				if strings.Contains(r.args, `"$PREBUILT/`+filepath.Base(tc.binary)+`"`) {
					prebuilt = true
				}
			}
			if !built {
				t.Errorf("builder never runs go build %s", tc.cmd)
			}
			// make images builds without a Go image: binaries built outside.
			if def, ok := build.argDefault("PREBUILT"); !ok || def != "" || !prebuilt {
				t.Errorf("builder takes no prebuilt %s from ARG PREBUILT (empty by default)", filepath.Base(tc.binary))
			}
			if _, err := os.Stat(repoPath(tc.cmd)); err != nil {
				t.Errorf("builder builds %s: %v", tc.cmd, err)
			}
			if u := final.last(t, "USER"); u != imageUID+":"+imageUID {
				t.Errorf("USER %q, want the numeric %s:%s (runAsNonRoot can only verify numbers)", u, imageUID, imageUID)
			}
			runs := ""
			for _, r := range final.all("RUN") {
				runs += r.args + "\n"
			}
			if !strings.Contains(runs, "--uid "+imageUID) {
				t.Errorf("runtime stage creates no user with uid %s", imageUID)
			}
			for _, dir := range []string{"/var/lib/pkgfleet", "/var/run/pkgfleet", "/srv/pkgfleet/packages"} {
				if !strings.Contains(runs, dir) {
					t.Errorf("runtime stage does not create %s for the pkgfleet user", dir)
				}
			}
			// The runtime installs ARG PACKAGES, skipping those the base
			// image holds (make images' local base has them all).
			pkgs, _ := final.argDefault("PACKAGES")
			for _, p := range tc.packages {
				if !slices.Contains(strings.Fields(pkgs), p) {
					t.Errorf("runtime stage's PACKAGES %q lack %s", pkgs, p)
				}
			}
			if !regexp.MustCompile(`for p in \$PACKAGES[ ;].*dpkg-query.*apt-get install -y --no-install-recommends \$missing`).MatchString(runs) {
				t.Errorf("runtime stage does not install the missing ones of $PACKAGES with apt-get")
			}
			if e := final.last(t, "EXPOSE"); e != strconv.Itoa(tc.port) {
				t.Errorf("EXPOSE %s, want %d", e, tc.port)
			}
			var entry []string
			if err := json.Unmarshal([]byte(final.last(t, "ENTRYPOINT")), &entry); err != nil || len(entry) == 0 || entry[0] != tc.binary {
				t.Errorf("ENTRYPOINT %q, want the exec form [%q] (signals reach the binary)", final.last(t, "ENTRYPOINT"), tc.binary)
			}
			if !strings.Contains(final.last(t, "ENV"), "PKGFLEET_CONFIG="+configFile) {
				t.Errorf("ENV does not point PKGFLEET_CONFIG at %s", configFile)
			}
			copied := false
			for _, c := range final.all("COPY") {
				if strings.Contains(c.args, "--from=") && strings.Contains(c.args, filepath.Base(tc.binary)) && strings.HasSuffix(c.args, filepath.Dir(tc.binary)+"/") {
					copied = true
				}
			}
			if !copied {
				t.Errorf("runtime stage does not copy %s from the builder", tc.binary)
			}
		})
	}
}

// The chart's defaults use the images' uid and ports.
func TestChartDefaultsMatchTheImages(t *testing.T) {
	t.Parallel()
	var v struct {
		PodUser struct{ UID, GID int } `json:"podUser"`
		API     struct {
			Port int `json:"port"`
		} `json:"api"`
		Worker struct {
			MetricsPort int `json:"metricsPort"`
		} `json:"worker"`
	}
	if err := yaml.Unmarshal(readRepoFile(t, chartDir, "values.yaml"), &v); err != nil {
		t.Fatal(err)
	}
	if strconv.Itoa(v.PodUser.UID) != imageUID || strconv.Itoa(v.PodUser.GID) != imageUID {
		t.Errorf("podUser %d:%d, images run as %s", v.PodUser.UID, v.PodUser.GID, imageUID)
	}
	if v.API.Port != apiPort || v.Worker.MetricsPort != workerPort {
		t.Errorf("chart ports %d/%d, images expose %d/%d", v.API.Port, v.Worker.MetricsPort, apiPort, workerPort)
	}
}

// composeService is the part of a compose service the test reads.
type composeService struct {
	Image string `json:"image"`
	Build *struct {
		Context    string `json:"context"`
		Dockerfile string `json:"dockerfile"`
	} `json:"build"`
	User            string         `json:"user"`
	ReadOnly        bool           `json:"read_only"`
	Privileged      bool           `json:"privileged"`
	CapAdd          []string       `json:"cap_add"`
	CapDrop         []string       `json:"cap_drop"`
	SecurityOpt     []string       `json:"security_opt"`
	Command         any            `json:"command"`
	Ports           []string       `json:"ports"`
	Volumes         []string       `json:"volumes"`
	Environment     map[string]any `json:"environment"`
	StopGracePeriod string         `json:"stop_grace_period"`
	DependsOn       map[string]struct {
		Condition string `json:"condition"`
	} `json:"depends_on"`
}

func TestComposeRunsRedisAPIAndTwoSandboxedWorkers(t *testing.T) {
	t.Parallel()
	var compose struct {
		Services map[string]composeService `json:"services"`
		Volumes  map[string]any            `json:"volumes"`
	}
	if err := yaml.Unmarshal(readRepoFile(t, "docker", "compose.yaml"), &compose); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	cfg, raw := loadGcfg(t, string(readRepoFile(t, "docker", "pkgfleet.gcfg")))
	svc := func(name string) composeService {
		t.Helper()
		s, ok := compose.Services[name]
		if !ok {
			t.Fatalf("compose.yaml has no service %s", name)
		}
		return s
	}

	redis := svc("redis")
	cmd := fmt.Sprint(redis.Command)
	for _, want := range []string{"--appendonly yes", "--maxmemory-policy noeviction"} {
		if !strings.Contains(cmd, want) {
			t.Errorf("redis runs without %s: %s", want, cmd)
		}
	}
	if !slices.ContainsFunc(redis.Volumes, func(v string) bool { return strings.HasSuffix(v, ":/data") }) {
		t.Errorf("redis keeps its AOF in no volume")
	}
	if host, _, _ := strings.Cut(cfg.Redis.Address, ":"); compose.Services[host].Image == "" {
		t.Errorf("Redis.Address %s names no compose service", cfg.Redis.Address)
	}
	// Every image is built from a Dockerfile here (make images), none is
	// pulled from a registry host.
	for name, s := range compose.Services {
		if strings.Contains(s.Image, "/") || s.Build == nil {
			t.Errorf("%s: image %q, build %+v; want a local image name and a Dockerfile to build it", name, s.Image, s.Build)
			continue
		}
		if _, err := os.Stat(repoPath("docker", s.Build.Context, s.Build.Dockerfile)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}

	workers := 0
	for name, s := range compose.Services {
		if name == "redis" || name == "init" {
			continue
		}
		isWorker := strings.HasPrefix(name, "worker")
		if isWorker {
			workers++
		}
		if s.User != imageUID+":"+imageUID || !s.ReadOnly {
			t.Errorf("%s: user %q read_only %v; want %s:%s and a read-only root", name, s.User, s.ReadOnly, imageUID, imageUID)
		}
		if s.Privileged || len(s.CapAdd) > 0 || !slices.Equal(s.CapDrop, []string{"ALL"}) {
			t.Errorf("%s: privileged %v, cap_add %v, cap_drop %v; want none, none, ALL", name, s.Privileged, s.CapAdd, s.CapDrop)
		}
		if !slices.Contains(s.SecurityOpt, "no-new-privileges:true") {
			t.Errorf("%s: no no-new-privileges", name)
		}
		if isWorker {
			for _, opt := range []string{"seccomp=unconfined", "apparmor=unconfined"} {
				if !slices.Contains(s.SecurityOpt, opt) {
					t.Errorf("%s: security_opt lacks %s, which the sandbox needs", name, opt)
				}
			}
			grace, err := time.ParseDuration(s.StopGracePeriod)
			if err != nil || grace < cfg.Worker.ShutdownGrace {
				t.Errorf("%s: stop_grace_period %q is shorter than Worker.ShutdownGrace %s", name, s.StopGracePeriod, cfg.Worker.ShutdownGrace)
			}
		}
		want := "docker/api.Dockerfile"
		if isWorker {
			want = "docker/worker.Dockerfile"
		}
		if s.Build == nil || filepath.Clean(filepath.Join("docker", s.Build.Context, s.Build.Dockerfile)) != filepath.Clean(filepath.Join("docker", "..", want)) {
			t.Errorf("%s: builds %+v, want %s from the repository root", name, s.Build, want)
		}
		if !slices.Contains(s.Volumes, "./pkgfleet.gcfg:"+configFile+":ro") {
			t.Errorf("%s: %s is not mounted read-only from docker/pkgfleet.gcfg", name, configFile)
		}
		if s.Environment["PKGFLEET_CONFIG"] != configFile {
			t.Errorf("%s: PKGFLEET_CONFIG = %v", name, s.Environment["PKGFLEET_CONFIG"])
		}
		for _, dir := range []string{filepath.Dir(cfg.HTTP.TokensFile), cfg.FileStorage.Location, cfg.Server.DataDir, cfg.Server.TempDir, cfg.Server.SockFileDir} {
			if !slices.ContainsFunc(s.Volumes, func(v string) bool {
				parts := strings.Split(v, ":")
				return parts[0] == dir || (len(parts) > 1 && parts[1] == dir)
			}) {
				t.Errorf("%s: %s is not a volume (the root filesystem is read-only)", name, dir)
			}
		}
		if s.DependsOn["redis"].Condition != "service_healthy" || s.DependsOn["init"].Condition != "service_completed_successfully" {
			t.Errorf("%s: starts before Redis is healthy or the secrets exist: %+v", name, s.DependsOn)
		}
		port := strconv.Itoa(listenPortOf(t, cfg.HTTP.Listen))
		if isWorker {
			port = strconv.Itoa(listenPortOf(t, raw["Worker.MetricsListen"]))
		}
		if len(s.Ports) != 1 || !strings.HasSuffix(s.Ports[0], ":"+port) || !strings.HasPrefix(s.Ports[0], "127.0.0.1:") {
			t.Errorf("%s: ports %v; want container port %s published on 127.0.0.1 only", name, s.Ports, port)
		}
	}
	if workers != 2 {
		t.Errorf("%d workers, want 2", workers)
	}
	if cfg.Git.CredentialKeyFile == "" || filepath.Dir(cfg.Git.CredentialKeyFile) != filepath.Dir(cfg.HTTP.TokensFile) {
		t.Errorf("credential key %q and tokens %q should both live in the secrets volume", cfg.Git.CredentialKeyFile, cfg.HTTP.TokensFile)
	}
	if cfg.Git.AllowUnsandboxedGitBuilds {
		t.Errorf("the compose fleet builds unsandboxed")
	}

	// docker compose validates the file too, where it is installed (it
	// needs no engine for that); the checks above do not depend on it.
	if err := exec.Command("docker", "compose", "version").Run(); err == nil {
		run(t, nil, "docker", "compose", "-f", repoPath("docker", "compose.yaml"), "config", "-q")
	} else if _, err := exec.LookPath("docker-compose"); err == nil {
		run(t, nil, "docker-compose", "-f", repoPath("docker", "compose.yaml"), "config", "-q")
	} else {
		t.Log("docker compose is not installed; compose.yaml checked structurally only")
	}
}

func listenPortOf(t *testing.T, addr string) int {
	t.Helper()
	return int(listenPort(t, addr))
}
