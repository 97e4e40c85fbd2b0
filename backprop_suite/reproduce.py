"""The main job: run the experiments that are out of date, print one summary table, write the report.

A stored result (results/<experiment>/metrics.json) is up to date when its spec file, the code that
computes results (provenance.code_sha256) and the data it used are unchanged; the main job then
skips it and says so. `force` reruns everything selected.
"""
import functools
import time
from pathlib import Path

from backprop_suite.artifacts import counted, text_table
from backprop_suite.datasets import current_sha256, data_path_for
from backprop_suite.errors import SpecError
from backprop_suite.example_runner import run_worked_example
from backprop_suite.experiment import ExperimentSpec
from backprop_suite.provenance import code_sha256
from backprop_suite.training import train_experiment
from backprop_suite.verdict import EditedRecordError, qualified_verdict, read_record

UP_TO_DATE = "up to date"


def run_experiment(spec, results_root: Path, data_path: str | None = None, force: bool = False) -> dict:
    """Train a training spec (afresh if `force`) or run a worked example; its metrics.json record.
    `data_path` reaches only an experiment on DATA_PATH_DATASET."""
    if spec.kind == "training":  # an interrupted run that cannot resume is discarded, with a line saying so
        return train_experiment(spec, results_root, data_path_for(spec.dataset, data_path), restart=force,
                                discard_unresumable=True)
    return run_worked_example(spec, results_root)


@functools.cache
def _current_data_sha256(name: str, data_path: str | None) -> str:
    return current_sha256(name, data_path)


def stored_data(record: dict) -> list[tuple[str, str]]:
    """(dataset name, SHA-256) of every dataset a stored result used."""
    data, used = record.get("data"), []
    while data:
        used.append((data["name"], data["sha256"]))
        data = data.get("also")
    return used


def out_of_date_reason(spec, results_root: Path, data_path: str | None = None) -> str | None:
    """Why the stored result of `spec` must be remade, or None when its spec, code and data are unchanged."""
    out_dir = Path(results_root) / spec.name
    try:
        record = read_record(out_dir / "metrics.json")
    except EditedRecordError:
        return "its metrics.json was edited by hand"
    except SpecError as error:
        return f"its stored result is unreadable ({str(error).split(': ', 1)[-1].split(';')[0]})"
    if record is None:
        return "no stored result"
    if (out_dir / ".in_progress").exists():
        return "an interrupted run to resume"
    missing = [name for name in result_files(spec, record) if not (out_dir / name).is_file()]
    if missing:
        return f"its {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing"
    if record.get("spec_sha256") != spec.sha256:
        return f"experiments/{spec.name}.toml changed"
    if record.get("code_sha256") != code_sha256():
        return "the code changed"
    if spec.kind == "training":  # the data `spec.dataset` resolves to now (a new --data-path, a fallback ended)
        now = _current_data_sha256(spec.dataset, data_path_for(spec.dataset, data_path))
        if now != record["data"]["sha256"]:
            return f"its data changed ({spec.dataset} is now {now[:12]}…, was {record['data']['sha256'][:12]}…)"
        return None
    for name, stored in stored_data(record):
        if _current_data_sha256(name, None) != stored:
            return f"its data {name} changed"
    return None


def result_files(spec, record: dict) -> list[str]:
    """The files a finished run left beside metrics.json, which the report links to."""
    if spec.kind == "training":
        return ["history.csv", "acc.png", "loss.png", record.get("model_drawing") or "model.png"]
    return ["report.txt", *record.get("figures", [])]


def _readable_record(path: Path) -> dict | None:
    try:
        return read_record(path)
    except SpecError:
        return None


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def run_experiments(specs: list[ExperimentSpec], results_root: Path, data_path: str | None = None,
                    force: bool = False) -> list[dict]:
    """Run each spec that is out of date (all if `force`); return every spec's record, stored or new.

    Records of skipped experiments get `"status": "up to date"`; of run ones, `"status": "ran"`.
    """
    results_root = Path(results_root)
    reasons = {spec.name: "--force" if force else out_of_date_reason(spec, results_root, data_path) for spec in specs}
    to_run = [spec for spec in specs if reasons[spec.name]]
    stored = {spec.name: _readable_record(results_root / spec.name / "metrics.json") for spec in to_run}
    estimates = {name: record.get("wall_time_s") for name, record in stored.items() if record}
    print(f"{counted(len(specs), 'experiment')}: {len(specs) - len(to_run)} up to date (skipped; --force reruns them), "
          f"{len(to_run)} to run", flush=True)
    for spec in specs:
        if not reasons[spec.name]:
            print(f"  {UP_TO_DATE}: {spec.name}", flush=True)
    records, start = {}, time.perf_counter()
    for number, spec in enumerate(to_run, 1):
        remaining = [estimates.get(s.name) for s in to_run[number - 1:]]
        known = sum(t for t in remaining if t is not None)
        eta = f"about {'≥ ' if None in remaining else ''}{_clock(known)} left by the last run times" if known else ""
        print(f"\n=== [{number}/{len(to_run)}] {spec.name} ({', '.join(spec.claims) or 'beyond the notes'}), because "
              f"{reasons[spec.name]}; elapsed {_clock(time.perf_counter() - start)}"
              f"{'; ' + eta if eta else ''}\n    {spec.question}", flush=True)
        records[spec.name] = {**run_experiment(spec, results_root, data_path, force), "status": "ran"}
    for spec in specs:
        if spec.name not in records:
            records[spec.name] = {**read_record(results_root / spec.name / "metrics.json"), "status": UP_TO_DATE}
    return [records[spec.name] for spec in specs]


def summary_table(records: list[dict]) -> str:
    """A fixed-width table: experiment, claims, data, test accuracy (training), checks met, verdict, status."""
    header = ("experiment", "claims", "data", "test acc", "checks met", "verdict", "this run")
    rows = [(r["experiment"], " ".join(r["claims"]) or "beyond the notes", r["data"]["name"] if r["data"] else "-",
             f"{r['metrics']['test_accuracy']:.4f}" if "test_accuracy" in r["metrics"] else "-",
             f"{sum(c['met'] for c in r['checks'])}/{len(r['checks'])}", qualified_verdict(r["verdict"], [r]),
             f"ran, {r.get('wall_time_s', '?')} s" if r.get("status") == "ran" else r.get("status", "-"))
            for r in records]
    return text_table(header, rows)
