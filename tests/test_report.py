"""The claims file, and the report: every claim listed with a verdict, figures that load in a real browser."""
import html
import json
import re
import shutil
import time

import pytest
from conftest import SHARED_CLAIMS_FILE, run_child

from backprop_suite.claims import CLAIMS_FILE, load_claims
from backprop_suite.cli import RESULTS_DIR
from backprop_suite.errors import SpecError
from backprop_suite.experiment import load_spec
from backprop_suite.report import NOT_YET_RUN, ExperimentResult, claim_row, claim_verdict, prose_html, write_report
from backprop_suite.reproduce import run_experiments

# The IDs CLAIMS.md defines, typed from its text: 2 + 3 + 5 + 6 + 4 claims in five seed files.
CLAIM_IDS = ["C000-1", "C000-2", "C001-1", "C001-2", "C001-3", "C002-1", "C002-2", "C002-3", "C002-4", "C002-5",
             "C003-1", "C003-2", "C003-3", "C003-4", "C003-5", "C003-6", "C004-1", "C004-2", "C004-3", "C004-4"]


def test_claims_file_lists_the_twenty_claims_with_their_seed_files():
    claims = load_claims()
    assert [claim.id for claim in claims] == CLAIM_IDS
    assert {claim.seed_file[:3] for claim in claims} == {"000", "001", "002", "003", "004"}
    assert all(claim.seed_file.startswith(claim.id[1:4]) for claim in claims)
    c004_4 = next(claim for claim in claims if claim.id == "C004-4")
    assert c004_4.statement == "The logistic derivative is y(1 − y)."


@pytest.mark.skipif(not SHARED_CLAIMS_FILE.exists(), reason="../shared/CLAIMS.md is not beside the repository")
def test_suite_copy_of_claims_md_is_the_shared_original():
    assert CLAIMS_FILE.read_bytes() == SHARED_CLAIMS_FILE.read_bytes()


def test_claim_continuation_lines_join_and_context_bullets_are_not_claims(tmp_path):
    path = tmp_path / "CLAIMS.md"
    path.write_text("# t\n\n## 007_abc.txt — a note\n- **C007-1** First line\n  continues here.\n"
                    "- Context only: not a claim.\n- **C007-2** Second.\n", encoding="utf-8")
    claims = load_claims(path)
    assert [(c.id, c.seed_file, c.statement) for c in claims] == [
        ("C007-1", "007_abc.txt", "First line continues here."), ("C007-2", "007_abc.txt", "Second.")]


@pytest.mark.parametrize("text, message", [
    ("# nothing here\n", "no claims found"),
    ("- **C001-1** before any heading\n", r":1: claim C001-1 comes before any"),
    ("## 001_a.txt — x\n- **C001-1** a\n- **C001-1** b\n", "C001-1 appear more than once"),
])
def test_malformed_claims_file_is_rejected_naming_it(tmp_path, text, message):
    path = tmp_path / "CLAIMS.md"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SpecError, match=message) as error:
        load_claims(path)
    assert str(path) in str(error.value)


def _result(verdict):
    return ExperimentResult(load_spec("c000_1_net_222_identity"), None if verdict is None else {"verdict": verdict})


@pytest.mark.parametrize("verdicts, expected", [
    (["reproduced", "reproduced"], "reproduced"),
    (["reproduced", "discrepancy explained"], "discrepancy explained"),
    (["discrepancy explained", "failed", "reproduced"], "failed"),
    (["reproduced", None], "reproduced"),  # one experiment not run yet: the others decide
    ([None], NOT_YET_RUN),
    ([], NOT_YET_RUN),
    (["measured only (no expectation for dataset mnist-5k)"], NOT_YET_RUN),
])
def test_claim_verdict_is_the_worst_of_its_experiments(verdicts, expected):
    assert claim_verdict([_result(v) for v in verdicts]) == expected


def test_claim_row_never_hides_an_expectation_left_unchecked_by_a_data_fallback():
    """c003_1_mnist_cnn ran on mnist-5k: the note's ≥ 99 % on full MNIST must show, however many checks were met."""
    met = [{"metric": f"m{i}", "expected": f"m{i} >= 0", "measured": 1.0, "met": True} for i in range(6)]
    record = {"verdict": "reproduced", "checks": met, "data": {"name": "mnist-5k"}, "model_drawing": "model.png"}
    claim = next(c for c in load_claims() if c.id == "C003-1")
    lines = claim_row(claim, [ExperimentResult(load_spec("c003_1_mnist_cnn"), record)])[3]
    assert lines[0] == "parameters = 600810 ± 0 on mnist → not checked (ran on mnist-5k)"
    assert lines[1] == "test_accuracy >= 0.99 on mnist → not checked (ran on mnist-5k)"
    assert lines[2] == "m0 >= 0 → 1 ✓"
    assert lines[-1] == "… 4 more met in the experiment sections" and len(lines) == 2 + 2 + 1


def test_a_worked_example_on_fallback_data_has_no_unchecked_expectation_c002_2():
    """A worked example has no dataset of its own to fall back from: every expectation it has was checked
    (the report once listed all of them a second time as 'not checked: ran on mnist-5k')."""
    spec = load_spec("c002_2_gradient_cost")
    checks = [{"metric": e.metric, "expected": e.describe(), "measured": 1.0, "met": True} for e in spec.expected]
    record = {"verdict": "reproduced", "checks": checks, "data": {"name": "mnist-5k"}, "figures": []}
    claim = next(c for c in load_claims() if c.id == "C002-2")
    lines = claim_row(claim, [ExperimentResult(spec, record)])[3]
    assert not any("not checked" in line for line in lines), lines
    assert lines[0] == f"{spec.expected[0].describe()} → 1 ✓"


@pytest.fixture(scope="module")
def report_of_three_experiments(tmp_path_factory):
    """The real main-job path: three cheap experiments run, then the report over every spec and claim,
    with one extra claim that no experiment covers."""
    results = tmp_path_factory.mktemp("results")
    run_experiments([load_spec(name) for name in
                     ("c000_1_net_222_sigmoid", "c000_1_net_222_gradcheck", "c001_3_whole_batch_softmax")], results)
    claims = tmp_path_factory.mktemp("claims") / "CLAIMS.md"
    claims.write_text(CLAIMS_FILE.read_text(encoding="utf-8") + "\n## 009_x.txt — extra\n- **C009-1** Uncovered.\n",
                      encoding="utf-8")
    markdown, page = write_report(results, claims)
    return results, markdown.read_text(encoding="utf-8"), page


def _claim_rows(markdown: str) -> dict[str, list[str]]:
    rows = re.findall(r"^\| (.*?) \| (C\d{3}-\d+)<br>(.*)\|$", markdown, re.MULTILINE)
    """claim ID -> [verdict, the note states, checks, figure, experiments] (the seed file left out)."""
    return {claim: [verdict, *(cell.strip() for cell in rest.split(" | ")[1:])] for verdict, claim, rest in rows}


def test_report_lists_every_claim_once_with_its_verdict(report_of_three_experiments):
    _, markdown, _ = report_of_three_experiments
    rows = _claim_rows(markdown)
    assert list(rows) == [*CLAIM_IDS, "C009-1"]
    verdict = {claim: cells[0] for claim, cells in rows.items()}
    assert verdict["C000-1"] == "reproduced"  # the sigmoid variant ran; its published numbers matched
    assert verdict["C001-3"] == "discrepancy explained"
    assert verdict["C009-1"] == NOT_YET_RUN  # no experiment at all: listed, not dropped
    assert verdict["C003-1"] == NOT_YET_RUN  # experiments exist, but none ran here
    assert "→ 0.298371 ✓" in rows["C000-1"][2]  # E of the published example, measured
    assert rows["C000-1"][3] == "[gradcheck.png](c000_1_net_222_gradcheck/gradcheck.png)"


def test_report_sections_embed_each_figure_that_exists(report_of_three_experiments):
    results, markdown, _ = report_of_three_experiments
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert "c000_1_net_222_gradcheck/gradcheck.png" in figures
    assert all((results / figure).is_file() for figure in figures)
    assert "Run it with `bash scripts/reproduce.sh --only c003_1_mnist_cnn`" in markdown


def chromium_probe(page, tmp_path, measure: str) -> dict:
    """Open a copy of `page` in headless Chromium at 1400 × 900 and return what the JavaScript expression
    `measure` evaluates to (JSON) once the page has loaded."""
    probe = tmp_path / "probe.html"
    script = ('<script>window.addEventListener("load", () => { document.body.setAttribute("data-probe", '
              f"JSON.stringify({measure})); }});</script>")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", script + "</body>"), encoding="utf-8")
    command = [shutil.which("chromium") or "chromium", "--headless", "--no-sandbox", "--disable-gpu",
               "--hide-scrollbars", "--window-size=1400,900", "--disable-background-networking",
               "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()]
    dom = run_child(command, capture_output=True, text=True, timeout=120, check=True).stdout
    found = re.search(r'<body[^>]* data-probe="([^"]*)"', dom)
    assert found, f"the probe did not run; chromium printed: {dom[:300]}"
    return json.loads(html.unescape(found[1]))


# Every image but the empty full-size viewer (#zoom), which gets its picture on a click.
_IMAGES = """(() => { const images = [...document.images].filter(i => !i.closest("#zoom"));
  return {count: images.length, broken: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt)};
})()"""


def images_in_chromium(page, tmp_path) -> tuple[int, list[str]]:
    """(number of images, alt texts of those that failed to load) in headless Chromium."""
    seen = chromium_probe(page, tmp_path, _IMAGES)
    return seen["count"], seen["broken"]


def test_report_html_is_self_contained_and_every_image_loads_in_chromium(report_of_three_experiments, tmp_path):
    results, markdown, page = report_of_three_experiments
    html_text = page.read_text(encoding="utf-8")
    assert 'src="data:image/png;base64,' in html_text and 'src="c0' not in html_text  # nothing to fetch beside it
    count, broken = images_in_chromium(page, tmp_path)
    thumbnails = html_text.count('class="thumb zoomable"')
    assert thumbnails >= 1 and count == len(re.findall(r"!\[", markdown)) + thumbnails
    assert broken == []


def test_image_probe_sees_a_broken_image(report_of_three_experiments, tmp_path):
    """The check above can fail: one corrupted embedded PNG is reported by name (and its thumbnails with it)."""
    _, _, page = report_of_three_experiments
    html_text = page.read_text(encoding="utf-8")
    corrupted = re.sub(r'(<img class="zoomable" src="data:image/png;base64,)[A-Za-z0-9+/]{64}', r"\1" + "A" * 64,
                       html_text, count=1)
    assert corrupted != html_text
    copy = tmp_path / "corrupted.html"
    copy.write_text(corrupted, encoding="utf-8")
    count, broken = images_in_chromium(copy, tmp_path)
    assert len(broken) >= 1 and count >= 1


# At 1400 × 900: how far the page and the claims table reach sideways, where the first claim's verdict and
# thumbnail are, and whether a click on the thumbnail opens it at full size.
_LAYOUT = """(() => {
  const table = document.querySelector("table.claims"), row = table.tBodies[0].rows[0];
  const thumb = document.querySelector("img.thumb"), zoom = document.getElementById("zoom");
  thumb.click();
  return {window: window.innerWidth, page: document.documentElement.scrollWidth,
          table_right: table.getBoundingClientRect().right, verdict: row.cells[0].textContent,
          verdict_bottom: row.cells[0].getBoundingClientRect().top + 20,
          thumb_bottom: thumb.getBoundingClientRect().bottom, thumb_right: thumb.getBoundingClientRect().right,
          thumb_loaded: thumb.naturalWidth > 0, zoomed: !zoom.hidden && zoom.querySelector("img").src === thumb.src};
})()"""


def test_report_fits_1400_pixels_with_claim_verdict_and_figure_on_the_first_screen(tmp_path):
    """The committed report, as a learner opens it: no sideways scrolling; the first claim's verdict and its
    figure are in the first 1400 × 900 screen; a click on the figure opens it at full size."""
    page = RESULTS_DIR / "report.html"
    seen = chromium_probe(page, tmp_path, _LAYOUT)
    assert seen["window"] == 1400
    assert seen["page"] <= seen["window"] and seen["table_right"] <= seen["window"], seen
    assert seen["verdict"].startswith("reproduced")
    assert seen["verdict_bottom"] <= 900 and seen["thumb_bottom"] <= 900 and seen["thumb_right"] <= 1400, seen
    assert seen["thumb_loaded"] and seen["zoomed"], seen


def test_the_layout_probe_sees_a_table_too_wide(tmp_path):
    """The check above can fail: the same report with the claims table forced to 2000 px is caught."""
    page = tmp_path / "wide.html"
    page.write_text((RESULTS_DIR / "report.html").read_text(encoding="utf-8").replace(
        "</style>", "table.claims { min-width: 2000px; }</style>"), encoding="utf-8")
    seen = chromium_probe(page, tmp_path, _LAYOUT)
    assert seen["table_right"] > seen["window"] and seen["page"] > seen["window"]


def test_markdown_emphasis_in_a_claim_renders_as_emphasis_not_asterisks():
    assert prose_html("outputs p1, p2 with the *identity* activation") == \
        "outputs p1, p2 with the <em>identity</em> activation"
    assert prose_html("a * b, c*d and `x<y`") == "a * b, c*d and <code>x&lt;y</code>"


def test_a_run_that_changes_nothing_leaves_the_report_untouched(report_of_three_experiments, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(report_of_three_experiments[0], results)
    write_report(results)  # the real CLAIMS.md, not the fixture's: a different report
    written = {path: path.stat().st_mtime_ns for path in (results / "REPORT.md", results / "report.html")}
    time.sleep(0.01)
    write_report(results)
    assert {path: path.stat().st_mtime_ns for path in written} == written


def test_a_verdict_says_when_a_data_fallback_left_an_expectation_unchecked_c003_1():
    """c003_1_mnist_cnn fell back to mnist-5k: its ≥ 99 % on full MNIST was not checked, so the claim is not
    simply 'reproduced' — in the claims table, the experiment's section and the main job's summary alike."""
    from backprop_suite.reproduce import summary_table

    spec = load_spec("c003_1_mnist_cnn")
    record = {"experiment": spec.name, "claims": list(spec.claims), "verdict": "reproduced", "spec": spec.resolved(),
              "checks": [{"metric": "test_accuracy", "expected": "test_accuracy >= 0.96", "measured": 0.967,
                          "met": True}], "data": {"name": "mnist-5k"}, "metrics": {"test_accuracy": 0.967},
              "model_drawing": "model.png"}
    claim = next(c for c in load_claims() if c.id == "C003-1")
    verdict = "reproduced on mnist-5k; full-MNIST expectation not checked"
    assert claim_row(claim, [ExperimentResult(spec, record)])[0] == verdict
    assert verdict in summary_table([record])
    on_full_mnist = {**record, "data": {"name": "mnist"}}
    assert claim_row(claim, [ExperimentResult(spec, on_full_mnist)])[0] == "reproduced"


def test_every_committed_figure_says_what_to_look_for_and_every_claim_has_one():
    for path in sorted(RESULTS_DIR.glob("*/metrics.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("kind") == "worked_example":
            captions = record.get("figure_captions", {})
            assert sorted(captions) == record["figures"], path
            assert all(text.startswith("What to look for: ") for text in captions.values()), path
    rows = _claim_rows((RESULTS_DIR / "REPORT.md").read_text(encoding="utf-8"))
    assert len(rows) == len(CLAIM_IDS) and not [claim for claim, cells in rows.items() if cells[3] == "—"]
