"""What every run records: which experiment and spec made it, and the verdict its expectations give."""
from backprop_suite.errors import SpecError
from backprop_suite.experiment import EXPERIMENTS_DIR
from backprop_suite.provenance import code_sha256


def spec_header(spec) -> dict:
    """The first fields of every metrics.json: which experiment, which claims, which spec file."""
    root = EXPERIMENTS_DIR.parent
    return {"experiment": spec.name, "kind": spec.kind, "question": spec.question, "claims": list(spec.claims),
            "spec_file": str(spec.path.resolve().relative_to(root)) if spec.path.resolve().is_relative_to(root)
            else str(spec.path), "spec_sha256": spec.sha256, "code_sha256": code_sha256(), "spec": spec.resolved()}


def evaluate_expectations(spec, measured: dict, dataset: str | None = None) -> tuple[list[dict], str]:
    """Each applicable expectation against the measured metrics, and the verdict they give."""
    applicable = [e for e in spec.expected if e.dataset in (None, dataset)]
    missing = [e.metric for e in applicable if e.metric not in measured]
    if missing:
        raise SpecError(f"{spec.path}: expected metric(s) {missing} are not measured here; "
                        f"measured: {', '.join(sorted(measured))}")
    checks = [{"metric": e.metric, "expected": e.describe(), "measured": measured[e.metric],
               "met": e.is_met_by(measured[e.metric]), "source": e.source} for e in applicable]
    if not checks:
        return checks, f"measured only (no expectation for dataset {dataset})"
    overrides = getattr(spec, "overrides", None)
    if overrides:  # the spec's expectations are for the spec's settings: shown, but they decide nothing here
        changed = ", ".join(f"{key} {value}" for key, value in overrides.items())
        return checks, f"measured only (spec overridden: {changed})"
    return checks, spec.outcome if all(c["met"] for c in checks) else "failed"


DATASET_LABELS = {"mnist": "full-MNIST"}
CLAIMING = ("reproduced", "discrepancy explained")  # verdicts that claim something the checks may not all back


def unchecked_datasets(record: dict) -> list[str]:
    """The spec's own dataset, when the run fell back to other data and left that dataset's expectations
    unchecked (e.g. full MNIST's ≥ 99 % after a fallback to mnist-5k). The fallback's own expectations are a
    bar for the fallback, not a claim: a run on the spec's dataset does not need them."""
    spec, used = record.get("spec", {}), (record.get("data") or {}).get("name")
    primary = spec.get("dataset")
    if primary is None or used in (None, primary):
        return []
    return [primary] if any(e.get("dataset") == primary for e in spec.get("expected", [])) else []


def qualified_verdict(verdict: str, records: list[dict]) -> str:
    """The verdict, saying so when expectations went unchecked: 'reproduced on mnist-5k; full-MNIST expectation
    not checked'. A verdict must not claim more than its checks."""
    unchecked = sorted({name for record in records for name in unchecked_datasets(record)})
    if verdict not in CLAIMING or not unchecked:
        return verdict
    used = sorted({record["data"]["name"] for record in records if unchecked_datasets(record)})
    labels = ", ".join(DATASET_LABELS.get(name, name) for name in unchecked)
    return f"{verdict} on {', '.join(used)}; {labels} expectation{'s' if len(unchecked) > 1 else ''} not checked"
