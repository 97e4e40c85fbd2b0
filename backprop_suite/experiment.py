"""Experiment specs: TOML files in experiments/, parsed into a typed object that rejects typos.

A spec opens with the question it answers and names the claim IDs it reproduces:

    question = "..."
    claims = ["C003-1"]
    profile = "quick"            # "quick" runs in the main job; "full" is the note's exact setting
    [model]    name = "mnist_cnn", plus the builder's options
    [data]     dataset = "mnist", validation_fraction = 0.1
    [training] optimizer, learning_rate, loss, batch_size, epochs, seed, deterministic
    [[expected]] dataset, metric, at_least | (value, tolerance), source
"""
import hashlib
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from backprop_suite.datasets import DATASET_NAMES
from backprop_suite.errors import SpecError
from models import MODEL_BUILDERS, model_options

EXPERIMENTS_DIR = Path(__file__).resolve().parent.parent / "experiments"
PROFILES = ("quick", "full")
OPTIMIZERS = ("sgd", "adam", "rmsprop")
LOSSES = ("categorical_crossentropy",)
METRICS = ("test_accuracy", "test_loss", "parameters")


@dataclass(frozen=True)
class Expectation:
    dataset: str  # the expectation applies only when this dataset was used
    metric: str
    source: str  # seed file and what it states, or where the number comes from
    at_least: float | None = None
    value: float | None = None
    tolerance: float | None = None

    def describe(self) -> str:
        if self.at_least is not None:
            return f"{self.metric} >= {self.at_least:g}"
        return f"{self.metric} = {self.value:g} ± {self.tolerance:g}"

    def is_met_by(self, measured: float) -> bool:
        if self.at_least is not None:
            return measured >= self.at_least
        return abs(measured - self.value) <= self.tolerance


@dataclass(frozen=True)
class ExperimentSpec:
    name: str  # the file's stem; results go to results/<name>/
    path: Path
    sha256: str  # of the spec file's bytes
    question: str
    claims: tuple[str, ...]
    profile: str
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
    expected: tuple[Expectation, ...] = field(default=())

    def resolved(self) -> dict:
        """Everything that determines the run, as JSON-ready data (path and hash left out)."""
        data = asdict(self)
        del data["path"], data["sha256"]
        return data


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


def load_spec(name_or_path: str | Path) -> ExperimentSpec:
    path = find_spec(str(name_or_path))
    raw = path.read_bytes()
    try:
        table = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise SpecError(f"{path}: not valid TOML: {error}") from None
    return parse_spec(table, path, hashlib.sha256(raw).hexdigest())


def parse_spec(table: dict, path: Path, sha256: str) -> ExperimentSpec:
    where = str(path)
    top = _Table(table, where)
    model, data, training = (_Table(top.take(key, dict), f"{where} [{key}]") for key in ("model", "data", "training"))
    model_name = model.take("name", str, choices=tuple(MODEL_BUILDERS))
    options = dict(model.rest())
    unknown = sorted(set(options) - set(model_options(model_name)))
    if unknown:
        raise SpecError(f"{where} [model]: unknown option(s) {unknown} for {model_name}; "
                        f"it takes: {', '.join(model_options(model_name))}")
    spec = ExperimentSpec(
        name=path.stem, path=path, sha256=sha256,
        question=top.take("question", str),
        claims=tuple(top.take("claims", list)),
        profile=top.take("profile", str, choices=PROFILES),
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
        expected=tuple(_parse_expectation(e, f"{where} [[expected]] #{i + 1}")
                       for i, e in enumerate(top.take("expected", list, default=[]))),
    )
    for table_ in (top, data, training):
        table_.reject_unknown()
    if not 0 < spec.validation_fraction < 1:
        raise SpecError(f"{where} [data]: validation_fraction must be between 0 and 1, got {spec.validation_fraction}")
    for key in ("learning_rate", "batch_size", "epochs"):
        if getattr(spec, key) <= 0:
            raise SpecError(f"{where} [training]: {key} must be positive, got {getattr(spec, key)}")
    if not spec.claims or not all(isinstance(c, str) for c in spec.claims):
        raise SpecError(f"{where}: claims must be a non-empty list of claim IDs such as \"C003-1\"")
    return spec


def _parse_expectation(raw: object, where: str) -> Expectation:
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: must be a table")
    table = _Table(raw, where)
    expectation = Expectation(
        dataset=table.take("dataset", str, choices=DATASET_NAMES),
        metric=table.take("metric", str, choices=METRICS),
        source=table.take("source", str),
        at_least=table.take("at_least", float, default=None),
        value=table.take("value", float, default=None),
        tolerance=table.take("tolerance", float, default=None),
    )
    table.reject_unknown()
    if (expectation.at_least is None) == (expectation.value is None or expectation.tolerance is None):
        raise SpecError(f"{where}: give either at_least, or value and tolerance")
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
