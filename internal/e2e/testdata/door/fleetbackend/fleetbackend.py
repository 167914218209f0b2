"""A tiny PEP 517 backend for pure-Python single-module packages.

It packs the top-level *.py files of a project into an sdist and a wheel,
with timestamps from SOURCE_DATE_EPOCH. Extra build requirements come
from [tool.fleetbackend] requires, returned by get_requires_for_build_*
(the dynamic requirements PEP 517 allows); a module named in
[tool.fleetbackend] check-import must be importable while the wheel is
built, which proves those requirements were installed.
"""

import base64
import hashlib
import importlib
import io
import os
import tarfile
import time
import tomllib
import zipfile


def _project():
    with open("pyproject.toml", "rb") as f:
        data = tomllib.load(f)
    return data["project"], data.get("tool", {}).get("fleetbackend", {})


def _dist(name):
    return name.replace("-", "_").replace(".", "_").lower()


def _epoch():
    return int(os.environ.get("SOURCE_DATE_EPOCH", "315532800"))


def _metadata(project):
    lines = ["Metadata-Version: 2.1", "Name: " + project["name"], "Version: " + project["version"]]
    if "description" in project:
        lines.append("Summary: " + project["description"])
    if "requires-python" in project:
        lines.append("Requires-Python: " + project["requires-python"])
    return "\n".join(lines) + "\n"


def _modules():
    return sorted(f for f in os.listdir(".") if f.endswith(".py"))


def get_requires_for_build_wheel(config_settings=None):
    return list(_project()[1].get("requires", []))


def get_requires_for_build_sdist(config_settings=None):
    return list(_project()[1].get("requires", []))


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    project, tool = _project()
    if "check-import" in tool:
        importlib.import_module(tool["check-import"])
    dist, version = _dist(project["name"]), project["version"]
    info = "%s-%s.dist-info" % (dist, version)
    files = [(m, open(m, "rb").read()) for m in _modules()]
    files.append((info + "/METADATA", _metadata(project).encode()))
    files.append((info + "/WHEEL", b"Wheel-Version: 1.0\nGenerator: fleetbackend\nRoot-Is-Purelib: true\nTag: py3-none-any\n"))
    record = ""
    for name, data in files:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record += "%s,sha256=%s,%d\n" % (name, digest, len(data))
    files.append((info + "/RECORD", (record + info + "/RECORD,,\n").encode()))
    wheel = "%s-%s-py3-none-any.whl" % (dist, version)
    stamp = time.gmtime(_epoch())[:6]
    with zipfile.ZipFile(os.path.join(wheel_directory, wheel), "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files:
            zi = zipfile.ZipInfo(name, stamp)
            zi.external_attr = 0o644 << 16
            z.writestr(zi, data, zipfile.ZIP_DEFLATED)
    return wheel


def build_sdist(sdist_directory, config_settings=None):
    project, _ = _project()
    base = "%s-%s" % (_dist(project["name"]), project["version"])
    files = [(m, open(m, "rb").read()) for m in _modules() + ["pyproject.toml"]]
    files.append(("PKG-INFO", _metadata(project).encode()))
    path = os.path.join(sdist_directory, base + ".tar.gz")
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as t:
        for name, data in sorted(files):
            ti = tarfile.TarInfo(base + "/" + name)
            ti.size, ti.mtime, ti.mode = len(data), _epoch(), 0o644
            t.addfile(ti, io.BytesIO(data))
    return base + ".tar.gz"
