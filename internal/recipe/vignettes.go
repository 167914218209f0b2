package recipe

import (
	_ "embed"
	"fmt"
	"path/filepath"

	"github.com/pkgfleet/pkgfleet/internal/sandbox"
)

// depsScript is the install step the R scripts run in the sandbox share
// (pkgfleet_install_deps: vignettes.R, binary.R, check.R); each script
// is run after it.
//
//go:embed deps.R
var depsScript string

// vignettesR installs what vignettes need, then runs R CMD build.
//
//go:embed vignettes.R
var vignettesR string

var vignetteScript = depsScript + "\n" + vignettesR

// rCommand is how an R build of the package in dir runs: R CMD build
// without vignettes (the default, as PPM builds); with build_vignettes,
// R CMD build with them, after installing Depends, Imports, LinkingTo,
// Suggests and the VignetteBuilder from the repository behind the door
// into a library of the build's own; without a door, with whatever the
// worker's R has.
func (r *R) rCommand(in Input, dir string, env []string) (args, outEnv []string, door sandbox.Door) {
	switch {
	case !in.BuildVignettes:
		return []string{r.Tool.Command(), "CMD", "build", "--no-build-vignettes", "--no-manual", dir}, env, nil
	case in.Door == nil || in.Network:
		fmt.Fprintln(in.Log, "==> building vignettes with the R packages installed on the worker (no Git.RRepositoryURL)")
		return []string{r.Tool.Command(), "CMD", "build", "--no-manual", dir}, env, nil
	}
	fmt.Fprintf(in.Log, "==> building vignettes; what they need comes from %s through the door\n", in.IndexURL)
	env = append(env, proxyEnv()...)
	env = append(env, "PKGFLEET_R_REPOSITORY="+in.IndexURL)
	return []string{filepath.Join(r.Tool.Path, "bin", "Rscript"), "-e", vignetteScript, dir}, env, in.Door
}
