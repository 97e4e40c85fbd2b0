"""What every run records: which experiment and spec made it, and the verdict its expectations give; and how a
stored record is read back: its shape checked, its seal (a digest of its content) verified, its checks and
verdict recomputed from its measurements and its spec, never taken as stored."""
import hashlib
import json
from pathlib import Path

from backprop_suite.errors import SpecError
from backprop_suite.experiment import EXPERIMENTS_DIR, Expectation
from backprop_suite.provenance import code_sha256

DIGEST_KEY = "sha256_of_content"  # metrics.json's seal: what its writer wrote, every other key included
RECORD_KEYS = {"experiment": str, "kind": str, "claims": list, "spec_sha256": str, "code_sha256": str, "spec": dict,
               "verdict": str, "checks": list, "metrics": dict, "environment": dict, DIGEST_KEY: str}


class EditedRecordError(SpecError):
    """A stored metrics.json whose content is not what its run wrote (its seal does not match)."""


def spec_header(spec) -> dict:
    """The first fields of every metrics.json: which experiment, which claims, which spec file."""
    root = EXPERIMENTS_DIR.parent
    return {"experiment": spec.name, "kind": spec.kind, "question": spec.question, "claims": list(spec.claims),
            "spec_file": str(spec.path.resolve().relative_to(root)) if spec.path.resolve().is_relative_to(root)
            else str(spec.path), "spec_sha256": spec.sha256, "code_sha256": code_sha256(), "spec": spec.resolved()}


def evaluate_expectations(spec, measured: dict, dataset: str | None = None) -> tuple[list[dict], str]:
    """Each applicable expectation against the measured metrics, and the verdict they give."""
    return judge(spec.expected, spec.outcome, getattr(spec, "overrides", None), measured, dataset, spec.path)


def judge(expected, outcome: str, overrides: dict | None, measured: dict, dataset: str | None,
          where) -> tuple[list[dict], str]:
    """The checks of the `expected` that apply to `dataset` against `measured`, and the verdict: `outcome` when
    all are met, failed if any is not, measured only when none applies or the spec was overridden."""
    applicable = [e for e in expected if e.dataset in (None, dataset)]
    missing = [e.metric for e in applicable if not isinstance(measured.get(e.metric), (int, float))
               or isinstance(measured.get(e.metric), bool)]
    if missing:
        raise SpecError(f"{where}: expected metric(s) {missing} are not measured here; "
                        f"measured: {', '.join(sorted(measured))}")
    checks = [{"metric": e.metric, "expected": e.describe(), "measured": measured[e.metric],
               "met": e.is_met_by(measured[e.metric]), "source": e.source} for e in applicable]
    if not checks:
        return checks, f"measured only (no expectation for dataset {dataset})"
    if overrides:  # the spec's expectations are for the spec's settings: shown, but they decide nothing here
        changed = ", ".join(f"{key} {value}" for key, value in overrides.items())
        return checks, f"measured only (spec overridden: {changed})"
    return checks, outcome if all(c["met"] for c in checks) else "failed"


def _content_digest(record: dict) -> str:
    content = {key: value for key, value in record.items() if key != DIGEST_KEY}
    return hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def sealed(record: dict) -> dict:
    """The record with its seal: a digest of everything in it, so that a hand edit shows."""
    return {**record, DIGEST_KEY: _content_digest(record)}


def read_record(path: Path) -> dict | None:
    """A stored metrics.json (None if there is none), its checks and verdict recomputed from its measurements and
    the spec it was made with. SpecError when it is unreadable or not a result record; EditedRecordError when its
    content is not what its run wrote."""
    path = Path(path)
    rerun = f"rerun it with `bash scripts/reproduce.sh --only {path.parent.name} --force`"
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SpecError(f"{path}: unreadable stored result ({error}); {rerun}") from None
    wrong = [key for key, kind in RECORD_KEYS.items() if not isinstance(record, dict)
             or not isinstance(record.get(key), kind)]
    if not wrong and record["kind"] == "training" and not (
            isinstance(record.get("data"), dict)
            and all(isinstance(record["data"].get(key), str) for key in ("name", "sha256"))):
        wrong = ["data"]
    if wrong:
        raise SpecError(f"{path}: not a result record (no {', '.join(wrong)} of the right type); {rerun}")
    if record[DIGEST_KEY] != _content_digest(record):
        raise EditedRecordError(f"{path}: edited by hand (its content no longer matches the digest its run wrote "
                                f"in {DIGEST_KEY}), so none of it is shown as measured; {rerun}")
    try:
        spec = record["spec"]
        expected = [Expectation(**e) for e in spec.get("expected", [])]
        record["checks"], record["verdict"] = judge(expected, spec["outcome"], spec.get("overrides"),
                                                    record["metrics"], (record.get("data") or {}).get("name"), path)
    except (KeyError, TypeError, ValueError, AttributeError, SpecError) as error:
        raise SpecError(f"{path}: its measurements or spec cannot be judged ({error}); {rerun}") from None
    return record


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
