"""``cure run``: the training pipeline on this machine, through ``kfp.local`` (the offline main job).

The same pipeline that runs in a cluster runs here with ``kfp.local.SubprocessRunner(use_venv=False)``: each
component is a subprocess of this Python environment (container images, GPUs and resource requests are ignored
locally). The ``demo`` preset (``cure/presets/demo.yaml``) uses the offline tiny model (``tiny:0``, built and cached on first use), synthetic
tasks, the hf engine and the gVisor sandbox. At the end the run folder holds ``history.json`` (one object per
evaluated round), ``rounds.json`` (one training record per round), the report (``report/report.md``,
``report/report.html``, plots), the experiment's store (``store/``) and KFP's outputs (``kfp/``). ``--resume``
continues the experiment kept there, exactly as a new run in a cluster continues from the store.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cure.config import CureConfig, load_config, read_preset

log = logging.getLogger("cure.run")

# The fields of a run preset's ``run:`` section (cure/presets/NAME.yaml): rounds and intervals (compile-time options of
# the local pipeline) and the pipeline inputs that are not config fields.
RUN_FIELDS = ("rounds", "eval_every", "save_every", "segment", "base_model", "train_data", "eval_benchmarks",
              "noise_seeds", "eval_seed")


def run_presets() -> list[str]:
    """The presets ``cure run`` can start: the package's preset files with a ``run:`` section (demo, smoke, ...)."""
    from importlib import resources

    folder = resources.files("cure").joinpath("presets")
    names = sorted(f.name[: -len(".yaml")] for f in folder.iterdir() if f.name.endswith(".yaml"))
    return [n for n in names if "run" in read_preset(n)]


def pipeline_arguments(cfg: CureConfig, run: dict[str, Any], store_uri: str, experiment: str) -> dict[str, Any]:
    """Pipeline inputs: every config field as ``section__field``, plus the run fields."""
    from .params import config_parameters, list_text

    args: dict[str, Any] = {}
    for name, section, field, _, _, _ in config_parameters(cfg):
        value = getattr(getattr(cfg, section), field)
        if isinstance(value, tuple):
            value = list(value)
        if isinstance(value, list):
            value = [list(x) if isinstance(x, tuple) else x for x in value]
        args[name] = "" if value is None else (list_text(value) if isinstance(value, list) else value)
    args["pipeline__store_uri"] = store_uri
    args["pipeline__experiment"] = experiment
    args.update(run)
    return args


def preset_and_config(preset: str, cfg_file: str | None, overrides: list[str] | None,
                      runner: str) -> tuple[dict[str, Any], CureConfig]:
    """A preset's ``run:`` settings (a copy) and the run's config: the config file, the preset's sections over it,
    the container runner's overrides, then the user's, which win."""
    from cure.container_runner import DOCKER_OVERRIDES
    from cure.validate import CliError

    known = run_presets()
    if preset not in known:
        raise CliError(f"unknown preset {preset!r}; choose one of {', '.join(known)}")
    p = dict(read_preset(preset)["run"])
    if sorted(p) != sorted(RUN_FIELDS):
        raise CliError(f"preset {preset!r}: its run section must set exactly {', '.join(RUN_FIELDS)} (it sets {', '.join(p)})")
    runner_set = DOCKER_OVERRIDES if runner == "docker" else []
    return p, load_config(cfg_file, runner_set + list(overrides or []), preset=preset)


# What a run creates in its folder: all that --overwrite deletes (anything else there is left alone).
RUN_FILES = ("store", "kfp", "workspace", "report", "sandbox", "history.json", "rounds.json", "run.json",
             "config.json", "run.log")
LOCK_NAME = ".cure-run.lock"


def remove_run_files(run_dir: Path, names: tuple[str, ...]) -> None:
    """Delete what a run wrote at the top of ``run_dir`` (``names``: files, folders or links), nothing else."""
    for name in names:
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def check_run_options(rounds: int | None, eval_every: int | None, segment: int | None) -> None:
    """Every numeric option of ``cure run``, before anything is read or written."""
    from cure.validate import CliError

    for flag, value, low in (("--rounds", rounds, 0), ("--eval-every", eval_every, 1), ("--segment", segment, 1)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise CliError(f"{flag} {value}: must be an integer >= {low}")


def run_folder_state(run_dir: Path) -> dict[str, Any] | None:
    """What ``run_dir`` holds: None when it is missing or empty (a fresh start may use it), the run's ``run.json``
    when it is a run folder; refuses anything else (a file, a folder of other things, a damaged ``run.json``)."""
    from cure.validate import CliError

    if not run_dir.exists():
        return None
    if not run_dir.is_dir():
        raise CliError(f"--out {run_dir}: exists and is not a folder")
    entries = [p.name for p in run_dir.iterdir() if p.name != LOCK_NAME]
    if not any(_holds_a_file(run_dir / name) for name in entries):  # empty, or empty folders only: nothing to lose
        return None
    state_file = run_dir / "run.json"
    if not state_file.is_file():
        shown = ", ".join(sorted(entries)[:5]) + (", ..." if len(entries) > 5 else "")
        raise CliError(f"--out {run_dir}: not empty and not a cure run folder (no run.json; it holds {shown}); "
                       "nothing was changed: choose a new or empty folder")
    try:
        state = json.loads(state_file.read_text())
        if not isinstance(state, dict) or not isinstance(state.get("experiment"), str):
            raise ValueError("no experiment name")
    except (ValueError, UnicodeDecodeError) as e:
        raise CliError(f"--out {run_dir}: run.json is damaged ({e}); nothing was changed") from e
    return state


def _holds_a_file(path: Path) -> bool:
    if path.is_symlink() or not path.is_dir():
        return True
    return any(True for p in path.rglob("*") if p.is_symlink() or not p.is_dir())


class RunLock:
    """One ``cure run`` per run folder: an exclusive ``flock`` on ``<run folder>/.cure-run.lock``, released by the
    kernel when the process ends however it ends (no stale lock after a kill)."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / LOCK_NAME
        self.file: Any = None

    def __enter__(self) -> RunLock:
        import fcntl
        import os

        from cure.validate import CliError

        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise CliError(f"--out {self.path.parent}: in use by another cure run ({holder}); wait for it to end, "
                           "or use another --out") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        self.file = f
        return self

    def __exit__(self, *exc: object) -> None:
        if self.file is not None:
            self.file.close()  # releases the flock; the file stays (removing it would race a waiting run)


@contextlib.contextmanager
def run_environment(**env: str) -> Iterator[Path]:
    """The environment of a local run's components: ``env``, and ``TMPDIR`` in a fresh temporary folder that is
    removed at the end (kfp.local's lightweight components each ``mktemp -d`` a folder they never remove)."""
    import os
    import tempfile

    saved = {k: os.environ.get(k) for k in ("TMPDIR", *env)}
    tmp_root = tempfile.mkdtemp(prefix="cure-run-")
    os.environ.update({"TMPDIR": tmp_root, **env})
    try:
        yield Path(tmp_root)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(tmp_root, ignore_errors=True)


def run_local(preset: str, out_dir: str | Path, cfg_file: str | None = None, overrides: list[str] | None = None,
              rounds: int | None = None, eval_every: int | None = None, base_model: str | None = None,
              resume: bool = False, segment: int | None = None, runner: str = "subprocess",
              overwrite: bool = False) -> dict[str, Any]:
    """Run the training pipeline locally, as a chain of ``kfp.local`` runs of ``segment`` rounds each (a run
    continues the experiment kept in ``out_dir/store``, as in a cluster).

    ``resume``: continue the experiment in ``out_dir``; ``rounds`` more rounds past its latest checkpoint, or
    without ``rounds`` up to the total the experiment was started with; without ``base_model``, the experiment's
    own (recorded in ``run.json``). Otherwise ``out_dir`` must be new or empty, or, with ``overwrite``, a run folder
    whose experiment is started afresh. Every option is checked before the folder is touched, and one run at a time
    holds the folder (:class:`RunLock`).
    ``runner``: ``subprocess`` (components as processes of this environment) or ``docker`` (each component in its
    image on a local engine, :mod:`cure.container_runner`).
    Returns {"history": [...], "rounds": [...], "run_dir": Path, "seconds": float, "runs": int}.
    """
    from cure.validate import CliError

    check_run_options(rounds, eval_every, segment)
    if resume and overwrite:
        raise CliError("--resume and --overwrite exclude each other: continue the experiment, or start it afresh")
    p, cfg = preset_and_config(preset, cfg_file, overrides, runner)
    if base_model:
        p["base_model"] = base_model
    run_dir = Path(out_dir).resolve()
    experiment = f"local-{preset}"
    run_folder_state(run_dir)  # refuses a folder of other things before anything is written
    with RunLock(run_dir):
        state = run_folder_state(run_dir)  # again under the lock: a run that just ended may have changed it
        return _run_locked(preset, p, cfg, run_dir, experiment, state, rounds, eval_every, resume, segment, runner,
                           overwrite, base_model)


def _check_experiment_folder(run_dir: Path, experiment: str, state: dict[str, Any] | None, resume: bool,
                             overwrite: bool) -> None:
    from cure.validate import CliError

    if resume:
        if state is None or not (run_dir / "store").is_dir():
            raise CliError(f"--resume: {run_dir} holds no experiment (no run.json and store/); start it without --resume")
        if state["experiment"] != experiment:
            raise CliError(f"--resume: {run_dir} holds experiment {state['experiment']!r}, not {experiment!r} "
                           f"(use --preset {state.get('preset', '?')})")
    elif state is not None and not overwrite:
        raise CliError(f"--out {run_dir} holds experiment {state['experiment']!r} (total {state.get('total_rounds', '?')} "
                       "rounds); nothing was changed: continue it with --resume, or start it afresh with --overwrite")


def _run_locked(preset: str, p: dict[str, Any], cfg: CureConfig, run_dir: Path, experiment: str,
                state: dict[str, Any] | None, rounds: int | None, eval_every: int | None, resume: bool,
                segment: int | None, runner: str, overwrite: bool, base_model: str | None) -> dict[str, Any]:
    import uuid

    from kfp import local

    from cure.console import RunConsole
    from cure.container_runner import make_runner
    from cure.experiment import break_lease, latest_round, read_history, read_rounds
    from cure.report import format_round_table
    from cure.segment import write_experiment_report
    from cure.store import open_store

    _check_experiment_folder(run_dir, experiment, state, resume, overwrite)
    # compile-time options leave p, which keeps only pipeline inputs
    preset_rounds, preset_eval_every, save_every = p.pop("rounds"), p.pop("eval_every"), p.pop("save_every")
    preset_segment = p.pop("segment")
    segment = preset_segment if segment is None else segment
    eval_every = preset_eval_every if eval_every is None else eval_every
    store_uri = f"file://{run_dir / 'store'}"
    state_file = run_dir / "run.json"
    if resume:
        store = open_store(store_uri)
        # The experiment's records are checked here, once, before any task (a damaged one is one clear error).
        _, done = latest_round(store, experiment)
        read_history(store, experiment), read_rounds(store, experiment)
        assert state is not None
        total = done + rounds if rounds is not None else int(state.get("total_rounds", done))
        if not base_model and state.get("base_model"):  # the experiment's own (KL reference "initial", tiny cache)
            p["base_model"] = state["base_model"]
        log.info("resuming experiment %s at round %d of %d", experiment, done, total)
    else:
        if overwrite:
            remove_run_files(run_dir, RUN_FILES)
        run_dir.mkdir(parents=True, exist_ok=True)
        total = preset_rounds if rounds is None else rounds
    state_file.write_text(json.dumps({"preset": preset, "experiment": experiment, "total_rounds": total,
                                      "base_model": p["base_model"]}))
    store = open_store(store_uri)
    break_lease(store, experiment)  # this process holds the folder: a lease left in its store is a dead run's
    from .training import ClusterOptions, build_training_pipeline

    pipeline = build_training_pipeline(
        total, eval_every, save_every, segment=segment, cluster=ClusterOptions(gpus=0, store_secret=""),
        base_model=p["base_model"], train_data=p["train_data"], eval_benchmarks=tuple(p["eval_benchmarks"]), cfg=cfg,
        name=f"cure-{preset}",
    )
    (run_dir / "config.json").write_text(json.dumps(cfg.model_dump(mode="json"), indent=2))
    arguments = pipeline_arguments(cfg, {**p, "total_rounds": total}, store_uri, experiment)
    arguments["pipeline__eval_every"], arguments["pipeline__save_every"] = eval_every, save_every
    t0 = time.monotonic()
    runs = 0
    with run_environment(CURE_RUN_ID=f"local-{uuid.uuid4().hex}"), \
            RunConsole(run_dir, total, title=f"cure run --preset {preset}"):
        while True:  # at least one run: once the total is reached a run does nothing and succeeds, as in a cluster
            _, done = latest_round(store, experiment)
            if done >= total and runs:
                break
            workspace = run_dir / "workspace"  # one run's workspace, like the PVC of a run in a cluster
            if workspace.exists():
                shutil.rmtree(workspace)
            workspace.mkdir()
            local.init(runner=make_runner(runner, run_dir, p["base_model"]), pipeline_root=str(run_dir / "kfp"),
                       workspace_root=str(workspace), raise_on_error=True)
            log.info("run %d: rounds %d..%d of %d (evaluate every %d) -> %s", runs + 1, done + 1,
                     min(done + segment, total), total, eval_every, run_dir)
            pipeline(**arguments)
            runs += 1
            shutil.rmtree(workspace, ignore_errors=True)
            if done < total and latest_round(store, experiment)[1] <= done:
                raise RuntimeError(f"run {runs} finished without promoting a checkpoint after round {done} in {store_uri}")
    seconds = time.monotonic() - t0
    history, round_records = read_history(store, experiment), read_rounds(store, experiment)
    if not history:
        raise RuntimeError(f"the pipeline finished but wrote no history under {store_uri}/{experiment}/")
    (run_dir / "history.json").write_text(json.dumps(history, indent=2))
    (run_dir / "rounds.json").write_text(json.dumps(round_records, indent=2))
    write_experiment_report(store, experiment, str(run_dir / "report"), f"local {preset}")
    print(format_round_table(history))
    print(f"\nfinished {runs} run(s) in {seconds / 60:.1f} min; report: {run_dir / 'report' / 'report.html'}; "
          f"history: {run_dir / 'history.json'}; log: {run_dir / 'run.log'}")
    return {"history": history, "rounds": round_records, "run_dir": run_dir, "seconds": seconds, "runs": runs}
