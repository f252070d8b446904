"""Run a study: a set of training runs, each over seeds, and their leaderboard beside published figures.

    python -m deeplense_tf.study --list                 # the built-in studies
    python -m deeplense_tf.study cpu --out studies      # run (or continue) one, then write its leaderboard
    python -m deeplense_tf.study my_study.json --only regression-resnet18

A study is a JSON file (the format of ``config.json``, read by the standard library: no YAML
dependency, and a hand-made typo is refused by name, as in a config):

    {"description": "...",
     "defaults": {"data": "sim:model_ii:noise=published", "samples": 3000, "epochs": 15},
     "seeds": [0, 1],
     "runs": [{"name": "regression-resnet18", "task": "regression", "arch": "resnet18"},
              {"name": "classification-resnet18", "task": "classification", "arch": "resnet18",
               "seeds": [0]}]}

Every setting is a train flag's name (``deeplense_tf.cli.FLAG_FIELDS``). Each run and seed is an
ordinary run directory under ``OUT/<study>/<run>/seed<k>/``. Started again, the study skips
finished runs, resumes a half-finished one from its last checkpoint and starts over one killed
before its first checkpoint; a run whose settings changed since it started is refused. Then it
writes ``leaderboard.csv``, ``leaderboard.md`` (mean and spread over seeds, training time,
images/s, the published figures of the same task and data set: ``evaluation/references.py``)
and ``leaderboard.png`` (the metric against training time).

A study split over machines or sessions whose run folders did not all travel is put back together
by ``--merge`` (each job's ``leaderboard.csv``; a run finished here wins):

    python -m deeplense_tf.study cpu --out studies --leaderboard --merge node2/cpu/leaderboard.csv
"""

from __future__ import annotations

import argparse
import difflib
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from deeplense_tf import runs
from deeplense_tf.cli import FLAG_FIELDS, command_parser, config_from_options, prepare_environment, run_cli
from deeplense_tf.errors import ConfigError, UserError

BUILTIN = Path(__file__).with_name("studies")
STUDY_KEYS = {"description", "defaults", "seeds", "runs"}
SETTINGS = {name for names in FLAG_FIELDS.values() for name in names} - {"seed", "out", "resume"}
SETTINGS_FILE = "settings.json"


@dataclass(frozen=True)
class StudyRun:
    name: str
    settings: dict  # train settings (train flags' names), defaults applied
    seeds: tuple[int, ...]


@dataclass(frozen=True)
class Study:
    name: str
    description: str
    runs: tuple[StudyRun, ...]


def builtin_studies() -> dict[str, Path]:
    return {p.stem: p for p in sorted(BUILTIN.glob("*.json"))}


def load_study(spec: str | Path) -> Study:
    """A built-in study by name, or a study file; every key and setting checked by name."""
    path = builtin_studies().get(str(spec)) or Path(spec)
    if not path.is_file():
        close = difflib.get_close_matches(str(spec), builtin_studies(), n=3)
        raise UserError(f"no study {str(spec)!r}: neither a built-in study ({', '.join(builtin_studies())}"
                        f"{'; closest: ' + ', '.join(close) if close else ''}) nor a file")
    try:
        raw = json.loads(path.read_text())
    except ValueError as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from None
    _check_keys(raw, STUDY_KEYS, path, "study")
    defaults = raw.get("defaults", {})
    _check_keys(defaults, SETTINGS, path, "defaults")
    seeds = tuple(int(s) for s in raw.get("seeds", [0]))
    study_runs, names = [], set()
    for entry in raw.get("runs", []):
        name = entry.get("name")
        if not name or name in names or "/" in str(name):
            raise ConfigError(f"{path}: every run needs a unique name without '/'. Received: name={name!r}")
        names.add(name)
        settings = {k: v for k, v in entry.items() if k not in ("name", "seeds")}
        _check_keys(settings, SETTINGS, path, f"run {name}")
        study_runs.append(StudyRun(name, {**defaults, **settings}, tuple(int(s) for s in entry.get("seeds", seeds))))
    if not study_runs:
        raise ConfigError(f"{path}: the study names no runs (\"runs\": [...])")
    return Study(path.stem, raw.get("description", ""), tuple(study_runs))


def _check_keys(raw: dict, known: set, path: Path, where: str) -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        hints = [f"{u} (closest: {', '.join(difflib.get_close_matches(u, known, n=2)) or 'none'})" for u in unknown]
        raise ConfigError(f"{path}: unknown key(s) in {where}: {'; '.join(hints)}")


def run_folder(out: Path, study: Study, run: StudyRun, seed: int) -> Path:
    return out / study.name / run.name / f"seed{seed}"


def execute(folder: Path, run: StudyRun, seed: int) -> str:
    """Train, resume or skip one run and seed; returns what was done."""
    from deeplense_tf import api  # TensorFlow loads only once the study is checked

    settings = {**run.settings, "seed": seed}
    recorded = folder / SETTINGS_FILE
    if recorded.is_file() and runs.read_json(recorded) != json.loads(json.dumps(settings)):
        raise ConfigError(f"{folder}: run {run.name} seed {seed} was started with other settings "
                          f"({runs.read_json(recorded)}); give the changed run a new name, or delete {folder}")
    existing = runs.find_runs(folder) if folder.is_dir() else []
    for stale in [r for r in existing if not (r / runs.LAST).is_file() or not (r / runs.STATE).is_file()]:
        print(f"{run.name} seed {seed}: {stale} was stopped before its first checkpoint; starting over")
        shutil.rmtree(stale)
        existing.remove(stale)
    if len(existing) > 1:
        raise UserError(f"{folder} holds {len(existing)} runs; a study keeps one per run and seed")
    if existing and (existing[0] / "metrics.json").is_file():
        return "done"
    folder.mkdir(parents=True, exist_ok=True)
    runs.write_json(recorded, settings)
    if existing:
        api.train(resume=existing[0])
        return "resumed"
    api.train(**settings, out=str(folder))
    return "trained"


def run_study(study: Study, out: Path, only: list[str] | None = None, merge: list[Path] = ()) -> Path:
    chosen = [r for r in study.runs if not only or r.name in only]
    unknown = sorted(set(only or ()) - {r.name for r in study.runs})
    if unknown:
        raise ConfigError(f"--only {' '.join(unknown)}: not runs of study {study.name} "
                          f"({', '.join(r.name for r in study.runs)})")
    for run in chosen:
        for seed in run.seeds:
            folder = run_folder(out, study, run, seed)
            started = time.perf_counter()
            try:
                action = execute(folder, run, seed)
            except UserError as err:  # one run's bad data or settings: the others still run
                print(f"{run.name} seed {seed}: failed: {err}", file=sys.stderr)
                action = "failed"
            print(f"study {study.name}: {run.name} seed {seed}: {action} ({time.perf_counter() - started:.0f} s)",
                  flush=True)
    return write_study_leaderboard(study, out, merge)


def write_study_leaderboard(study: Study, out: Path, merge: list[Path] = ()) -> Path:
    """The study folder's leaderboard, its rows in the study file's run order."""
    from deeplense_tf.evaluation.leaderboard import write_leaderboard  # matplotlib loads only here

    return write_leaderboard(out / study.name, f"Study {study.name}: {study.description}", merge,
                             [r.name for r in study.runs], planned_rows(study))


def planned_rows(study: Study) -> list[dict]:
    """What each run of the study will train (task, arch, data, samples, epochs: the architecture's
    defaults applied), for the leaderboard to list the runs not run yet."""
    rows = []
    for run in study.runs:
        config = config_from_options(run.settings)
        data = config.data.data
        rows.append({"run": run.name, "task": config.model.task, "arch": config.model.arch,
                     "metric": runs.HEADLINE[config.model.task][0],
                     "data": data if isinstance(data, str) else ",".join(data), "samples": config.data.samples,
                     "epochs": config.train.epochs})
    return rows


def print_builtin() -> None:
    studies = builtin_studies()
    width = max(map(len, studies))
    for name, path in studies.items():
        study = load_study(path)
        seeds = sum(len(r.seeds) for r in study.runs)
        print(f"{name:<{width}} {len(study.runs):>3} runs, {seeds:>3} with seeds  {study.description}")


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("python -m deeplense_tf.study", __doc__, verbose=True)
    p.add_argument("study", nargs="?", help="a built-in study (--list) or a study .json file")
    p.add_argument("--list", action="store_true", help="list the built-in studies and exit")
    p.add_argument("--out", type=Path, default=Path("studies"), help="parent folder of study folders")
    p.add_argument("--only", nargs="+", metavar="RUN", help="run only these runs of the study (by name)")
    p.add_argument("--leaderboard", action="store_true", help="only write the leaderboard of what has run")
    p.add_argument("--merge", nargs="+", type=Path, default=[], metavar="CSV",
                   help="leaderboard.csv files of the same study run elsewhere: their rows fill the runs this "
                        "folder has not finished (marked in leaderboard.md)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        return run_cli(print_builtin)
    if not args.study:
        print("error: name a study (python -m deeplense_tf.study --list shows the built-in ones)", file=sys.stderr)
        return 2
    prepare_environment(args.verbose)

    def job():
        study = load_study(args.study)
        if args.leaderboard:
            path = write_study_leaderboard(study, args.out, args.merge)
        else:
            path = run_study(study, args.out, args.only, args.merge)
        print(f"leaderboard: {path}")

    return run_cli(job)


if __name__ == "__main__":
    sys.exit(main())
