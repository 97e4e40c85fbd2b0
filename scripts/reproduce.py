"""The main job: run the experiments whose results are out of date, summarise the verdicts, and write
results/REPORT.md and results/report.html (every claim with its verdict)."""
import argparse
import os
from pathlib import Path

from backprop_suite import cli
from backprop_suite.artifacts import require_writable_folder
from backprop_suite.errors import exit_cleanly_on_input_error
from backprop_suite.experiment import select_specs
from gradcheck.errors import InputError


@exit_cleanly_on_input_error
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full", action="store_true",
                        help="every experiment, including the note-exact training runs on full data (about 10 "
                             "minutes more on 2 CPU cores); default: the quick profile, about 5 minutes")
    parser.add_argument("--only", action="append", metavar="EXPERIMENT", help="run just this experiment (repeatable)")
    parser.add_argument("--force", action="store_true",
                        help="rerun the selected experiments from scratch, up to date or not (an interrupted run of "
                             "one is discarded)")
    parser.add_argument("--data-path", help="full MNIST as a Keras .npz or IDX folder: used by the experiments on "
                                             "`mnist` (with --full, or --only one of them), by no other")
    parser.add_argument("--results-dir", type=Path, default=cli.RESULTS_DIR, help="default: %(default)s")
    args = parser.parse_args(argv)
    require_writable_folder(args.results_dir, "--results-dir")
    select_specs(args.full, args.only, args.data_path, registries=False)  # a spec's typo: before TensorFlow loads
    if cli.select_backend(None) != cli.DEFAULT_BACKEND:
        raise InputError(f"KERAS_BACKEND={os.environ['KERAS_BACKEND']}: the reference results are made on TensorFlow "
                         "(the cross-backend experiment runs the other backends itself); unset KERAS_BACKEND, or train "
                         "one experiment on another backend with scripts/train.py NAME --backend NAME")
    cli.load_tensorflow_quietly()
    from backprop_suite.report import write_report
    from backprop_suite.reproduce import run_experiments, summary_table

    records = run_experiments(select_specs(args.full, args.only, args.data_path), args.results_dir, args.data_path,
                              args.force)
    markdown, page = write_report(args.results_dir)
    print(f"\n{summary_table(records)}\n\nReport: {markdown} and {page} (one file, plots embedded). "
          f"Per experiment: {args.results_dir}/<experiment>/ (metrics.json, history.csv, acc.png, loss.png, ...)")
    return 0 if all(r["verdict"] != "failed" for r in records) else 1


if __name__ == "__main__":
    raise SystemExit(main())
