"""Benchmark (not a test): how long check_gradients takes on each zoo model, up to the ~0.9M-parameter
cifar_convnet (32 finite-difference entries per tensor, 5 directions, float64, batch 8). Writes
results/bench_gradcheck.json and prints a table."""
import argparse
from pathlib import Path

from backprop_suite import cli
from backprop_suite.errors import exit_cleanly_on_suite_error


@exit_cleanly_on_suite_error
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=cli.RESULTS_DIR / "bench_gradcheck.json",
                        help="default: %(default)s")
    args = parser.parse_args(argv)
    cli.load_tensorflow_quietly()
    from backprop_suite import artifacts, bench

    artifacts.require_writable_folder(args.out.parent, "--out")
    from backprop_suite.provenance import environment

    costs = bench.verifier_costs()
    rows = [(name, f"{c['parameters']:,}", "yes" if c["manual"] else "no", f"{c['first_check_s']:.1f}",
             f"{c['repeat_check_s']:.1f}", "PASS" if c["passed"] else "FAIL") for name, c in costs.items()]
    print(artifacts.text_table(("zoo model", "parameters", "manual", "first check, s", "repeat, s", "verdict"), rows))
    artifacts.write_json(args.out, {"question": "How long does the full gradient check of a user's model take?",
                                    "command": "python scripts/bench_gradcheck.py", "costs": costs,
                                    "environment": environment()})
    print(f"wrote {args.out}")
    return 0 if all(c["passed"] for c in costs.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
