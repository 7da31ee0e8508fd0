"""The dataset-preparation stage: ``cure data prepare --source SOURCE ... --out tasks.jsonl``.

Sources: ``file`` (a CURE-format .json/.jsonl), ``hf`` (any Hugging Face dataset with CURE's fields), ``humaneval``
(converted offline), ``synthetic`` (generated), and the datasets released with CURE by name (:data:`RELEASED`):
``codecontests_train`` (the reference's training set) and the paper's five benchmarks ``codecontests``,
``livebench``, ``livecodebench``, ``codeforces``, ``mbpp``. A named source downloads its file from the Hugging Face
hub, as the reference's ``data/download_data.py`` does (``Gen-Verse/<Name>``, file ``<split>/<Name>.json``), so it
needs the hub (or a hub cache holding the file, with ``HF_HUB_OFFLINE=1``), or ``--path`` to a copy of that file.

Every source yields validated :class:`cure.tasks.Task` records. Bad rows are never dropped silently: by default
the first one aborts with its file, row, field and problem; with ``--skip-bad`` the good rows are written and every
bad row is listed on stderr and counted in the summary (and in ``--report`` when given).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from cure.config import CureConfig
from cure.tasks import BadRow, Task, TaskFormatError, load_hf_tasks, load_tasks, unlabeled, write_jsonl

log = logging.getLogger(__name__)
# name -> (hub dataset, file in it): the files data/download_data.py of the reference fetches.
RELEASED: dict[str, tuple[str, str]] = {
    "codecontests_train": ("Gen-Verse/CodeContests_train", "train/CodeContests_train.json"),
    "codecontests": ("Gen-Verse/CodeContests", "test/CodeContests.json"),
    "livebench": ("Gen-Verse/LiveBench", "test/LiveBench.json"),
    "livecodebench": ("Gen-Verse/LiveCodeBench", "test/LiveCodeBench.json"),
    "codeforces": ("Gen-Verse/CodeForces", "test/CodeForces.json"),
    "mbpp": ("Gen-Verse/MBPP", "test/MBPP.json"),
}
# The reference's training set, and the paper's five evaluation benchmarks (NAME=SPEC; the first is the primary
# one, the reference's training-time evaluation set).
TRAIN_DATA = "codecontests_train"
PAPER_BENCHMARKS: tuple[str, ...] = tuple(f"{n}={n}" for n in ("codecontests", "livebench", "livecodebench", "codeforces", "mbpp"))
SOURCES = ("file", "hf", "humaneval", "synthetic", *RELEASED)


def released_file(name: str) -> Path:
    """The local path of a released CURE dataset file, downloaded from the hub (or found in its cache)."""
    from huggingface_hub import hf_hub_download

    repo, filename = RELEASED[name]
    try:
        return Path(hf_hub_download(repo_id=repo, repo_type="dataset", filename=filename))
    except Exception as e:  # network, auth or cache misses: say what to do
        raise TaskFormatError(
            f"could not fetch {filename} of dataset {repo} from the Hugging Face hub ({type(e).__name__}: {e}); "
            f"without a network, download it elsewhere and pass --path FILE (data spec file:FILE)"
        ) from e


def load_released(name: str, path: str | None = None, on_error: str = "raise") -> tuple[list[Task], list[BadRow]]:
    """Tasks of a released CURE dataset (:data:`RELEASED`) from the hub, or from ``path`` (a copy of its file).

    Task ids are ``<name>/<index>`` in file order, and ``source`` is the name.
    """
    if name not in RELEASED:
        raise TaskFormatError(f"unknown released dataset {name!r}; choose one of {', '.join(RELEASED)}")
    file = Path(path) if path else released_file(name)
    tasks, bad = load_tasks(file, on_error=on_error)  # type: ignore[arg-type]
    # The released files carry no ids: load_tasks derived them from the file name; name them after the dataset.
    derived = f"{file.stem}/"
    return [t.model_copy(update={"task_id": name + "/" + t.task_id.removeprefix(derived), "source": name})
            if t.source == file.stem and t.task_id.startswith(derived) else t for t in tasks], bad


def prepare(
    source: str,
    *,
    path: str | None = None,
    split: str = "train",
    n: int = 64,
    seed: int = 0,
    families: list[str] | None = None,
    on_error: str = "raise",
    limit: int | None = None,
) -> tuple[list[Task], list[BadRow]]:
    """Load tasks from one source; returns (tasks, bad rows)."""
    bad: list[BadRow] = []
    if source == "file":
        if not path:
            raise TaskFormatError("--source file needs --path FILE (CURE-format .json or .jsonl)")
        tasks, bad = load_tasks(path, on_error=on_error)  # type: ignore[arg-type]
    elif source == "hf":
        if not path:
            raise TaskFormatError("--source hf needs --path NAME_OR_DIR (hub name, save_to_disk folder or data file)")
        tasks, bad = load_hf_tasks(path, split=split, on_error=on_error)  # type: ignore[arg-type]
    elif source == "humaneval":
        from cure.humaneval import load_humaneval_tasks

        tasks = load_humaneval_tasks()
    elif source == "synthetic":
        from cure.synthetic import generate_tasks

        tasks = generate_tasks(n, seed=seed, split=split, families=families)
    elif source in RELEASED:
        tasks, bad = load_released(source, path, on_error)
    else:
        raise TaskFormatError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    if limit is not None:
        tasks = tasks[:limit]
    return tasks, bad


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", required=True, choices=SOURCES)
    p.add_argument("--path", help="file: CURE .json/.jsonl; hf: hub name, save_to_disk folder or data file; "
                   "a released dataset's name: a local copy of its file instead of the hub")
    p.add_argument("--split", default="train", help="hf: dataset split; synthetic: train or heldout")
    p.add_argument("--n", type=int, default=64, help="synthetic: number of tasks")
    p.add_argument("--seed", type=int, default=0, help="synthetic: generator seed")
    p.add_argument("--families", nargs="*", help="synthetic: restrict to these families")
    p.add_argument("--limit", type=int, help="keep only the first N tasks")
    p.add_argument("--skip-bad", action="store_true", help="write the good rows and report the bad ones, instead of rejecting the file")
    p.add_argument("--report", help="write a JSON summary (counts and bad rows) here")
    p.add_argument("--out", required=True, help="output tasks.jsonl")


def run_cli(args: argparse.Namespace, cfg: CureConfig) -> int:
    from cure.validate import CliError, check_output_path

    if args.limit is not None and args.limit < 0:
        raise CliError(f"--limit {args.limit}: must be 0 or more (the number of tasks to keep)")
    check_output_path(args.out)
    if args.report:
        check_output_path(args.report, "--report", create=False)
    try:
        tasks, bad = prepare(
            args.source,
            path=args.path,
            split=args.split,
            n=args.n,
            seed=args.seed,
            families=args.families,
            on_error="skip" if args.skip_bad else "raise",
            limit=args.limit,
        )
    except TaskFormatError as e:
        hint = "" if args.skip_bad else "; fix the record, or pass --skip-bad to write the good rows and list the bad ones"
        raise CliError(f"{e}{hint}") from e
    for b in bad:
        print(f"bad row: {b}", file=sys.stderr)
    n = write_jsonl(args.out, tasks)
    bare = len(unlabeled(tasks))
    summary = {"source": args.source, "written": n, "bad": len(bad), "bad_rows": [str(b) for b in bad],
               "unlabeled": bare}
    if args.report:
        Path(args.report).write_text(json.dumps(summary, indent=2))
    print(f"wrote {n} tasks to {args.out}" + (f"; {len(bad)} bad rows skipped (listed above)" if bad else "")
          + (f"; {bare} without ground-truth tests (label-free RL only)" if bare else ""))
    return 0
