package recipe

import (
	"context"
	_ "embed"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/pkgfleet/pkgfleet/internal/pkgmeta"
	"github.com/pkgfleet/pkgfleet/internal/registry"
	"github.com/pkgfleet/pkgfleet/internal/sandbox"
)

// binaryScript installs the package's dependencies, then runs
// R CMD INSTALL --build.
//
//go:embed binary.R
var binaryR string

var binaryScript = depsScript + "\n" + binaryR

// binary makes the R binary package of the source tarball in in.Dest: a
// second sandboxed run, with the same limits and door as R CMD build, of
// R CMD INSTALL --build, its Depends, Imports and LinkingTo installed
// from the repository behind the door into in.Library first (without a
// door, the worker's R must have them). The binary is R's own tarball,
// named and described as R names it, for the worker's platform and R x.y.
func (r *R) binary(ctx context.Context, in Input, pkg, version, tarball string, log io.Writer) (registry.Artifact, sandbox.Result, error) {
	if r.Tool.Platform == "" {
		return registry.Artifact{}, sandbox.Result{}, &Failure{Reason: "binary: the worker's /etc/os-release names no platform, so an R binary built here could not say what it is for"}
	}
	fmt.Fprintf(log, "==> R CMD INSTALL --build %s (R %s, %s)\n", filepath.Base(tarball), r.Tool.Minor(), r.Tool.Platform)
	env := baseEnv(in.Dest, in.SourceDate)
	var door sandbox.Door
	switch {
	case in.Door != nil && !in.Network:
		fmt.Fprintf(log, "==> Depends, Imports and LinkingTo come from %s through the door\n", in.IndexURL)
		env = append(env, proxyEnv()...)
		env = append(env, "PKGFLEET_R_REPOSITORY="+in.IndexURL)
		door = in.Door
	default:
		fmt.Fprintln(log, "==> Depends, Imports and LinkingTo: those installed on the worker (no Git.RRepositoryURL)")
	}
	// The library is exposed as the run's Source: the checkout is not
	// needed any more, and what is installed there stays for the build's
	// later runs. Without one (a recipe called on its own), binary.R
	// makes one in the run's TMPDIR.
	source := in.Library
	if source == "" {
		source = in.Checkout
	}
	why := &reasonWriter{}
	res, err := r.Runner.Run(ctx, sandbox.Spec{
		Args:    []string{filepath.Join(r.Tool.Path, "bin", "Rscript"), "-e", binaryScript, tarball, in.Library},
		Env:     env,
		Door:    door,
		Dir:     in.Dest,
		Source:  source,
		Dest:    in.Dest,
		Network: in.Network,
		Output:  io.MultiWriter(log, why),
		DeadMan: in.DeadMan,
	})
	if err != nil {
		return registry.Artifact{}, res, err
	}
	if !res.Success() {
		return registry.Artifact{}, res, &Failure{Reason: why.rReasonOf("R CMD INSTALL --build", res, r.Tool.Path), Result: res}
	}
	found, _ := filepath.Glob(filepath.Join(in.Dest, pkg+"_"+version+"_R_*.tar.gz"))
	if len(found) != 1 {
		return registry.Artifact{}, res, &Failure{Reason: fmt.Sprintf("R CMD INSTALL --build made %d binary tarballs of %s %s, not one", len(found), pkg, version), Result: res}
	}
	f, err := os.Open(found[0])
	if err != nil {
		return registry.Artifact{}, res, err
	}
	defer f.Close()
	desc, err := pkgmeta.ReadTarDESCRIPTION(f, pkg)
	if err != nil || desc["Version"] != version || !strings.HasPrefix(desc["Built"], "R "+r.Tool.Minor()+".") {
		return registry.Artifact{}, res, &Failure{Reason: fmt.Sprintf("%s: its DESCRIPTION does not say Version %s, Built by R %s", filepath.Base(found[0]), version, r.Tool.Minor()), Result: res}
	}
	fmt.Fprintf(log, "==> binary %s (Built: %s)\n", filepath.Base(found[0]), desc["Built"])
	return registry.Artifact{File: filepath.Base(found[0]), Kind: "binary", Platform: r.Tool.Platform, RVersion: r.Tool.Minor()}, res, nil
}
