"""results/REPORT.md and results/report.html: every claim with its verdict, then every experiment.

One document, two renderings: `build_report` makes a list of blocks (headings, paragraphs, tables,
figures) from CLAIMS.md, the specs in experiments/ and the stored metrics.json files;
`render_markdown` links the figures as files beside REPORT.md, `render_html` embeds them (base64),
so report.html is one self-contained file: the claims table first (verdict, claim, checks, a thumbnail of
its figure), wrapped to the window; a click on any figure opens it at full size.
"""
import base64
import hashlib
import html
import inspect
import re
from dataclasses import dataclass
from pathlib import Path

from backprop_suite import artifacts
from backprop_suite.claims import CLAIMS_FILE, Claim, load_claims
from backprop_suite.errors import SpecError
from backprop_suite.experiment import EXPERIMENTS_DIR, load_spec
from backprop_suite.models import MODEL_BUILDERS
from backprop_suite.provenance import REPO_ROOT
from backprop_suite.verdict import qualified_verdict, read_record
from backprop_suite.worked_examples import WORKED_EXAMPLES

NOT_YET_RUN = "not yet run"
VERDICT_ORDER = ("failed", "discrepancy explained", "reproduced")  # the first one present decides a claim
CHECKS_PER_CLAIM = 4  # in the claims table; the experiment sections list them all
TRAINING_FIGURES = ("acc.png", "loss.png", "model.png")
TRAINING_CAPTIONS = {
    "acc.png": "What to look for: training and validation accuracy rise and level off together (no gap: no "
               "overfitting); the star is the test accuracy after the last epoch.",
    "loss.png": "What to look for: the loss falls fastest in the first epochs; the star is the test loss.",
    "model.png": "The layers with their output shapes (keras.utils.plot_model).",
}
_MARK = {True: "✓", False: "✗"}


@dataclass(frozen=True)
class Link:
    text: str
    href: str  # relative to results/, for REPORT.md
    anchor: str | None = None  # in report.html, where figures are embedded, link to this id instead


@dataclass(frozen=True)
class Code:
    text: str


@dataclass(frozen=True)
class Prose:
    """Text with the Markdown of CLAIMS.md (*emphasis*, `code`): as is in REPORT.md, rendered in report.html."""
    text: str


@dataclass(frozen=True)
class Thumbnail:
    """A small copy of a figure shown in the report, in the claims table."""
    text: str
    href: str  # relative to results/, for REPORT.md
    anchor: str  # the figure's id in report.html, whose image it shows


# Inline content: a str, Link or Code, or a list of them (a table cell's list is one item per line).
@dataclass(frozen=True)
class Heading:
    level: int
    text: str
    anchor: str | None = None


@dataclass(frozen=True)
class Paragraph:
    parts: list


@dataclass(frozen=True)
class Table:
    header: tuple
    rows: list  # of tuples of cells; a cell is inline content or a list of lines
    css_class: str | None = None  # report.html only


@dataclass(frozen=True)
class Preformatted:
    """Text as printed (a worked example's tables), in a fixed-width block that scrolls on its own if wide."""
    text: str


@dataclass(frozen=True)
class Figure:
    path: str  # relative to results/
    caption: str
    anchor: str
    title: str = ""


@dataclass(frozen=True)
class ExperimentResult:
    spec: object  # ExperimentSpec or WorkedExampleSpec
    record: dict | None  # metrics.json, or None if never run (or not shown: see `problem`)
    printed: str | None = None  # a worked example's report.txt: what it printed
    problem: str | None = None  # why a stored metrics.json is not shown: edited by hand, unreadable

    @property
    def verdict(self) -> str:
        return self.record["verdict"] if self.record else NOT_YET_RUN

    def figures(self) -> list[str]:
        if not self.record:
            return []
        if self.spec.kind == "training":
            drawing = self.record.get("model_drawing")  # model.dot when graphviz was missing: not a figure
            return [name for name in TRAINING_FIGURES if name != "model.png" or drawing == name]
        return list(self.record.get("figures", []))

    def caption(self, name: str) -> str:
        if self.spec.kind == "training":
            return TRAINING_CAPTIONS[name]
        return self.record.get("figure_captions", {}).get(name, "")

    def code(self) -> list[str]:
        """The source files that run this experiment's checks, relative to the repository."""
        if self.spec.kind == "training":
            files = [inspect.getsourcefile(MODEL_BUILDERS[self.spec.model]), str(REPO_ROOT / "backprop_suite" /
                                                                                   "training.py")]
        else:
            files = [inspect.getsourcefile(WORKED_EXAMPLES[self.spec.example])]
        return [str(Path(file).resolve().relative_to(REPO_ROOT)) for file in files]


def stored_results(results_root: Path, specs=None) -> list[ExperimentResult]:
    """Every spec in experiments/ (or `specs`) with its stored metrics.json, if any."""
    specs = specs if specs is not None else [load_spec(path) for path in sorted(EXPERIMENTS_DIR.glob("*.toml"))]
    return [ExperimentResult(spec, *_record_or_problem(Path(results_root) / spec.name / "metrics.json"))
            for spec in specs]


def _text_or_none(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _record_or_problem(path: Path) -> tuple[dict | None, str | None, str | None]:
    """(record, what it printed, problem): a stored result, or none (shown as not yet run, with the problem named)
    when it is unreadable or edited by hand: the main job reruns it."""
    try:
        record = read_record(path)
    except SpecError as error:
        return None, None, str(error).split(": ", 1)[-1]
    return record, _text_or_none(path.parent / "report.txt") if record else None, None


def claim_verdict(results: list[ExperimentResult]) -> str:
    """failed if any experiment failed, else discrepancy explained if any, else reproduced; not yet run if none ran.

    A run with no applicable expectation ("measured only") gives no verdict.
    """
    verdicts = {result.verdict for result in results}
    return next((verdict for verdict in VERDICT_ORDER if verdict in verdicts), NOT_YET_RUN)


def format_value(value) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def unchecked_expectations(result: ExperimentResult) -> list:
    """Expectations for the spec's own dataset when the run used another (e.g. full MNIST when it fell back)."""
    used = (result.record.get("data") or {}).get("name")
    primary = getattr(result.spec, "dataset", None)
    if primary is None or used in (None, primary):
        return []
    return [e for e in result.spec.expected if e.dataset == primary]


def figure_anchor(experiment: str, filename: str) -> str:
    return f"fig-{experiment}-{Path(filename).stem}"


CLAIMS_HEADER = ("verdict", "claim", "the note states", "checks: expected → measured", "figure", "experiments")


def check_line(expected: str, measured: str) -> str:
    return f"{expected} → {measured}"


def claim_row(claim: Claim, results: list[ExperimentResult], figure_anchors: dict | None = None) -> tuple:
    """The claims-table row (CLAIMS_HEADER). Each check is one line, expected → measured, so the two never fall
    out of step. Failed checks come first, then expectations not checked on the data used (e.g. full MNIST
    after a fallback), then met checks; only met ones are cut to fit CHECKS_PER_CLAIM.
    figure_anchors: shown_figures(), where each figure is shown (identical ones are shown once)."""
    ran = [result for result in results if result.record]
    lines = []  # (rank, line)
    for result in ran:
        for check in result.record["checks"]:
            measured = f"{format_value(check['measured'])} {_MARK[check['met']]}"
            lines.append((0 if not check["met"] else 2, check_line(check["expected"], measured)))
        for expectation in unchecked_expectations(result):
            lines.append((1, check_line(f"{expectation.describe()} on {expectation.dataset}",
                                        f"not checked (ran on {result.record['data']['name']})")))
    for result in results:
        if result.problem:
            lines.append((0, f"{result.spec.name}: its metrics.json is not shown: {result.problem.split(';')[0]}"))
    lines.sort(key=lambda line: line[0])  # stable: file order within each rank
    shown = [line for number, (rank, line) in enumerate(lines) if rank < 2 or number < CHECKS_PER_CLAIM]
    if len(shown) < len(lines):
        shown.append(f"… {len(lines) - len(shown)} more met in the experiment sections")
    shown_at = figure_anchors or {}
    figure = next((Thumbnail(name, f"{result.spec.name}/{name}",
                             figure_anchor(*shown_at.get((result.spec.name, name), (result.spec.name, name))))
                   for result in ran for name in result.figures()), "—")
    experiments = [Link(result.spec.name, f"#{result.spec.name}", result.spec.name) for result in results] or ["—"]
    verdict = qualified_verdict(claim_verdict(results), [result.record for result in ran])
    return verdict, [claim.id, claim.seed_file], Prose(claim.summary), shown or ["—"], figure, experiments


def experiment_blocks(result: ExperimentResult, figure_anchors: dict) -> list:
    spec, record = result.spec, result.record
    beyond = getattr(spec, "beyond_the_notes", False)
    blocks = [Heading(3, f"{spec.name} (beyond the notes)" if beyond else spec.name, spec.name),
              Paragraph([Prose(spec.question), " Claims: ", "none — an experiment beyond the notes, not a claim of "
                         "the seeds" if beyond else ", ".join(spec.claims), ". Spec: ",
                         Link(f"experiments/{spec.name}.toml", f"../experiments/{spec.name}.toml"), "; code: ",
                         *_joined([Link(file, f"../{file}") for file in result.code()]), "."])]
    if record is None:
        why = f" (its stored metrics.json is not shown: {result.problem.split(';')[0]})" if result.problem else ""
        return blocks + [Paragraph(["Verdict: ", NOT_YET_RUN, f"{why}. Run it with ",
                                    Code(f"bash scripts/reproduce.sh --only {spec.name}"
                                         + (" --force" if result.problem else "")), "."])]
    verdict = qualified_verdict(record["verdict"], [record])
    blocks.append(Paragraph([f"Verdict: {verdict}. Wall time {record.get('wall_time_s', '?')} s."]))
    rows = [(check["metric"], check["expected"], format_value(check["measured"]), _MARK[check["met"]], check["source"])
            for check in record["checks"]]
    rows += [(e.metric, f"{e.describe()} on {e.dataset}", f"not checked (ran on {record['data']['name']})", "—",
              e.source) for e in unchecked_expectations(result)]
    if rows:
        blocks.append(Table(("metric", "expected", "measured", "met", "source"), rows, css_class="checks"))
    if spec.kind == "training":
        metrics = record["metrics"]
        blocks.append(Paragraph([f"Test accuracy {metrics['test_accuracy']:.4f}, test loss {metrics['test_loss']:.4f} "
                                 f"after {metrics['epochs']} epochs; {metrics['parameters']:,} parameters. Curves: ",
                                 Link("history.csv", f"{spec.name}/history.csv"), "."]))
    else:
        blocks.append(Paragraph(["What it printed (", Link("report.txt", f"{spec.name}/report.txt"), "):"]))
        if result.printed:
            blocks.append(Preformatted(result.printed.rstrip("\n")))
    for name in result.figures():
        first = figure_anchors.get((spec.name, name), (spec.name, name))
        if first == (spec.name, name):
            blocks.append(Figure(f"{spec.name}/{name}", result.caption(name), figure_anchor(spec.name, name),
                                 f"{spec.name}: {name}"))
        else:  # the same picture is already shown in an earlier section
            blocks.append(Paragraph([f"{name}: the same figure as in ",
                                     Link(first[0], f"{first[0]}/{first[1]}", figure_anchor(*first)), "."]))
    blocks.append(Paragraph(["Data: ", data_description(record.get("data"))]))
    blocks.append(Paragraph(["Environment: ", environment_description(record["environment"])]))
    return blocks


def _joined(parts: list, separator: str = ", ") -> list:
    return [item for number, part in enumerate(parts) for item in ((separator, part) if number else (part,))]


def shown_figures(results_root: Path, results: list[ExperimentResult]) -> dict:
    """(experiment, figure name) -> the (experiment, figure name) shown for it: a figure identical, byte for
    byte, to one already shown (the same model.png of three CNN runs) maps to the first."""
    first, anchors = {}, {}
    for result in results:
        for name in result.figures():
            path = Path(results_root) / result.spec.name / name
            try:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError:
                digest = str(path)  # unreadable: rendering reports it
            anchors[(result.spec.name, name)] = first.setdefault(digest, (result.spec.name, name))
    return anchors


def data_description(data: dict | None) -> str:
    if not data:
        return "none (the example builds its own inputs)."
    sizes = ", ".join(f"{data[key]:,} {key.replace('_samples', '')}" for key in
                      ("train_samples", "test_samples", "fit_samples", "validation_samples", "samples") if key in data)
    text = f"{data['name']} ({sizes}) from {data['source']}, SHA-256 {data['sha256'][:16]}…"
    return text + (f"; also {data_description(data['also'])}" if data.get("also") else ".")


def environment_description(env: dict) -> str:
    backend = env.get("keras_backend", "tensorflow")
    names = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}
    gpus = ", ".join(env.get("accelerators") or []) or f"{env['gpus']} GPUs"
    return (f"Python {env['python']}, Keras {env['keras']} on {names.get(backend, backend)} {env.get(backend, '?')}, "
            f"NumPy {env['numpy']}; {env['platform']}, {env['cpu_count']} CPUs, {env['memory_gib']} GiB, {gpus}; "
            f"code revision {env['code_revision']}; command `{env['command']}`.")


def made_by(results: list[ExperimentResult]) -> str:
    """Which code revisions made the stored results: the report changes only when they do (not with every
    commit, as the current revision would make it)."""
    revisions = sorted({r.record["environment"].get("code_revision", "?") for r in results if r.record})
    return f", made by code revision {', '.join(revisions)}" if revisions else ""


def build_report(results_root: Path, claims: list[Claim] | None = None, results=None) -> list:
    claims = claims if claims is not None else load_claims()
    results = results if results is not None else stored_results(results_root)
    anchors = shown_figures(results_root, results)
    by_claim = {claim.id: [r for r in results if claim.id in r.spec.claims] for claim in claims}
    rows = [claim_row(claim, by_claim[claim.id], anchors) for claim in claims]
    bases = [claim_verdict(by_claim[claim.id]) for claim in claims]
    counts = {verdict: bases.count(verdict) for verdict in (*VERDICT_ORDER[::-1], NOT_YET_RUN)}
    unchecked = sum(row[0] != base for row, base in zip(rows, bases, strict=True))
    summary = ", ".join(f"{count} {verdict}" for verdict, count in counts.items())
    if unchecked:
        summary += f" ({unchecked} of them with an expectation their data left unchecked)"
    blocks = [
        Heading(1, "Backprop reproduction suite: report"),
        Paragraph([f"From the stored results in results/ ({artifacts.counted(len(results), 'experiment')}"
                   f"{made_by(results)}). {artifacts.counted(len(claims), 'claim')}: "
                   f"{summary}. Regenerate with ", Code("bash scripts/reproduce.sh"),
                   " (runs what is out of date, then writes this report). Click a figure to see it at full size."]),
        Heading(2, "Claims", "claims"),
        Paragraph(["One row per claim of ", Link("CLAIMS.md", "../experiments/CLAIMS.md"),
                   ". A claim's verdict is failed if any of its experiments failed, else discrepancy explained "
                   "if any explains one, else reproduced; not yet run if none of its experiments has a result."]),
        Table(CLAIMS_HEADER, rows, css_class="claims"),
        Heading(2, "Experiments", "experiments"),
    ]
    for result in results:
        blocks += experiment_blocks(result, anchors)
    return blocks


# ---- rendering ---------------------------------------------------------------------------------------------


def _md_inline(part) -> str:
    if isinstance(part, list):
        return "<br>".join(_md_inline(item) for item in part)
    if isinstance(part, (Link, Thumbnail)):
        return f"[{part.text}]({part.href})"
    if isinstance(part, Code):
        return f"`{part.text}`"
    if isinstance(part, Prose):
        return part.text
    return str(part)


def _md_cell(cell) -> str:
    return _md_inline(cell).replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: list) -> str:
    out = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Paragraph):
            out.append("".join(_md_inline(part) for part in block.parts))
        elif isinstance(block, Table):
            lines = ["| " + " | ".join(block.header) + " |", "|" + " --- |" * len(block.header)]
            lines += ["| " + " | ".join(_md_cell(cell) for cell in row) + " |" for row in block.rows]
            out.append("\n".join(lines))
        elif isinstance(block, Preformatted):
            out.append(f"```text\n{block.text}\n```")
        elif isinstance(block, Figure):
            out.append(f"![{block.title}]({block.path})" + (f"\n\n*{block.caption}*" if block.caption else ""))
    return "\n\n".join(out) + "\n"


_EMPHASIS = [(re.compile(r"\*\*(\S(?:[^*]*\S)?)\*\*"), r"<strong>\1</strong>"),
             (re.compile(r"(?<![\w*])\*(\S(?:[^*]*\S)?)\*(?![\w*])"), r"<em>\1</em>"),
             (re.compile(r"`([^`]+)`"), r"<code>\1</code>")]


def prose_html(text: str) -> str:
    """The inline Markdown CLAIMS.md uses (**strong**, *emphasis*, `code`) as HTML; the rest escaped.
    A lone asterisk (a product, a footnote mark) stays an asterisk."""
    out = html.escape(text, quote=False)
    for pattern, replacement in _EMPHASIS:
        out = pattern.sub(replacement, out)
    return out


def _html_inline(part) -> str:
    if isinstance(part, list):  # a table cell's lines: one block each, so a long line wraps on its own
        return "".join(f'<div class="line">{_html_inline(item)}</div>' for item in part)
    if isinstance(part, Link):
        href = f"#{part.anchor}" if part.anchor else part.href
        return f'<a href="{html.escape(href)}">{html.escape(part.text)}</a>'
    if isinstance(part, Thumbnail):  # its image is the figure's, copied in by _SCRIPT: embedded once
        return (f'<a href="#{html.escape(part.anchor)}"><img class="thumb zoomable" data-figure="'
                f'{html.escape(part.anchor)}" alt="{html.escape(part.text)}"></a>'
                f'<div class="line">{html.escape(part.text)}</div>')
    if isinstance(part, Code):
        return f"<code>{html.escape(part.text)}</code>"
    if isinstance(part, Prose):
        return prose_html(part.text)
    return html.escape(str(part))


def _data_uri(path: Path) -> str:
    kinds = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg"}
    if path.suffix not in kinds:
        raise SpecError(f"{path}: cannot embed a {path.suffix or 'suffix-less'} file as a figure")
    try:
        payload = base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError as error:
        raise SpecError(f"{path}: figure listed in metrics.json but unreadable: {error}") from None
    return f"data:{kinds[path.suffix]};base64,{payload}"


# The claims table fits the window (fixed layout, cells wrap anywhere), verdict first. Japanese quotes in the
# notes need a CJK font: set-up installs IPAGothic; the others are common elsewhere.
_STYLE = """
body { font-family: system-ui, sans-serif, "IPAGothic", "Noto Sans CJK JP", "Hiragino Sans", "Yu Gothic";
       margin: 1.5rem auto; max-width: 1400px; padding: 0 1rem; line-height: 1.4; box-sizing: border-box; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; max-width: 100%; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.5rem; vertical-align: top; text-align: left;
         overflow-wrap: anywhere; }
th { background: #f3f3f3; overflow-wrap: normal; }
table.checks td:nth-child(3), table.checks td:nth-child(4) { white-space: nowrap; }
table.claims { table-layout: fixed; width: 100%; font-size: 0.85rem; }
table.claims th:nth-child(1) { width: 10%; } table.claims th:nth-child(2) { width: 9%; }
table.claims th:nth-child(3) { width: 25%; } table.claims th:nth-child(4) { width: 30%; }
table.claims th:nth-child(5) { width: 13%; } table.claims th:nth-child(6) { width: 13%; }
td .line + .line { margin-top: 0.2rem; }
table.claims td:nth-child(4) .line { padding-left: 1em; text-indent: -1em; }
img.thumb { width: 100%; border: 1px solid #eee; cursor: zoom-in; }
figure { display: inline-block; margin: 0.5rem; vertical-align: top; max-width: 640px; }
figure img { max-width: 100%; border: 1px solid #eee; cursor: zoom-in; }
figcaption { font-size: 0.85rem; color: #444; }
pre { overflow-x: auto; max-width: 100%; font-size: 0.8rem; background: #f6f6f6; padding: 0.5rem; }
#zoom { position: fixed; inset: 0; background: rgba(0, 0, 0, 0.75); overflow: auto; cursor: zoom-out; z-index: 9;
        display: flex; } #zoom[hidden] { display: none; }
#zoom img { margin: auto; background: white; max-width: none; }
.verdict-reproduced { color: #1a7f37; } .verdict-failed { color: #cf222e; font-weight: bold; }
.verdict-discrepancy-explained { color: #9a6700; } .verdict-not-yet-run { color: #777; }
"""

_SCRIPT = """
for (const thumb of document.querySelectorAll("img[data-figure]")) {
  const figure = document.getElementById(thumb.dataset.figure);
  if (figure) thumb.src = figure.querySelector("img").src;
}
const zoom = document.getElementById("zoom");
document.addEventListener("click", (event) => {
  const image = event.target.closest("img.zoomable");
  if (image) { zoom.querySelector("img").src = image.src; zoom.hidden = false; event.preventDefault(); }
  else if (!zoom.hidden) zoom.hidden = true;
});
document.addEventListener("keydown", (event) => { if (event.key === "Escape") zoom.hidden = true; });
"""


def render_html(blocks: list, results_root: Path) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           "<title>Backprop reproduction suite: report</title>", f"<style>{_STYLE}</style></head><body>"]
    for block in blocks:
        if isinstance(block, Heading):
            anchor = f' id="{html.escape(block.anchor)}"' if block.anchor else ""
            out.append(f"<h{block.level}{anchor}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            out.append("<p>" + "".join(_html_inline(part) for part in block.parts) + "</p>")
        elif isinstance(block, Table):
            css_class = f' class="{block.css_class}"' if block.css_class else ""
            out.append(f"<table{css_class}><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in block.header)
                       + "</tr></thead><tbody>")
            for row in block.rows:
                cells = []
                for cell in row:
                    base = next((v for v in (*VERDICT_ORDER, NOT_YET_RUN) if isinstance(cell, str)
                                 and cell.startswith(v)), None)
                    kind = f' class="verdict-{base.replace(" ", "-")}"' if base else ""
                    cells.append(f"<td{kind}>{_html_inline(cell)}</td>")
                out.append("<tr>" + "".join(cells) + "</tr>")
            out.append("</tbody></table>")
        elif isinstance(block, Preformatted):
            out.append(f"<pre>{html.escape(block.text)}</pre>")
        elif isinstance(block, Figure):
            source, title = _data_uri(Path(results_root) / block.path), html.escape(block.title)
            caption = f"<br>{html.escape(block.caption)}" if block.caption else ""
            out.append(f'<figure id="{html.escape(block.anchor)}"><img class="zoomable" src="{source}" alt="{title}">'
                       f"<figcaption><b>{title}</b>{caption}</figcaption></figure>")
    out.append('<div id="zoom" hidden><img alt="the figure at full size"></div>')
    out.append(f"<script>{_SCRIPT}</script></body></html>")
    return "\n".join(out) + "\n"


def write_report(results_root: Path, claims_file: Path = CLAIMS_FILE) -> tuple[Path, Path]:
    """Write results_root/REPORT.md and report.html from what is stored there, unless they already hold
    exactly that; return their paths."""
    results_root = Path(results_root)
    blocks = build_report(results_root, load_claims(claims_file))
    markdown, page = results_root / "REPORT.md", results_root / "report.html"
    artifacts.write_text_if_changed(markdown, render_markdown(blocks))
    artifacts.write_text_if_changed(page, render_html(blocks, results_root))
    return markdown, page
