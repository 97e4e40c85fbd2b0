"""The main job: train every experiment of a profile and print one summary table."""
from pathlib import Path

from backprop_suite.artifacts import text_table
from backprop_suite.experiment import EXPERIMENTS_DIR, ExperimentSpec, load_spec
from backprop_suite.training import train_experiment
from backprop_suite.worked_examples import run_worked_example


def run_experiment(spec, results_root: Path, data_path: str | None = None) -> dict:
    """Train a training spec or run a worked example; its metrics.json record."""
    if spec.kind == "training":
        return train_experiment(spec, results_root, data_path)
    return run_worked_example(spec, results_root)


def specs_of_profile(profile: str, only: list[str] | None = None) -> list[ExperimentSpec]:
    """The specs in experiments/ with this profile (or exactly those named in `only`), sorted by name."""
    if only:
        return [load_spec(name) for name in only]
    specs = [load_spec(path) for path in sorted(EXPERIMENTS_DIR.glob("*.toml"))]
    return [spec for spec in specs if spec.profile == profile]


def run_experiments(specs: list[ExperimentSpec], results_root: Path, data_path: str | None = None) -> list[dict]:
    records = []
    for number, spec in enumerate(specs, 1):
        print(f"\n=== [{number}/{len(specs)}] {spec.name} ({', '.join(spec.claims)}): {spec.question}", flush=True)
        records.append(run_experiment(spec, results_root, data_path))
    return records


def summary_table(records: list[dict]) -> str:
    """A fixed-width table: experiment, claims, data, test accuracy (training), checks met, verdict."""
    header = ("experiment", "claims", "data", "test acc", "checks met", "verdict")
    rows = [(r["experiment"], " ".join(r["claims"]), r["data"]["name"] if r["data"] else "-",
             f"{r['metrics']['test_accuracy']:.4f}" if "test_accuracy" in r["metrics"] else "-",
             f"{sum(c['met'] for c in r['checks'])}/{len(r['checks'])}", r["verdict"]) for r in records]
    return text_table(header, rows)
