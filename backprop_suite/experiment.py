"""Experiment specs: TOML files in experiments/, parsed into a typed object that rejects typos.

A spec opens with the question it answers and names the claim IDs it reproduces:

    question = "..."
    claims = ["C003-1"]
    profile = "quick"            # "quick" runs in the main job; "full" is the note's exact setting
    kind = "training"            # or "worked_example"
    outcome = "reproduced"       # what met expectations mean; or "discrepancy explained"
    training:        [model] name + builder options; [data] dataset, validation_fraction;
                     [training] optimizer, learning_rate, loss, batch_size, epochs, seed, deterministic,
                     precision ("float32", or "mixed_bfloat16": bfloat16 compute, float32 weights)
    worked_example:  [example] name (from backprop_suite.worked_examples) + its options
    [[expected]] metric, at_least and/or at_most | value and tolerance, source; for training, the dataset

Parsing needs no Keras: the entry points check a spec (`load_spec(..., registries=False)`) before TensorFlow
loads, so a typo costs no start-up; the model's and example's options are checked against their functions
once the registries are imported.
"""
import dataclasses
import hashlib
import inspect
import math
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from backprop_suite.cli import BACKENDS, PRECISIONS, REGISTRY
from backprop_suite.datasets import DATA_PATH_DATASET, DATASET_NAMES, data_path_for
from backprop_suite.errors import SpecError

EXPERIMENTS_DIR = Path(__file__).resolve().parent.parent / "experiments"
PROFILES = ("quick", "full")
KINDS = ("training", "worked_example")
OUTCOMES = ("reproduced", "discrepancy explained")
OPTIMIZERS = ("sgd", "adam", "rmsprop")  # Keras's, by these names (training.py)
LOSSES = ("categorical_crossentropy",)
METRICS = ("test_accuracy", "test_loss", "parameters")


@dataclass(frozen=True)
class Expectation:
    metric: str
    source: str  # seed file and what it states, or where the number comes from
    dataset: str | None = None  # if set, the expectation applies only when this dataset was used
    at_least: float | None = None
    at_most: float | None = None
    value: float | None = None
    tolerance: float | None = None

    def describe(self) -> str:
        if self.value is not None:
            return f"{self.metric} = {self.value:.12g} ± {self.tolerance:g}"
        bounds = [f"{sign} {bound:g}" for sign, bound in ((">=", self.at_least), ("<=", self.at_most))
                  if bound is not None]
        return f"{self.metric} {' and '.join(bounds)}"

    def is_met_by(self, measured: float) -> bool:
        if self.value is not None:
            return bool(abs(measured - self.value) <= self.tolerance)
        return bool((self.at_least is None or measured >= self.at_least)
                    and (self.at_most is None or measured <= self.at_most))


@dataclass(frozen=True)
class ExperimentSpec:
    name: str  # the file's stem; results go to results/<name>/
    path: Path
    sha256: str  # of the spec file's bytes
    question: str
    claims: tuple[str, ...]
    profile: str
    outcome: str
    model: str
    model_options: dict
    dataset: str
    validation_fraction: float
    optimizer: str
    learning_rate: float
    loss: str
    batch_size: int
    epochs: int
    seed: int
    deterministic: bool
    precision: str = "float32"
    backend: str = "tensorflow"  # Keras's; only train.py --backend (or KERAS_BACKEND) changes it, as a variation
    expected: tuple[Expectation, ...] = field(default=())
    overrides: dict = field(default_factory=dict)  # train.py --epochs etc.: a variation, not the spec's run
    kind = "training"

    def resolved(self) -> dict:
        return resolved(self)


OVERRIDABLE = ("dataset", "epochs", "batch_size", "learning_rate", "precision", "backend")


def with_overrides(spec: ExperimentSpec, **changes) -> ExperimentSpec:
    """The spec with train.py's --dataset/--epochs/--batch-size/--learning-rate/--precision/--backend applied
    (None: keep the spec's).

    The result is a variation, not the spec's own run: its results go to results/<name>+<changes>/ (the
    reference results of <name> stay as a valid run of the spec wrote them), and its verdict is "measured only"."""
    changes = {key: value for key, value in changes.items() if value is not None and value != getattr(spec, key)}
    unknown = sorted(set(changes) - set(OVERRIDABLE))
    if unknown:
        raise SpecError(f"cannot override {unknown}; train.py overrides {', '.join(OVERRIDABLE)}")
    if "dataset" in changes and changes["dataset"] not in DATASET_NAMES:
        raise SpecError(f"--dataset {changes['dataset']!r}: unknown; known: {', '.join(DATASET_NAMES)}")
    if "precision" in changes and changes["precision"] not in PRECISIONS:
        raise SpecError(f"--precision {changes['precision']!r}: unknown; known: {', '.join(PRECISIONS)}")
    if "backend" in changes and changes["backend"] not in BACKENDS:
        raise SpecError(f"--backend {changes['backend']!r}: unknown; known: {', '.join(BACKENDS)}")
    for key in ("epochs", "batch_size", "learning_rate"):
        if key in changes and not (changes[key] > 0 and math.isfinite(changes[key])):
            raise SpecError(f"--{key.replace('_', '-')} {changes[key]}: give a positive, finite number")
    if not changes:
        return spec
    suffix = "+".join(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}"
                      for key, value in changes.items())
    return dataclasses.replace(spec, name=f"{spec.name}+{suffix}", overrides=changes, **changes)


def _registry(key: str) -> tuple[dict, object]:
    """The functions a [model] or [example] table names, and their options (imported on first use: Keras)."""
    if key == "model":
        from backprop_suite.models import MODEL_BUILDERS, model_options
        return MODEL_BUILDERS, model_options
    from backprop_suite.worked_examples import WORKED_EXAMPLES, example_options
    return WORKED_EXAMPLES, example_options


def find_spec(name_or_path: str) -> Path:
    """A spec path from an experiment name (a file stem in experiments/) or a path to a .toml file."""
    path = Path(name_or_path)
    if path.suffix == ".toml":
        if not path.is_file():
            raise SpecError(f"{path}: spec file not found")
        return path
    candidate = EXPERIMENTS_DIR / f"{name_or_path}.toml"
    if candidate.is_file():
        return candidate
    known = ", ".join(sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.toml")))
    raise SpecError(f"unknown experiment {name_or_path!r}; known: {known} (or give a path to a .toml spec)")


def load_spec(name_or_path: str | Path, registries: bool = True) -> ExperimentSpec:
    """The spec, checked. Its results go to results/<name>/; a spec file elsewhere that bears the name of one in
    experiments/ (an edited copy) is not that experiment: its name is <name>+spec=<its SHA-256, 12 digits>, so
    its results never replace the experiment's reference results. registries=False: everything but the model's
    and example's options is checked, without importing Keras."""
    path = find_spec(str(name_or_path))
    try:
        raw = path.read_bytes()
        table = tomllib.loads(raw.decode("utf-8"))
    except OSError as error:
        raise SpecError(f"{path}: cannot read it ({error.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise SpecError(f"{path}: not valid TOML: {error}") from None
    sha256 = hashlib.sha256(raw).hexdigest()
    spec = parse_spec(table, path, sha256, registries)
    own = EXPERIMENTS_DIR / f"{path.stem}.toml"
    if own.is_file() and own.resolve() != path.resolve():
        spec = dataclasses.replace(spec, name=f"{path.stem}+spec={sha256[:12]}")
    return spec


def select_specs(full: bool = False, only: list[str] | None = None, data_path: str | None = None,
                 registries: bool = True) -> list:
    """Exactly the experiments named in `only`; else every spec in experiments/ (full) or the quick ones.
    A `data_path` (full MNIST) must reach one of them, else it would be silently ignored: SpecError.
    registries=False: checked before TensorFlow loads (experiment.load_spec)."""
    if only:
        specs = [load_spec(name, registries) for name in only]
    else:
        specs = [load_spec(path, registries) for path in sorted(EXPERIMENTS_DIR.glob("*.toml"))]
        specs = specs if full else [spec for spec in specs if spec.profile == "quick"]
    if data_path is not None and not any(data_path_for(getattr(s, "dataset", None), data_path) for s in specs):
        users = [spec.stem for spec in sorted(EXPERIMENTS_DIR.glob("*.toml"))
                 if getattr(load_spec(spec, registries=False), "dataset", None) == DATA_PATH_DATASET]
        raise SpecError(f"--data-path {data_path}: it gives full MNIST, for the experiments on {DATA_PATH_DATASET}, "
                        f"and none of the selected ones trains on it; add --full, or --only {' --only '.join(users)}")
    return specs


@dataclass(frozen=True)
class WorkedExampleSpec:
    name: str
    path: Path
    sha256: str
    question: str
    claims: tuple[str, ...]
    profile: str
    outcome: str
    example: str  # a name in backprop_suite.worked_examples.WORKED_EXAMPLES
    options: dict
    expected: tuple[Expectation, ...] = field(default=())
    beyond_the_notes: bool = False  # an experiment the suite adds, checking no claim of the seeds
    kind = "worked_example"

    def resolved(self) -> dict:
        return resolved(self)


def resolved(spec) -> dict:
    """Everything that determines a run, as JSON-ready data (the file's path and hash left out)."""
    data = asdict(spec)
    del data["path"], data["sha256"]
    return data


def parse_spec(table: dict, path: Path, sha256: str, registries: bool = True) -> ExperimentSpec | WorkedExampleSpec:
    where = str(path)
    top = _Table(table, where)
    if top.take("kind", str, default="training", choices=KINDS) == "worked_example":
        return _parse_worked_example(top, path, sha256, registries)
    data, training = (_Table(top.take(key, dict), f"{where} [{key}]") for key in ("data", "training"))
    model_name, options = _name_and_options(top, "model", registries, names=REGISTRY)
    spec = ExperimentSpec(
        name=path.stem, path=path, sha256=sha256,
        question=top.take("question", str),
        claims=tuple(top.take("claims", list)),
        profile=top.take("profile", str, choices=PROFILES),
        outcome=top.take("outcome", str, default="reproduced", choices=OUTCOMES),
        model=model_name, model_options=options,
        dataset=data.take("dataset", str, choices=DATASET_NAMES),
        validation_fraction=data.take("validation_fraction", float, default=0.1),
        optimizer=training.take("optimizer", str, choices=OPTIMIZERS),
        learning_rate=training.take("learning_rate", float),
        loss=training.take("loss", str, choices=LOSSES),
        batch_size=training.take("batch_size", int),
        epochs=training.take("epochs", int),
        seed=training.take("seed", int),
        deterministic=training.take("deterministic", bool, default=True),
        precision=training.take("precision", str, default="float32", choices=PRECISIONS),
        expected=_parse_expectations(top, where, METRICS),
    )
    for table_ in (top, data, training):
        table_.reject_unknown()
    if not 0 < spec.validation_fraction < 1:
        raise SpecError(f"{where} [data]: validation_fraction must be between 0 and 1, got {spec.validation_fraction}")
    for key in ("learning_rate", "batch_size", "epochs"):
        if not getattr(spec, key) > 0 or not math.isfinite(getattr(spec, key)):  # nan and inf fail too
            raise SpecError(f"{where} [training]: {key} must be a positive finite number, got {getattr(spec, key)}")
    if not 0 <= spec.seed < 2**32:
        raise SpecError(f"{where} [training]: seed must be in [0, 2**32) (NumPy's and Keras's seed range), "
                        f"got {spec.seed}")
    _check_claims(spec)
    return spec


def _parse_worked_example(top: "_Table", path: Path, sha256: str, registries: bool) -> WorkedExampleSpec:
    where = str(path)
    name, options = _name_and_options(top, "example", registries)
    spec = WorkedExampleSpec(
        name=path.stem, path=path, sha256=sha256, question=top.take("question", str),
        claims=tuple(top.take("claims", list)), profile=top.take("profile", str, choices=PROFILES),
        outcome=top.take("outcome", str, default="reproduced", choices=OUTCOMES),
        example=name, options=options, expected=_parse_expectations(top, where, None),
        beyond_the_notes=top.take("beyond_the_notes", bool, default=False))
    top.reject_unknown()
    _check_claims(spec)
    return spec


def _name_and_options(top: "_Table", key: str, registries: bool, names: tuple | None = None) -> tuple[str, dict]:
    """A [model] or [example] table: `name` picks a registered function, other keys are its options (checked
    against the function's signature with `registries`; without, the name against `names` if given)."""
    table = _Table(top.take(key, dict), f"{top.where} [{key}]")
    if not registries:
        return table.take("name", str, choices=names), dict(table.rest())
    registry, options_of = _registry(key)
    name = table.take("name", str, choices=tuple(registry))
    options = dict(table.rest())
    defaults = options_of(name)
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise SpecError(f"{table.where}: unknown option(s) {unknown} for {name}; "
                        f"it takes: {', '.join(defaults)}")
    for option, value in options.items():  # checked against the function's defaults, so its own errors are bugs
        default = defaults[option]
        expected = float if isinstance(default, float) else (list, tuple) if isinstance(default, (list, tuple)) \
            else type(default)
        if default is not None and default is not inspect.Parameter.empty and not (
                isinstance(value, expected) and isinstance(value, bool) == isinstance(default, bool)
                or expected is float and isinstance(value, int) and not isinstance(value, bool)):
            raise SpecError(f"{table.where}: {option} must be {type(default).__name__} like its default {default!r}, "
                            f"got {type(value).__name__} {value!r}")
    return name, options


def _check_claims(spec) -> None:
    if getattr(spec, "beyond_the_notes", False):
        if spec.claims:
            raise SpecError(f"{spec.path}: an experiment beyond the notes checks no claim: give claims = [] or drop "
                            "beyond_the_notes")
        return
    if not spec.claims or not all(isinstance(c, str) for c in spec.claims):
        raise SpecError(f"{spec.path}: claims must be a non-empty list of claim IDs such as \"C003-1\" (or, for an "
                        "experiment the suite adds, claims = [] with beyond_the_notes = true)")


def _parse_expectations(top: "_Table", where: str, metrics: tuple[str, ...] | None) -> tuple[Expectation, ...]:
    return tuple(_parse_expectation(e, f"{where} [[expected]] #{i + 1}", metrics)
                 for i, e in enumerate(top.take("expected", list, default=[])))


def _parse_expectation(raw: object, where: str, metrics: tuple[str, ...] | None) -> Expectation:
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: must be a table")
    table = _Table(raw, where)
    expectation = Expectation(
        dataset=table.take("dataset", str, default=None, choices=DATASET_NAMES),
        metric=table.take("metric", str, choices=metrics),
        source=table.take("source", str),
        at_least=table.take("at_least", float, default=None),
        at_most=table.take("at_most", float, default=None),
        value=table.take("value", float, default=None),
        tolerance=table.take("tolerance", float, default=None),
    )
    table.reject_unknown()
    for key in ("at_least", "at_most", "value", "tolerance"):
        number = getattr(expectation, key)
        if number is not None and not math.isfinite(number):
            raise SpecError(f"{where}: {key} must be a finite number, got {number}")
    if expectation.tolerance is not None and expectation.tolerance < 0:
        raise SpecError(f"{where}: tolerance must be >= 0, got {expectation.tolerance}")
    bounded = expectation.at_least is not None or expectation.at_most is not None
    exact = expectation.value is not None and expectation.tolerance is not None
    if bounded == exact or (not exact and (expectation.value, expectation.tolerance) != (None, None)):
        raise SpecError(f"{where}: give at_least and/or at_most, or value and tolerance")
    return expectation


_REQUIRED = object()


class _Table:
    """A TOML table read key by key, so that leftover (misspelt) keys can be rejected."""

    def __init__(self, data: dict, where: str):
        self.data, self.where, self.taken = data, where, set()

    def take(self, key, kind, default=_REQUIRED, choices=None):
        self.taken.add(key)
        if key not in self.data:
            if default is _REQUIRED:
                raise SpecError(f"{self.where}: missing key {key!r}")
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise SpecError(f"{self.where}: {key} must be {kind.__name__}, got {type(value).__name__} {value!r}")
        if choices is not None and value not in choices:
            raise SpecError(f"{self.where}: {key} = {value!r} is not one of {', '.join(choices)}")
        return value

    def rest(self) -> dict:
        rest = {k: v for k, v in self.data.items() if k not in self.taken}
        self.taken.update(rest)
        return rest

    def reject_unknown(self) -> None:
        unknown = sorted(set(self.data) - self.taken)
        if unknown:
            raise SpecError(f"{self.where}: unknown key(s) {unknown}")
