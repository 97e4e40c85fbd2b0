"""Benchmarks: how fast the C003-1 CNN trains here, against the machine's own limit and against PyTorch.

- Limit: the float32 matrix-multiply rate measured on this machine, divided by the model's FLOPs per
  sample (counted per layer: 2 FLOPs per multiply-add of Conv2D and Dense; bias, activation and
  pooling add < 1 %), training ≈ 3 × forward (the backward computes two products per forward one).
  The rate is measured in every round, next to the configurations, since the shared host's speed moves.
- Configurations: the suite's own training path exactly as train.py runs it (`train_py`: the spec's
  compiled model, its shuffled batch pipeline and the per-epoch checkpoint callback; `train_py_bf16`
  the same under precision "mixed_bfloat16"; `train_py_jax` and `train_py_torch` the same on Keras's
  JAX and PyTorch backends, each in a child process that trains on command, so that it takes its turn
  in every round like the others), plain Keras `fit` and `fit` with jit_compile, a custom
  tf.function GradientTape step, the manual-backprop step compiled (and eager, as it ran before), and
  PyTorch when installed. All use Adam (1e-3), categorical cross-entropy, dropout on, float32 unless
  named, the same mnist-5k digits.
- Steady state: a measurement is one whole epoch of those digits, after a warm-up epoch (tracing,
  first allocations), so a `fit` call's fixed cost is counted once per epoch, as in training.
- Side by side: each round runs every configuration once, in turn, so a slow moment on the shared
  machine hits them all; ratios are taken within a round, and the median over rounds reported (for
  HEADLINE_RATIOS, the ratios with goals (docs/benchmarks.md), their range over the rounds too).
- Peak memory: each configuration in its own process, which loads the data, resets the kernel's
  peak-RSS counter, then builds and trains: the peak while training, and its rise over the start.
"""
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from backprop_suite.cli import BENCH_CONFIGS
from backprop_suite.datasets import load_dataset, to_model_inputs
from backprop_suite.models import build_model
from backprop_suite.steps import manual_step, tape_step
from gradcheck.errors import InputError

CONFIGS = BENCH_CONFIGS
TRAINING_OVER_FORWARD = 3
SEED = 0


def matmul_flops_per_second(n: int = 2048, calls: int = 3, repeats: int = 3) -> float:
    """The float32 matrix-multiply rate, best of `repeats` timings of `calls` n×n products (2n³ FLOPs each).

    n = 2048: on the 2-core AMD EPYC (Zen 5) that made results/, 1024² products reach ~90 % of the rate of
    2048² ones (440 against 490 GFLOP/s, about the cores' peak of 64 FLOPs per cycle each), so the smaller
    size would understate the limit."""
    a, b = tf.random.stateless_normal((n, n), (1, 2)), tf.random.stateless_normal((n, n), (3, 4))
    product = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))  # the sum forces the product, costs n²
    product()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            product().numpy()
        best = min(best, (time.perf_counter() - start) / calls)
    return 2 * n**3 / best


def forward_flops_per_sample(model: keras.Model) -> dict[str, int]:
    """Per Conv2D/Dense layer: 2 × multiply-adds for one sample's forward pass."""
    flops = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, c_in, c_out = layer.kernel.shape
            _, h_out, w_out, _ = layer.output.shape
            flops[layer.name] = 2 * kh * kw * c_in * c_out * h_out * w_out
        elif isinstance(layer, keras.layers.Dense):
            fan_in, fan_out = layer.kernel.shape
            flops[layer.name] = 2 * fan_in * fan_out
    return flops


def _fresh_cnn() -> keras.Model:
    keras.utils.set_random_seed(SEED)
    return build_model("mnist_cnn")


BATCHES_PER_CYCLE = 64  # the custom steps cycle through these many batches of the data


def batch_starts(samples: int, batch_size: int) -> list[int]:
    return [(i * batch_size) % (samples - batch_size) for i in range(BATCHES_PER_CYCLE)]


def step_batches(x, y, batch_size: int) -> list:
    """The (x, t) tensors the custom steps cycle through, BATCHES_PER_CYCLE of them."""
    starts = batch_starts(len(x), batch_size)
    return [(tf.constant(x[s:s + batch_size]), tf.constant(y[s:s + batch_size])) for s in starts]


OTHER_BACKEND_CONFIGS = {"train_py_jax": "jax", "train_py_torch": "torch"}  # train_py on another Keras backend


def runner(config: str, batch_size: int, x: np.ndarray, y: np.ndarray):
    """A warmed-up `run(steps) -> seconds` that trains `steps` batches with this configuration."""
    backend = OTHER_BACKEND_CONFIGS.get(config)
    if backend is not None and backend != keras.backend.backend():
        return _child_runner(config, backend, batch_size, len(x))
    if config == "torch":
        return _torch_runner(batch_size, x, y)
    if config.startswith("train_py"):
        return _train_py_runner(batch_size, x, y, "mixed_bfloat16" if config.endswith("bf16") else "float32")
    model = _fresh_cnn()
    optimizer = keras.optimizers.Adam(1e-3)
    if config in ("fit", "fit_jit"):
        model.compile(optimizer=optimizer, loss="categorical_crossentropy", jit_compile=config == "fit_jit")
        data = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(batch_size, drop_remainder=True)

        def run(steps):
            start = time.perf_counter()
            model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
            return time.perf_counter() - start
    else:
        step = {"tape_step": lambda: tape_step(model, optimizer),
                "manual_step": lambda: manual_step(model, optimizer),
                "manual_step_eager": lambda: manual_step(model, optimizer, compiled=False)}[config]()
        batches = step_batches(x, y, batch_size)

        def run(steps):
            start = time.perf_counter()
            for i in range(steps):
                loss = step(*batches[i % len(batches)])
            float(loss)  # wait for the last step
            return time.perf_counter() - start
    run(3)  # tracing, compilation, first allocations
    if config.startswith("manual_step"):
        run.formulations = step.formulations  # which kernel gradient each convolution took (timed at first call)
    return run


BENCH_SPEC = "c003_1_mnist_cnn_quick"  # the C003-1 CNN as the main job trains it (Adam 1e-3)


class _EpochOnCommand(keras.callbacks.Callback):
    """Lets one long `fit`, in a thread of its own, train one epoch per `run()`, as the other configurations do.

    Each epoch waits at its beginning for a command; run() sends one and returns the seconds from it to the next
    epoch's beginning: the epoch with everything train.py's single `fit` call does after it (validation, the
    checkpoint callback) and not the call's own start-up, which train.py pays once per training."""

    def __init__(self):
        super().__init__()
        self.commands, self.seconds = queue.Queue(), queue.Queue()
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        if self._start is not None:
            self.seconds.put(time.perf_counter() - self._start)
        if self.commands.get() is None:
            raise _Stopped
        self._start = time.perf_counter()

    def fit_in_thread(self, fit):
        def target():
            try:
                fit()
            except _Stopped:
                pass
            except BaseException as error:  # noqa: BLE001 - handed to run(), which raises it
                self.seconds.put(error)

        thread = threading.Thread(target=target, daemon=True, name="bench-fit")
        thread.start()

        def run():
            self.commands.put("epoch")
            seconds = self.seconds.get()
            if isinstance(seconds, BaseException):
                raise seconds
            return seconds

        def close():
            self.commands.put(None)
            thread.join()

        run.close = close
        return run


class _Stopped(Exception):
    pass


def _train_py_runner(batch_size: int, x: np.ndarray, y: np.ndarray, precision: str):
    """train.py's training, epoch by epoch (training.fit_epochs in one call of `fit`): the spec's compiled model
    and shuffled batches, the epoch checkpoint (to a temporary folder) and a validation set (a tenth of the
    digits, as train.py holds out) evaluated after each epoch. That evaluation is part of the path's cost; the
    samples/s count the training samples only, as for every configuration. An epoch is the whole batches of
    (x, y), as every configuration measures, so `run(steps)` takes only that number."""
    import tempfile

    from backprop_suite.checkpoint import EpochCheckpoint
    from backprop_suite.experiment import load_spec, with_overrides
    from backprop_suite.pipeline import EpochBatches
    from backprop_suite.training import build_compiled_model, fit_epochs

    spec = with_overrides(load_spec(BENCH_SPEC), batch_size=batch_size, precision=precision)
    keras.utils.set_random_seed(SEED)
    model = build_compiled_model(spec)
    state = tempfile.TemporaryDirectory(prefix="bench-checkpoint-")
    whole = len(x) // batch_size * batch_size
    batches = EpochBatches(x[:whole], y[:whole], batch_size, SEED)
    validation = (x[-len(x) // 10:], y[-len(y) // 10:])
    pacer = _EpochOnCommand()
    callbacks = [EpochCheckpoint(Path(state.name), {"bench": spec.name}), pacer]
    run_epoch = pacer.fit_in_thread(lambda: fit_epochs(model, batches, validation, 0, 10**6, callbacks))

    def run(steps):
        if steps != batches.steps:
            raise ValueError(f"train_py measures whole epochs of {batches.steps} steps, not {steps}")
        return run_epoch()

    run.keep_alive, run.close = state, run_epoch.close  # the folder lives as long as the runner
    run(batches.steps)  # tracing, first allocations
    return run


def _child_runner(config: str, backend: str, batch_size: int, samples: int):
    """`run(steps)` for a configuration on another Keras backend: a child process (python -m backprop_suite.bench
    --serve) builds it there on the first `samples` digits and trains `steps` batches each time it reads a line,
    answering with the seconds."""
    import tempfile

    log = tempfile.TemporaryFile(mode="w+")  # TensorFlow's start-up lines, shown only if the child fails
    command = [sys.executable, "-m", "backprop_suite.bench", "--serve", config, str(batch_size), str(samples)]
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
                             env={**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"})

    def run(steps):
        child.stdin.write(f"{steps}\n")
        child.stdin.flush()
        for line in child.stdout:  # Keras may print other lines first
            if line.startswith("seconds "):
                return float(line.split()[1])
        log.seek(0)
        raise RuntimeError(f"bench: the {backend} process for {config} ended (exit {child.wait()}):\n"
                           f"{log.read()[-2000:]}")

    run.keep_alive = (child, log)  # the child ends when its stdin closes, with the runner
    return run  # the child warms up as it builds; throughput's warm-up epoch waits for it


def _serve(config: str, batch_size: int, samples: int) -> None:
    x, y, _ = training_data()
    run = runner(config, batch_size, x[:samples], y[:samples])
    for line in sys.stdin:
        print(f"seconds {run(int(line))}", flush=True)
    getattr(run, "close", lambda: None)()


def _torch_runner(batch_size: int, x: np.ndarray, y: np.ndarray):
    import torch

    from backprop_suite.models.torch_mnist_cnn import build_torch_mnist_cnn

    torch.manual_seed(SEED)
    torch.set_num_threads(os.cpu_count())
    model = build_torch_mnist_cnn()
    if (count := sum(p.numel() for p in model.parameters())) != _fresh_cnn().count_params():
        raise AssertionError(f"the PyTorch CNN has {count} parameters, not the Keras model's")
    optimizer, loss_fn = torch.optim.Adam(model.parameters(), lr=1e-3), torch.nn.CrossEntropyLoss()
    images = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))  # NHWC -> NCHW
    labels = torch.from_numpy(y.argmax(axis=1))
    starts = batch_starts(len(x), batch_size)
    model.train()

    def run(steps):
        start = time.perf_counter()
        for i in range(steps):
            s = starts[i % len(starts)]
            optimizer.zero_grad()
            loss = loss_fn(model(images[s:s + batch_size]), labels[s:s + batch_size])
            loss.backward()
            optimizer.step()
        loss.item()  # the last step is done
        return time.perf_counter() - start

    run(3)
    return run


def thread_settings() -> dict:
    """How many threads each library may use here (0: TensorFlow decides, one per core)."""
    settings = {"cpu_count": os.cpu_count(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                "XLA_FLAGS": os.environ.get("XLA_FLAGS"),
                "tensorflow_intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                "tensorflow_inter_op": tf.config.threading.get_inter_op_parallelism_threads()}
    if torch_available():
        import torch

        settings["torch"] = torch.get_num_threads()
    return settings


def torch_available() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.__version__


def training_data() -> tuple[np.ndarray, np.ndarray, dict]:
    dataset = load_dataset("mnist-5k")
    x, y = to_model_inputs(dataset.train, (28, 28, 1))
    return x, y, dataset.provenance()


def check_batch_sizes(batch_sizes, samples: int, option: str) -> None:
    """Refused: a batch size the bench's digits cannot fill twice (the custom steps' batches start at offsets
    below samples − batch size, and the suite's path holds a tenth of the digits out)."""
    largest = samples // 2
    for batch_size in batch_sizes:
        if batch_size > largest:
            raise InputError(f"{option} {batch_size}: the bench trains on {samples:,} digits (mnist-5k's training "
                             f"split); give a batch size of at most {largest:,}")


def throughput(configs, batch_sizes, rounds: int, x, y, progress=print) -> dict:
    """Samples per second of each configuration and batch size on (x, y), one whole epoch per measurement
    after a warm-up epoch, measured round-robin, with the float32 matmul rate measured at each round's start;
    every round's values are kept, so ratios (to the limit too) can be taken within a round."""
    measured = {}
    for batch_size in batch_sizes:
        runners = {}
        epoch_steps = len(x) // batch_size  # whole batches: every step costs the same
        for config in configs:
            progress(f"[bench] warming up {config} at batch {batch_size} (one epoch)")
            runners[config] = runner(config, batch_size, x, y)
            runners[config](epoch_steps)
        steps = dict.fromkeys(configs, epoch_steps)
        rows, matmul_rates = {config: [] for config in configs}, []
        for number in range(rounds):
            matmul_rates.append(matmul_flops_per_second())  # this round's limit
            for config, run in runners.items():
                rows[config].append(steps[config] * batch_size / run(steps[config]))
            progress(f"[bench] batch {batch_size}, round {number + 1}/{rounds}: matmul {matmul_rates[-1] / 1e9:.0f} "
                     "GFLOP/s, " + ", ".join(f"{c} {rows[c][-1]:,.0f}/s" for c in configs))
        for run in runners.values():
            getattr(run, "close", lambda: None)()
        measured[batch_size] = {"steps_per_measurement": steps, "samples_per_second": rows,
                                "matmul_flops_per_second": matmul_rates,
                                "manual_formulations": {config: run.formulations for config, run in runners.items()
                                                        if hasattr(run, "formulations")}}
    return measured


def peak_memory_mib(config: str, batch_size: int, steps: int = 20) -> dict:
    """Memory of a fresh process that loads the data, then builds and trains `steps` batches of `config`:
    resident MiB before training, the peak while training, and their difference."""
    command = [sys.executable, "-m", "backprop_suite.bench", "--probe", config, str(batch_size), str(steps)]
    backend = OTHER_BACKEND_CONFIGS.get(config, keras.backend.backend())
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": backend})
    if completed.returncode != 0:
        raise RuntimeError(f"memory probe {config} at batch {batch_size} failed:\n{completed.stderr[-2000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":")) / 1024


def _probe(config: str, batch_size: int, steps: int) -> None:
    x, y, _ = training_data()
    if config == "torch":
        import torch  # noqa: F401  (imported before the reset: the library is not the training's memory)
    before = _status_mib("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # reset the peak (VmHWM) to the current resident size (Linux ≥ 4.0)
    run = runner(config, batch_size, x, y)
    run(len(x) // batch_size if config.startswith("train_py") else steps)  # train_py trains whole epochs
    peak = _status_mib("VmHWM")
    getattr(run, "close", lambda: None)()
    print(json.dumps({"before_mib": before, "peak_mib": peak, "training_mib": peak - before}))


def gradient_costs(repeats: int) -> dict:
    """C000-2, C001-1, C002-2 and the CNN's full-coverage check, by the suite's own experiments' code."""
    from backprop_suite.check_gradients import gradient_batch, gradient_model
    from backprop_suite.worked_examples.gradient_cost import gradient_cost
    from gradcheck.methods import directional_check

    cost = gradient_cost(repeats=repeats).metrics
    rng = np.random.default_rng(SEED)
    model = gradient_model("mnist_cnn", rng)
    x, t, masks, _ = gradient_batch(model, 8, rng)
    check = directional_check(model, x, t, masks, directions=5)
    return {"backprop_over_forward": {name: cost[f"backprop_over_forward_{name}"]
                                      for name in ("net_222", "two_layer_net", "mnist_cnn")},
            "numerical_over_backprop_two_layer_net": cost["numerical_over_backprop"],
            "numerical_gradient_forward_calls": cost["forward_calls"],
            "numerical_gradient_seconds": cost["numerical_seconds"],
            "cnn_directional_check_seconds": check["seconds"], "cnn_directional_check_passed": check["passed"],
            "cnn_parameters_covered": check["parameters"]}


IMAGENET_MODELS = ("ResNet50", "MobileNetV2", "EfficientNetB0", "DenseNet121", "ConvNeXtTiny")  # keras.applications


def bench_model(name: str, batch_size: int = 8):
    """(model, x, y, loss, training) for a benchmarked check: a keras.applications architecture (weights=None, at
    224×224, batch 2, the ImageNet case) or a zoo model (its own loss and mode, batch `batch_size`)."""
    from backprop_suite.models.zoo import ZOO
    from gradcheck.check import random_batch

    keras.utils.set_random_seed(SEED)
    if name in IMAGENET_MODELS:
        model = getattr(keras.applications, name)(weights=None, input_shape=(224, 224, 3))
        return model, *random_batch(model, 2, seed=SEED), None, False
    entry = ZOO[name]
    model = entry.build()
    if name == "subclassed_mlp":  # no symbolic inputs to draw a batch from
        rng = np.random.default_rng(SEED)
        return model, rng.standard_normal((batch_size, 8)), np.eye(4)[rng.integers(0, 4, batch_size)], entry.loss, \
            entry.training
    return model, *random_batch(model, batch_size, entry.loss, SEED), entry.loss, entry.training


def verifier_costs(names, measured=lambda costs: None) -> dict:
    """check_gradients with its defaults on each model, once, as a user runs it (tracing included): its seconds, one
    float64 forward+backward of the model (compiled, steady state, measured by the check in the same process) and
    their ratio, its layer calls and its verdict. measured(costs so far) is called after each model: a long run
    interrupted keeps the models it measured."""
    from gradcheck.check import check_gradients

    costs = {}
    for name in names:
        model, x, y, loss, training = bench_model(name)
        report = check_gradients(model, x, y, loss=loss, training=training)
        cost, layers = report.data["cost"], report.data["layers"]
        costs[name] = {"parameters": report.data["parameters"], "batch": report.data["batch"]["size"],
                       "input_shape": [list(np.shape(a)[1:]) for a in (x if isinstance(x, list) else [x])],
                       "layer_calls": len(layers["calls"]), "check_s": cost["seconds"],
                       "forward_backward_s": cost["forward_backward_seconds"], "passes": cost["passes"],
                       "layers_s": layers.get("seconds"), "directional_s": report.data["directional"]["seconds"],
                       "manual": report.data["three_way"]["manual"]["available"], "passed": report.passed}
        print(f"[bench] {name}: {costs[name]}", flush=True)
        measured(costs)
    return costs


# The ratios with goals (docs/benchmarks.md): (name, numerator config, denominator config, what the ratio is of, goal).
# Speeds are samples/s; "time" ratios invert them. Each is taken within a round.
HEADLINE_RATIOS = (
    ("suite path ÷ tape step, speed", "train_py", "tape_step", "speed", "≥ 0.95 at batch 128"),
    ("suite path ÷ PyTorch, speed", "train_py", "torch", "speed", "≥ 1.3 at batch 128"),
    ("suite path, fraction of the float32 limit", "train_py", "limit", "speed", "≥ 0.60 at batch 128"),
    ("bfloat16 ÷ float32 on the suite path, speed", "train_py_bf16", "train_py", "speed", "≥ 1.6 at batch 128"),
    ("manual step ÷ tape step, time", "manual_step", "tape_step", "time", "≤ 1.2"),
)


def round_limits(result: dict, flops_per_sample: float) -> np.ndarray:
    """Each round's limit in samples/s: that round's matmul rate ÷ the training FLOPs per sample."""
    return np.divide(result["matmul_flops_per_second"], flops_per_sample)


def summarise(measured: dict, flops_per_sample: float) -> dict:
    """Per batch size and configuration: median samples/s, and medians of within-round values: the fraction of
    that round's limit, and the time per sample relative to the tape step's."""
    summary = {}
    for batch_size, result in measured.items():
        rows, limits = result["samples_per_second"], round_limits(result, flops_per_sample)
        configs = {c: {"samples_per_second": float(np.median(v)),
                       "fraction_of_limit": float(np.median(np.divide(v, limits))), "rounds": v}
                   for c, v in rows.items()}
        if "tape_step" in rows:
            for config, values in rows.items():
                configs[config]["time_over_tape_step"] = float(np.median(np.divide(rows["tape_step"], values)))
        summary[batch_size] = configs
    return summary


def headline_ratios(measured: dict, flops_per_sample: float) -> dict:
    """Per batch size, the HEADLINE_RATIOS whose two sides were measured: the median, min and max over the
    rounds of the within-round ratio, and the goal."""
    ratios = {}
    for batch_size, result in measured.items():
        rows = {**result["samples_per_second"], "limit": round_limits(result, flops_per_sample)}
        ratios[batch_size] = {}
        for name, top, bottom, kind, goal in HEADLINE_RATIOS:
            if top in rows and bottom in rows:
                per_round = np.divide(rows[top], rows[bottom])
                if kind == "time":
                    per_round = 1 / per_round
                ratios[batch_size][name] = {"median": float(np.median(per_round)), "min": float(per_round.min()),
                                            "max": float(per_round.max()), "goal": goal}
    return ratios


def markdown_table(bench: dict) -> str:
    """docs/benchmarks.md's table: one row per configuration, samples/s and share of the limit per batch size."""
    batches = list(bench["throughput"])
    header = "| configuration | " + " | ".join(f"batch {b}: samples/s (% of limit, time ÷ tape step)" for b in batches)
    lines = [header + " | memory rise while training, MiB (batch " + ", ".join(batches) + ") |",
             "|" + " --- |" * (len(batches) + 2)]
    for config in bench["throughput"][batches[0]]:
        cells = []
        for b in batches:
            row = bench["throughput"][b][config]
            cells.append(f"{row['samples_per_second']:,.0f} ({100 * row['fraction_of_limit']:.1f} %, "
                         f"{row.get('time_over_tape_step', float('nan')):.2f}×)")
        memory = ", ".join(f"+{bench['peak_memory_mib'][b][config]['training_mib']:,.0f}"
                           if config in bench["peak_memory_mib"][b] else "—" for b in batches)
        lines.append(f"| `{config}` | " + " | ".join(cells) + f" | {memory} |")
    lines += ["", "| within-round ratio | " + " | ".join(f"batch {b}: median (range over the rounds)" for b in batches)
              + " | goal (issue 13) |", "|" + " --- |" * (len(batches) + 2)]
    for name, *_, goal in HEADLINE_RATIOS:
        cells = [bench["headline_ratios"][b].get(name) for b in batches]
        if any(cells):
            lines.append(f"| {name} | " + " | ".join("—" if c is None else f"{c['median']:.2f} ({c['min']:.2f}–"
                                                      f"{c['max']:.2f})" for c in cells) + f" | {goal} |")
    return "\n".join(lines)


def plot_throughput(bench: dict, path) -> None:
    import matplotlib.pyplot as plt

    from backprop_suite import artifacts

    batches = list(bench["throughput"])
    configs = list(bench["throughput"][batches[0]])
    figure, axes = plt.subplots(figsize=(9, 4.5), dpi=100)
    width = 0.8 / len(batches)
    for i, b in enumerate(batches):
        rows = [bench["throughput"][b][c] for c in configs]
        values = [row["samples_per_second"] for row in rows]
        # the median, whiskers to the slowest and the fastest round
        spread = [[row["samples_per_second"] - min(row["rounds"]) for row in rows],
                  [max(row["rounds"]) - row["samples_per_second"] for row in rows]]
        axes.bar(np.arange(len(configs)) + i * width, values, width, yerr=spread, capsize=2, label=f"batch {b}")
    limit = bench["limit_samples_per_second"]
    axes.axhline(limit, color="crimson", linestyle="--", label=f"limit {limit:,.0f}/s (matmul rate ÷ training FLOPs)")
    axes.set_xticks(np.arange(len(configs)) + width * (len(batches) - 1) / 2, configs, rotation=20)
    axes.set(ylabel="training samples / s", ylim=(0, 1.4 * limit),
             title="C003-1 CNN training throughput against this machine's float32 limit\n"
                   "(median of the rounds; whiskers: slowest and fastest round)")
    axes.legend(loc="upper right", ncol=3, fontsize=8)
    axes.grid(axis="y", alpha=0.3)
    artifacts.save_figure(figure, path)


if __name__ == "__main__" and sys.argv[1:2] == ["--probe"]:
    _probe(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
if __name__ == "__main__" and sys.argv[1:2] == ["--serve"]:
    _serve(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
