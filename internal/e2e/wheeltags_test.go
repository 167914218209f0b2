package e2e

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/pkgfleet/pkgfleet/internal/detect"
)

// A wheel with compiled code built on a worker is linux_<arch> and is
// recorded so; with no auditwheel to repair it, the log says so, the
// source's plain simple index never lists it (pip on any Linux would take
// it), and the index of the platform it was built on does, from which pip
// installs and imports it.
func TestCompiledWheelKeepsItsLinuxTagAndIsServedOnlyForItsPlatform(t *testing.T) {
	t.Parallel()
	platform, err := detect.Platform("/etc/os-release")
	if err != nil {
		t.Fatal(err)
	}
	f := setup(t, nil)
	python := f.wkr.Info().Languages["python"].Path
	repo := versionedRepoFrom(t, map[string]string{
		"pyproject.toml": "[build-system]\nrequires = [\"setuptools>=61\"]\nbuild-backend = \"setuptools.build_meta\"\n\n" +
			"[project]\nname = \"cdemo\"\nversion = \"1.0.0\"\n",
		"setup.py":          "from setuptools import Extension, setup\nsetup(packages=[\"cdemo\"], ext_modules=[Extension(\"cdemo._c\", [\"cdemo/_c.c\"])])\n",
		"cdemo/__init__.py": "from cdemo._c import answer\n",
		"cdemo/_c.c": "#include <Python.h>\nstatic PyObject *answer(PyObject *s, PyObject *a) { return PyLong_FromLong(42); }\n" +
			"static PyMethodDef m[] = {{\"answer\", answer, METH_NOARGS, NULL}, {NULL}};\n" +
			"static struct PyModuleDef d = {PyModuleDef_HEAD_INIT, \"_c\", NULL, -1, m};\n" +
			"PyMODINIT_FUNC PyInit__c(void) { return PyModule_Create(&d); }\n",
	})
	f.do("POST", "/api/v1/sources", map[string]string{"name": "wheels", "type": "git-python"}, 201)
	f.do("POST", "/api/v1/sources/wheels/git-builders", map[string]any{"name": "cdemo", "url": "file://" + repo}, 201)
	b := f.mustSucceed(f.run("/api/v1/sources/wheels/git-builders/cdemo/run", nil))
	log := f.log(b.ID)
	wheel, _ := artifactKind(b, "wheel")
	if len(wheel.Tags) != 1 || !strings.HasSuffix(wheel.Tags[0], "-linux_x86_64") || wheel.Platform != platform ||
		strings.Count(log, "no auditwheel") != 1 {
		t.Fatalf("wheel %+v, want one linux_x86_64 tag for %s and one line on auditwheel\n%s", wheel, platform, log)
	}

	if page := string(f.do("GET", "/pypi/wheels/simple/cdemo/", nil, 200)); strings.Contains(page, ".whl") || !strings.Contains(page, "cdemo-1.0.0.tar.gz") {
		t.Fatalf("the plain index lists the linux wheel, or not the sdist:\n%s", page)
	}
	index := f.api.URL + "/pypi/wheels/__linux__/" + platform + "/simple/"
	if page := string(f.do("GET", "/pypi/wheels/__linux__/"+platform+"/simple/cdemo/", nil, 200)); !strings.Contains(page, wheel.File+"#sha256="+wheel.SHA256) {
		t.Fatalf("the %s index lacks the wheel:\n%s", platform, page)
	}
	if page := string(f.do("GET", "/pypi/wheels/__linux__/other-1/simple/cdemo/", nil, 200)); strings.Contains(page, ".whl") {
		t.Fatalf("another platform's index lists the wheel:\n%s", page)
	}
	target := t.TempDir()
	pip := exec.Command(python, "-m", "pip", "install", "--no-deps", "--only-binary=:all:", "--no-cache-dir", "--disable-pip-version-check",
		"--target", target, "--index-url", index, "cdemo")
	if out, err := pip.CombinedOutput(); err != nil {
		t.Fatalf("pip install from %s: %v\n%s", index, err, out)
	}
	imp := exec.Command(python, "-c", "import cdemo; print(cdemo.answer())")
	imp.Env = append(os.Environ(), "PYTHONPATH="+target)
	out, err := imp.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "42" {
		t.Fatalf("import of the installed wheel: %v\n%s", err, out)
	}
}
