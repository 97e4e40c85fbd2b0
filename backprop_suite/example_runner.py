"""Run a worked example from its spec: its text, figures, report.txt and metrics.json with the verdict."""
import shutil
import time
from pathlib import Path

from backprop_suite import artifacts
from backprop_suite.experiment import WorkedExampleSpec
from backprop_suite.provenance import environment
from backprop_suite.verdict import evaluate_expectations, sealed, spec_header
from backprop_suite.worked_examples import WORKED_EXAMPLES


def run_worked_example(spec: WorkedExampleSpec, results_root: Path) -> dict:
    """Run the example, print its text, write report.txt, figures and metrics.json; return metrics.json."""
    out_dir = Path(results_root) / spec.name
    artifacts.require_writable_folder(out_dir, "--results-dir")
    with artifacts.result_folder(out_dir), artifacts.sole_writer(out_dir):
        record = _run(spec, artifacts.begin_staging(out_dir))
        artifacts.publish(artifacts.staging_folder(out_dir), out_dir)  # the whole folder at once
    print(f"[example] {spec.name}: verdict: {record['verdict']}; results in {out_dir}", flush=True)
    return record


def _run(spec: WorkedExampleSpec, out_dir: Path) -> dict:
    """Run the example and write its files into `out_dir` (a staging folder); its record."""
    start = time.perf_counter()
    result = WORKED_EXAMPLES[spec.example](**spec.options)  # options checked against its signature when parsed
    print(result.text, flush=True)
    checks, verdict = evaluate_expectations(spec, result.metrics, (result.data or {}).get("name"))
    artifacts.write_text(out_dir / "report.txt", result.text + "\n")
    for filename, draw in result.figures.items():
        draw(out_dir / filename)
    with artifacts.atomic_path(out_dir / "spec.toml") as tmp:
        shutil.copyfile(spec.path, tmp)
    record = {**spec_header(spec), "verdict": verdict, "checks": checks, "metrics": result.metrics,
              "data": result.data, "details": result.details, "figures": sorted(result.figures),
              "figure_captions": {name: result.captions.get(name, "") for name in sorted(result.figures)},
              "wall_time_s": round(time.perf_counter() - start, 2), "environment": environment()}
    record = sealed(record)
    artifacts.write_json(out_dir / "metrics.json", record)
    return record
