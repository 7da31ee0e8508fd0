"""The wheel is the product: built from the checkout, installed into a fresh environment, every command works from a
folder outside the checkout.

The wheel is built offline (``pip wheel --no-deps --no-build-isolation``, with this environment's setuptools) from a
copy of what the images are built from (pyproject.toml, setup.py, README.md, src/, pipelines/, components/), and
installed with ``--no-deps`` into a new virtual environment whose dependencies come from this one (a ``.pth`` line
naming this environment's site-packages: a path added that way is searched, but its own ``.pth`` files, among them
the editable install of the checkout, are not run). The commands then run from a temporary folder: ``cure compile``
(both pipelines) and ``cure run --preset smoke`` (one round of the offline tiny model through kfp.local, with the
gVisor sandbox; marked slow). Building and installing the wheel takes about 5 s.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "setup.py", "README.md", "src", "pipelines", "components")
PACKAGES = ("cure", "cure_cli", "cure_pipelines", "cure_components")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel installed; returns its ``bin`` folder."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in SOURCES:
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy2)(ROOT / name, src / name, **(
            {"ignore": ignore} if (ROOT / name).is_dir() else {}))
    dist = base / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(dist), str(src)], check=True, cwd=base)
    (wheel,) = dist.glob("cure-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True)
    return venv / "bin"


def _run(bin_dir: Path, args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_wheel_holds_every_package_and_the_data_the_commands_need(installed: Path, tmp_path: Path) -> None:
    code = ("import importlib, json\n"
            f"print(json.dumps({{m: importlib.import_module(m).__file__ for m in {list(PACKAGES)!r}}}))")
    proc = _run(installed, [str(installed / "python"), "-c", code], tmp_path, 120)
    assert proc.returncode == 0, proc.stderr
    venv = installed.parent.resolve()
    for name, file in json.loads(proc.stdout).items():
        assert Path(file).resolve().is_relative_to(venv), f"{name} imported from {file}, not from the installed wheel"
    files = _run(installed, [str(installed / "python"), "-c", "import cure, pathlib; p = pathlib.Path(cure.__file__).parent; "
                             "print('\\n'.join(str(f.relative_to(p)) for f in p.rglob('*') if f.is_file()))"],
                 tmp_path, 60).stdout.split()
    for needed in ("presets/demo.yaml", "presets/smoke.yaml", "presets/cpu_tiny.yaml", "presets/long_cot.yaml",
                   "templates/coder_user.j2", "models/tiny/model.safetensors"):
        assert needed in files, f"the wheel has no cure/{needed}"


def test_compile_from_outside_the_checkout(installed: Path, tmp_path: Path) -> None:
    proc = _run(installed, ["cure", "compile", "--out", "out"], tmp_path, 600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name, pipeline in (("cure-training.yaml", "cure-training"), ("cure-evaluation.yaml", "cure-evaluation")):
        spec = next(yaml.safe_load_all((tmp_path / "out" / name).read_text()))
        assert spec["pipelineInfo"]["name"] == pipeline
        assert spec["deploymentSpec"]["executors"], f"{name}: no executors"
    train = next(yaml.safe_load_all((tmp_path / "out" / "cure-training.yaml").read_text()))
    assert "total_rounds" in train["root"]["inputDefinitions"]["parameters"]


@pytest.mark.slow  # a kfp.local run of one round: 1.3 min on 2 busy cores
def test_smoke_run_from_outside_the_checkout(installed: Path, tmp_path: Path) -> None:
    proc = _run(installed, ["cure", "run", "--preset", "smoke", "--out", "run"], tmp_path, 1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    run = tmp_path / "run"
    history = json.loads((run / "history.json").read_text())
    assert [h["round"] for h in history] == [0, 1]
    assert all(0.0 <= h["code_acc"] <= 1.0 for h in history)
    rounds = json.loads((run / "rounds.json").read_text())
    assert [r["round"] for r in rounds] == [1]
    assert (run / "report" / "report.html").is_file()
