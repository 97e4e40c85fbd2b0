"""The main job reruns only what is out of date: a spec, the code or the data changed, or a run was interrupted."""
import json

import pytest

from backprop_suite import experiment as experiment_module
from backprop_suite.experiment import load_spec, select_specs
from backprop_suite.reproduce import UP_TO_DATE, out_of_date_reason, run_experiments
from backprop_suite.verdict import sealed

EXPERIMENT = "c000_1_net_222_identity"  # 0.1 s, no data


@pytest.fixture
def stored(tmp_path):
    run_experiments([load_spec(EXPERIMENT)], tmp_path)
    return tmp_path, tmp_path / EXPERIMENT / "metrics.json"


def _edit_record(path, **changes):
    """As if another run (other code, other data) had written the record: changed, and sealed as a run seals it."""
    record = json.loads(path.read_text())
    record.update(changes)
    path.write_text(json.dumps(sealed(record)))


def test_second_run_skips_an_up_to_date_experiment_and_says_so(stored, capsys):
    results, metrics = stored
    before = metrics.read_bytes()
    records = run_experiments([load_spec(EXPERIMENT)], results)
    assert records[0]["status"] == UP_TO_DATE and records[0]["verdict"] == "reproduced"
    assert metrics.read_bytes() == before
    assert f"{UP_TO_DATE}: {EXPERIMENT}" in capsys.readouterr().out


def test_force_reruns_an_up_to_date_experiment(stored):
    results, _ = stored
    assert run_experiments([load_spec(EXPERIMENT)], results, force=True)[0]["status"] == "ran"


def test_changed_spec_makes_the_result_out_of_date(stored, tmp_path_factory, monkeypatch):
    results, _ = stored
    experiments = tmp_path_factory.mktemp("experiments")  # the experiments folder, its spec edited
    edited = experiments / f"{EXPERIMENT}.toml"
    edited.write_text(load_spec(EXPERIMENT).path.read_text() + "\n# an edit\n")
    monkeypatch.setattr(experiment_module, "EXPERIMENTS_DIR", experiments)
    assert load_spec(EXPERIMENT).path == edited
    assert out_of_date_reason(load_spec(edited), results) == f"experiments/{EXPERIMENT}.toml changed"
    assert run_experiments([load_spec(edited)], results)[0]["status"] == "ran"


def test_result_made_by_other_code_is_out_of_date(stored):
    results, metrics = stored
    _edit_record(metrics, code_sha256="0" * 64)
    assert out_of_date_reason(load_spec(EXPERIMENT), results) == "the code changed"


def test_result_made_from_other_data_is_out_of_date(stored):
    results, metrics = stored
    _edit_record(metrics, data={"name": "iris", "sha256": "0" * 64})  # scikit-learn's iris hashes otherwise
    assert out_of_date_reason(load_spec(EXPERIMENT), results) == "its data iris changed"


def test_interrupted_run_is_out_of_date_so_that_it_resumes(stored):
    results, _ = stored
    (results / EXPERIMENT / ".in_progress").mkdir()
    assert out_of_date_reason(load_spec(EXPERIMENT), results) == "an interrupted run to resume"


def test_quick_selection_is_the_quick_profile_and_full_is_every_spec():
    quick, full = select_specs(), select_specs(full=True)
    assert {spec.profile for spec in quick} == {"quick"}
    assert {spec.name for spec in quick} < {spec.name for spec in full}
    assert {spec.profile for spec in full} == {"quick", "full"}
    assert [spec.name for spec in select_specs(only=[EXPERIMENT])] == [EXPERIMENT]


def test_the_code_checksum_dates_results_when_training_code_changes_but_not_the_report(tmp_path, monkeypatch):
    import shutil

    from backprop_suite import provenance

    for folder in ("models", "backprop_suite", "verifier/gradcheck"):
        shutil.copytree(provenance.REPO_ROOT / folder, tmp_path / folder)
    shutil.copy(provenance.REPO_ROOT / "requirements.txt", tmp_path)
    monkeypatch.setattr(provenance, "REPO_ROOT", tmp_path)

    def checksum():
        return provenance.code_sha256.__wrapped__()

    before = checksum()
    with open(tmp_path / "backprop_suite" / "report.py", "a") as report:
        report.write("# presentation only\n")
    assert checksum() == before
    with open(tmp_path / "backprop_suite" / "distribute.py", "a") as distribute:
        distribute.write("# the multi-worker training loop\n")  # multi-worker results depend on it
    assert checksum() != before
    after_distribute = checksum()
    with open(tmp_path / "verifier" / "gradcheck" / "methods.py", "a") as methods:
        methods.write("# the gradient checks' tolerances\n")  # the verifier's code makes the gradient results
    assert checksum() != after_distribute
