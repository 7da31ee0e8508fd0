"""The dataset-preparation stage: ``cure data prepare --source SOURCE ... --out tasks.jsonl``.

Sources: ``file`` (a CURE-format .json/.jsonl), ``hf`` (any Hugging Face dataset with CURE's fields), ``humaneval``
(converted offline), ``synthetic`` (generated), and the datasets released with CURE by name (:data:`RELEASED`):
``codecontests_train`` (the reference's training set), the paper's five benchmarks ``codecontests``,
``livebench``, ``livecodebench``, ``codeforces``, ``mbpp``, and the evaluation files the reference's data readme
names, ``livebench_reasonflux``, ``livecodebench_reasonflux``, ``mbpp_reasonflux``. A named source downloads its
file from the Hugging Face hub, as the reference's ``data/download_data.py`` does (``Gen-Verse/<Name>``, file
``<split>/<Name>.json``; ``--hub-repo``/``--hub-file`` point elsewhere), so it needs the hub (or a hub cache holding
the file, with ``HF_HUB_OFFLINE=1``), or ``--path`` to a copy of that file. The file is taken exactly as published:
integer ``task_id``s become text, the extra fields stay in the records and are counted in the summary.

Every source yields validated :class:`cure.tasks.Task` records. Bad rows are never dropped silently: by default
the first one aborts with its file, row, field and problem; with ``--skip-bad`` the good rows are written and every
bad row is listed on stderr and counted in the summary (and in ``--report`` when given).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from cure.humaneval import load_humaneval_tasks
from cure.synthetic import generate_tasks
from cure.tasks import BadRow, Task, TaskFormatError, load_hf_tasks, load_tasks

log = logging.getLogger(__name__)
# name -> (hub dataset, file in it): the files the reference's data/download_data.py fetches
# (repo_id=f"Gen-Verse/{dataset}", filename=f"{split}/{dataset}.json"). Its data/readme.md names the
# "-ReasonFlux" variants of LiveBench, LiveCodeBench and MBPP as the evaluation files; they are named sources
# beside the plain ones, at the same pattern's place. Either can be pointed elsewhere (:func:`hub_location`).
RELEASED: dict[str, tuple[str, str]] = {
    "codecontests_train": ("Gen-Verse/CodeContests_train", "train/CodeContests_train.json"),
    "codecontests": ("Gen-Verse/CodeContests", "test/CodeContests.json"),
    "livebench": ("Gen-Verse/LiveBench", "test/LiveBench.json"),
    "livecodebench": ("Gen-Verse/LiveCodeBench", "test/LiveCodeBench.json"),
    "codeforces": ("Gen-Verse/CodeForces", "test/CodeForces.json"),
    "mbpp": ("Gen-Verse/MBPP", "test/MBPP.json"),
    "livebench_reasonflux": ("Gen-Verse/LiveBench-ReasonFlux", "test/LiveBench-ReasonFlux.json"),
    "livecodebench_reasonflux": ("Gen-Verse/LiveCodeBench-ReasonFlux", "test/LiveCodeBench-ReasonFlux.json"),
    "mbpp_reasonflux": ("Gen-Verse/MBPP-ReasonFlux", "test/MBPP-ReasonFlux.json"),
}
# The reference's training set, and the paper's five evaluation benchmarks (NAME=SPEC; the first is the primary
# one, the reference's training-time evaluation set).
TRAIN_DATA = "codecontests_train"
PAPER_BENCHMARKS: tuple[str, ...] = tuple(f"{n}={n}" for n in ("codecontests", "livebench", "livecodebench", "codeforces", "mbpp"))
SOURCES = ("file", "hf", "humaneval", "synthetic", *RELEASED)


def hub_location(name: str, repo: str | None = None, filename: str | None = None) -> tuple[str, str]:
    """The hub dataset and file of released dataset ``name``, either replaced by ``repo`` / ``filename`` (a
    mirror, a fork, a renamed file). A new ``repo`` alone keeps the file's path."""
    if name not in RELEASED:
        raise TaskFormatError(f"unknown released dataset {name!r}; choose one of {', '.join(RELEASED)}")
    default_repo, default_file = RELEASED[name]
    if repo is not None and (repo.count("/") != 1 or not all(repo.split("/"))):
        raise TaskFormatError(f"hub repository {repo!r} for {name}: expected OWNER/NAME")
    if filename is not None and not filename.strip("/"):
        raise TaskFormatError(f"hub file {filename!r} for {name}: expected a path inside the repository")
    return repo or default_repo, filename or default_file


def released_file(name: str, repo: str | None = None, filename: str | None = None) -> Path:
    """The local path of a released CURE dataset file, downloaded from the hub (or found in its cache)."""
    from huggingface_hub import hf_hub_download

    repo, filename = hub_location(name, repo, filename)
    try:
        return Path(hf_hub_download(repo_id=repo, repo_type="dataset", filename=filename))
    except Exception as e:  # network, auth or cache misses: say what to do
        raise TaskFormatError(
            f"could not fetch {filename} of dataset {repo} from the Hugging Face hub ({type(e).__name__}: {e}); "
            f"without a network, download it elsewhere and pass --path FILE (data spec file:FILE)"
        ) from e


def load_released(
    name: str, path: str | None = None, on_error: str = "raise", repo: str | None = None, filename: str | None = None
) -> tuple[list[Task], list[BadRow]]:
    """Tasks of a released CURE dataset (:data:`RELEASED`) from the hub (``repo``/``filename`` override where),
    or from ``path`` (a copy of its file), exactly as published.

    ``source`` is the name; task ids are ``<name>/<id>`` with the file's own ``task_id`` (an integer in the
    reference's conversion, ``data/transformation.ipynb``), or ``<name>/<index>`` in file order without one.
    The files' other fields (``dataset``, ``solutions``, ``difficulty``, ``exe_method``) stay in the records.
    """
    hub_location(name, repo, filename)  # the name and overrides are checked even with a local copy
    file = Path(path) if path else released_file(name, repo, filename)
    return load_tasks(file, on_error=on_error, source=name, id_prefix=name)  # type: ignore[arg-type]


def extra_fields(tasks: list[Task]) -> dict[str, int]:
    """Fields beyond the task format kept in the records, with how many tasks carry each."""
    counts = Counter(k for t in tasks for k in (t.model_extra or {}))
    return dict(sorted(counts.items()))


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
    hub_repo: str | None = None,
    hub_file: str | None = None,
) -> tuple[list[Task], list[BadRow]]:
    """Load tasks from one source; returns (tasks, bad rows). ``hub_repo``/``hub_file`` move a released dataset."""
    bad: list[BadRow] = []
    if (hub_repo or hub_file) and source not in RELEASED:
        raise TaskFormatError(f"--hub-repo/--hub-file apply to the released datasets ({', '.join(RELEASED)}), not to --source {source}")
    if source == "file":
        if not path:
            raise TaskFormatError("--source file needs --path FILE (CURE-format .json or .jsonl)")
        tasks, bad = load_tasks(path, on_error=on_error)  # type: ignore[arg-type]
    elif source == "hf":
        if not path:
            raise TaskFormatError("--source hf needs --path NAME_OR_DIR (hub name, save_to_disk folder or data file)")
        tasks, bad = load_hf_tasks(path, split=split, on_error=on_error)  # type: ignore[arg-type]
    elif source == "humaneval":
        tasks = load_humaneval_tasks()
    elif source == "synthetic":
        tasks = generate_tasks(n, seed=seed, split=split, families=families)
    elif source in RELEASED:
        tasks, bad = load_released(source, path, on_error, hub_repo, hub_file)
    else:
        raise TaskFormatError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    if limit is not None:
        tasks = tasks[:limit]
    return tasks, bad
