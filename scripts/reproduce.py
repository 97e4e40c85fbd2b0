"""The main job: train the experiments of a profile (quick by default) and summarise their verdicts."""
import argparse

from backprop_suite.errors import exit_cleanly_on_suite_error
from backprop_suite.experiment import PROFILES
from backprop_suite.reproduce import run_experiments, specs_of_profile, summary_table
from backprop_suite.training import RESULTS_DIR


@exit_cleanly_on_suite_error
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", choices=PROFILES, default="quick",
                        help="quick: minutes on 2 CPU cores; full: each note's exact settings (default: %(default)s)")
    parser.add_argument("--only", action="append", metavar="EXPERIMENT", help="run just this experiment (repeatable)")
    parser.add_argument("--data-path", help="full MNIST as a Keras .npz or IDX folder, for experiments on `mnist`")
    parser.add_argument("--results-dir", default=RESULTS_DIR, help="default: %(default)s")
    args = parser.parse_args(argv)
    records = run_experiments(specs_of_profile(args.profile, args.only), args.results_dir, args.data_path)
    print(f"\n{summary_table(records)}\n\nResults (history.csv, metrics.json, acc.png, loss.png, model.png) "
          f"are in {args.results_dir}/<experiment>/")
    return 0 if all(r["verdict"] != "failed" for r in records) else 1


if __name__ == "__main__":
    raise SystemExit(main())
