"""Benchmarks (not tests): CNN training throughput against the machine's matmul limit and PyTorch, peak
memory, and what gradients cost. Writes results/bench.json and bench.png; prints the README table."""
import argparse
import time
from pathlib import Path

import numpy as np

from backprop_suite import artifacts, cli
from backprop_suite.errors import exit_cleanly_on_input_error


@exit_cleanly_on_input_error
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch-sizes", type=cli.positive_int, nargs="+", default=[32, 128])
    parser.add_argument("--configs", nargs="+", choices=cli.BENCH_CONFIGS, default=list(cli.BENCH_CONFIGS),
                        help="default: all; `torch` is skipped with a note when PyTorch is not installed")
    parser.add_argument("--rounds", type=cli.positive_int, default=7, help="round-robin rounds (default: %(default)s)")
    parser.add_argument("--skip-memory", action="store_true", help="skip the per-process peak-memory probes")
    parser.add_argument("--skip-gradient-costs", action="store_true", help="skip the ~2-minute gradient costs")
    parser.add_argument("--out", type=Path, default=cli.RESULTS_DIR / "bench.json", help="default: %(default)s")
    args = parser.parse_args(argv)
    artifacts.require_writable_folder(args.out.parent, "--out")
    cli.load_tensorflow_quietly()
    from backprop_suite import bench
    from backprop_suite.models import build_model
    from backprop_suite.provenance import environment

    configs = list(args.configs)
    torch_version = bench.torch_available()
    if "torch" in configs and torch_version is None:
        configs.remove("torch")
        print("[bench] PyTorch is not installed: skipping it (pip install -e '.[torch]' adds torch==2.13.0)")

    x, y, data = bench.training_data()
    bench.check_batch_sizes(args.batch_sizes, len(x), "--batch-sizes")
    start = time.perf_counter()
    flops = bench.forward_flops_per_sample(build_model("mnist_cnn"))
    training_flops = bench.TRAINING_OVER_FORWARD * sum(flops.values())
    print(f"[bench] CNN: {sum(flops.values()) / 1e6:.2f} MFLOP forward, {training_flops / 1e6:.2f} MFLOP training "
          "per sample; the float32 matmul rate, hence the limit, is measured in every round")
    measured = bench.throughput(configs, args.batch_sizes, args.rounds, x, y)
    rates = [r for m in measured.values() for r in m["matmul_flops_per_second"]]
    rate = float(np.median(rates))
    memory = {str(b): {} for b in args.batch_sizes}
    if not args.skip_memory:
        for b in args.batch_sizes:
            for config in configs:
                print(f"[bench] peak memory: {config} at batch {b}", flush=True)
                memory[str(b)][config] = bench.peak_memory_mib(config, b)
    results = {
        "command": "scripts/bench.py " + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
        "matmul_float32_flops_per_second": rate,  # the median of the rounds' rates; each round's is kept below
        "matmul_float32_flops_per_second_by_round": {str(b): m["matmul_flops_per_second"] for b, m in measured.items()},
        "forward_flops_per_sample": flops, "training_flops_per_sample": training_flops,
        "limit_samples_per_second": rate / training_flops,
        "throughput": {str(b): row for b, row in bench.summarise(measured, training_flops).items()},
        "headline_ratios": {str(b): row for b, row in bench.headline_ratios(measured, training_flops).items()},
        "steps_per_measurement": {str(b): m["steps_per_measurement"] for b, m in measured.items()},
        "manual_formulations_seconds": {str(b): m["manual_formulations"] for b, m in measured.items()},
        "peak_memory_mib": memory, "torch": torch_version, "threads": bench.thread_settings(),
        "data": data, "environment": environment(),
    }
    if not args.skip_gradient_costs:
        print("[bench] gradient costs (numerical gradient: 79,520 forward calls, about a minute)", flush=True)
        results["gradient_costs"] = bench.gradient_costs(repeats=20)
    results["wall_time_s"] = round(time.perf_counter() - start, 1)
    artifacts.write_json(args.out, results)
    bench.plot_throughput(results, args.out.with_suffix(".png"))
    print(f"\n{bench.markdown_table(results)}\n\nwrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
