"""The sandbox image offers programs what the local sandbox offers: numpy, pandas and scipy (pyproject's ``sandbox``
extra), pinned like every other image dependency, and nothing else beyond cure's own code (checked statically)."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from cure.sandbox import gvisor

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "images" / "sandbox" / "Dockerfile"


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _pins() -> dict[str, str]:
    out = {}
    for line in (ROOT / "images" / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            out[canonicalize_name(name)] = version
    return out


def test_the_sandbox_extra_names_the_program_packages_as_the_dependencies_do():
    extra = [Requirement(r) for r in _pyproject()["optional-dependencies"]["sandbox"]]
    assert sorted(canonicalize_name(r.name) for r in extra) == sorted(gvisor.PROGRAM_PACKAGES)
    deps = {canonicalize_name(Requirement(r).name): Requirement(r) for r in _pyproject()["dependencies"]}
    for r in extra:  # the host's environment (mounted into the local sandbox) has the same versions
        assert str(deps[canonicalize_name(r.name)].specifier) == str(r.specifier), r


def test_the_sandbox_image_installs_exactly_the_extra_pinned_by_the_constraints():
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    installs = [ln for ln in text.splitlines() if "pip install" in ln and not ln.lstrip().startswith("#")]
    wanted = {str(Requirement(r)) for r in _pyproject()["optional-dependencies"]["sandbox"]}
    third_party = [ln for ln in installs if "--no-deps" not in ln]
    assert len(third_party) == 1 and "-c /tmp/constraints.txt" in third_party[0], installs
    assert set(re.findall(r'"([^"]+)"', third_party[0])) == wanted
    assert all("--no-deps /src" in ln for ln in installs if ln not in third_party)  # cure itself: no dependencies
    pins = _pins()
    for r in map(Requirement, wanted):
        assert canonicalize_name(r.name) in pins, f"images/constraints.txt does not pin {r.name}"
        assert r.specifier.contains(pins[canonicalize_name(r.name)]), (r, pins[canonicalize_name(r.name)])
    assert "import cure.sandbox.worker, cure.sandbox.shard, numpy, pandas, scipy" in text  # checked at build time
