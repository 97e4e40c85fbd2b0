"""The bench's arithmetic: ratios are taken within a round, the limit included, on hand-worked rounds."""
import pytest

from backprop_suite import bench

# Two rounds at batch 128; the host ran twice as fast in the second. A training FLOP count of 1e6 per sample
# turns the rounds' matmul rates into limits of 200 and 400 samples/s.
MEASURED = {128: {"samples_per_second": {"train_py": [100.0, 300.0], "tape_step": [125.0, 250.0],
                                         "manual_step": [100.0, 200.0], "torch": [80.0, 250.0]},
                  "matmul_flops_per_second": [2e8, 4e8]}}
FLOPS_PER_SAMPLE = 1e6


def test_the_fraction_of_the_limit_is_the_median_of_each_rounds_own_fraction():
    # 100/200 and 300/400: 0.5 and 0.75, median 0.625; the medians' quotient would be 200/300 = 0.667.
    train_py = bench.summarise(MEASURED, FLOPS_PER_SAMPLE)[128]["train_py"]
    assert train_py["fraction_of_limit"] == pytest.approx(0.625)
    assert train_py["samples_per_second"] == pytest.approx(200.0)


def test_the_headline_ratios_give_the_median_and_range_of_the_within_round_ratios():
    ratios = bench.headline_ratios(MEASURED, FLOPS_PER_SAMPLE)[128]
    suite_over_tape = ratios["suite path ÷ tape step, speed"]  # 100/125 = 0.8, 300/250 = 1.2
    assert (suite_over_tape["median"], suite_over_tape["min"], suite_over_tape["max"]) == pytest.approx((1.0, 0.8, 1.2))
    manual = ratios["manual step ÷ tape step, time"]  # times, so tape's speed over manual's: 1.25 and 1.25
    assert (manual["median"], manual["min"], manual["max"]) == pytest.approx((1.25, 1.25, 1.25))
    assert ratios["suite path ÷ PyTorch, speed"]["median"] == pytest.approx((1.25 + 1.2) / 2)
    assert ratios["suite path, fraction of the float32 limit"]["median"] == pytest.approx(0.625)
    assert "bfloat16 ÷ float32 on the suite path, speed" not in ratios  # train_py_bf16 was not measured


def test_the_throughput_plot_draws_every_configuration_with_its_rounds(tmp_path):
    summary = bench.summarise(MEASURED, FLOPS_PER_SAMPLE)
    results = {"throughput": {str(b): row for b, row in summary.items()}, "limit_samples_per_second": 300.0}
    bench.plot_throughput(results, tmp_path / "bench.png")
    assert (tmp_path / "bench.png").stat().st_size > 10_000
