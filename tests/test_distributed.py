"""Data-parallel backprop computes the single-device gradient: on 2 logical CPU devices (MirroredStrategy)
and in 2 worker processes on 127.0.0.1 (MultiWorkerMirroredStrategy). Each runs in its own process:
logical devices and a cluster must be set up before TensorFlow's runtime starts."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from conftest import REPO_ROOT, run_child, tiny_spec

pytestmark = pytest.mark.full  # worker processes, 15-60 s each: scripts/test.sh --all

TRAIN = str(REPO_ROOT / "scripts" / "train.py")
CHECK = str(REPO_ROOT / "scripts" / "check_distributed.py")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "BACKPROP_SUITE_OFFLINE": "1"}
WORKER_TIME_LIMIT_S = 300


def run(args, timeout=600):
    return run_child([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=ENV)


def test_two_devices_compute_the_one_device_gradient_and_the_same_sgd_steps(tmp_path):
    done = run([CHECK, "--devices", "2", "--results-dir", tmp_path])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    stored = json.loads((tmp_path / "distributed" / "equivalence.json").read_text())
    reports = {report["model"]: report for report in stored["reports"]}
    assert set(reports) == {"two_layer_net", "mnist_cnn"}
    assert reports["mnist_cnn"]["dropout_masks"] == ["dropout1", "dropout2"]  # the same masks, sliced per replica
    for report in reports.values():
        assert report["replicas"] == 2 and report["dtype"] == "float64"
        assert report["max_gradient_relative_difference"] <= 1e-12
        assert report["max_weight_relative_difference_after_steps"] <= 1e-10


def test_replicas_that_forget_their_share_of_the_mean_fail_the_check(tmp_path):
    """The check can fail: replicas differentiating their local mean instead of their share (local/global)
    of the global mean sum to twice the gradient on 2 replicas."""
    mutation = ("import runpy, sys\nimport backprop_suite.equivalence as d\noriginal = d.reference_loss\n"
                "d.reference_loss = lambda *a, **k: 2 * original(*a, **k)  # = the local mean, on 2 equal halves\n"
                f"sys.argv = ['check', '--models', 'two_layer_net', '--results-dir', {str(tmp_path)!r}]\n"
                f"runpy.run_path({CHECK!r}, run_name='__main__')\n")
    done = run(["-c", mutation])
    assert done.returncode == 1 and "FAIL" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]


def test_train_with_mirrored_strategy_learns_what_one_device_learns(tmp_path):
    """train.py --strategy mirrored: Keras fit on 2 logical CPU devices, each batch split over them."""
    spec = spec_file(tmp_path, epochs=2)
    mirrored = run([TRAIN, spec, "--strategy", "mirrored", "--cpu-devices", "2", "--results-dir", tmp_path / "m"])
    single = run([TRAIN, spec, "--results-dir", tmp_path / "s"])
    assert mirrored.returncode == 0 and single.returncode == 0, mirrored.stderr[-1500:] + single.stderr[-1500:]
    assert "MirroredStrategy, 2 replicas" in mirrored.stdout
    record = json.loads((tmp_path / "m" / "two_workers" / "metrics.json").read_text())
    assert record["strategy"] == {"name": "MirroredStrategy", "replicas": 2}
    rows = [(tmp_path / d / "two_workers" / "history.csv").read_text().splitlines()[1:] for d in ("m", "s")]
    for row, reference in zip(*rows, strict=True):  # float32: the batch sum split in two, then re-added
        assert np.allclose([float(v) for v in row.split(",")], [float(v) for v in reference.split(",")], rtol=1e-5)


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def spec_file(tmp_path, epochs: int):
    """TwoLayerNet (784-32-10) with plain SGD on mnist-5k, batch 100: 36 steps per epoch."""
    return tiny_spec(tmp_path, "two_workers", epochs=epochs, optimizer="sgd", learning_rate=0.1, batch_size=100).path


def launch_workers(spec, tmp_path, count=2) -> list[tuple[subprocess.Popen, object]]:
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(count)]}
    workers = []
    for index in range(count):
        log = open(tmp_path / f"worker{index}.log", "w")  # closed by finish()
        config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        workers.append((subprocess.Popen(
            [sys.executable, TRAIN, str(spec), "--strategy", "multiworker", "--results-dir", str(tmp_path / "results"),
             "--save-weights", str(tmp_path / "worker{worker}.weights.h5")],
            stdout=log, stderr=subprocess.STDOUT, env={**ENV, "TF_CONFIG": config}), log))
    return workers


def finish(workers, timeout) -> list[int]:
    """Each worker's exit code; a worker still running after `timeout` seconds is killed and fails the test."""
    deadline, codes = time.monotonic() + timeout, []
    for process, log in workers:
        try:
            codes.append(process.wait(timeout=max(1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            for other, _ in workers:
                other.kill()
            pytest.fail(f"a worker was still running after {timeout} s, its safety limit, far above its usual time "
                        "(15-60 s): it hangs, or this machine is much slower or busier than usual", pytrace=False)
        finally:
            log.close()
    return codes


def weights(path) -> list[np.ndarray]:
    arrays = []
    with h5py.File(path) as file:
        file.visit(lambda name: arrays.append(np.array(file[name])) if isinstance(file[name], h5py.Dataset) else None)
    return arrays


def test_two_workers_end_with_identical_weights_that_match_one_process(tmp_path):
    spec = spec_file(tmp_path, epochs=2)
    workers = launch_workers(spec, tmp_path)
    codes = finish(workers, WORKER_TIME_LIMIT_S)
    logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], "\n".join(log[-1500:] for log in logs)
    single = run([TRAIN, spec, "--results-dir", tmp_path / "single", "--save-weights", tmp_path / "single.weights.h5"])
    assert single.returncode == 0, single.stderr[-2000:]

    worker0, worker1, one = (weights(tmp_path / f"{n}.weights.h5") for n in ("worker0", "worker1", "single"))
    assert len(worker0) == len(one) >= 4
    assert all(np.array_equal(a, b) for a, b in zip(worker0, worker1, strict=True))  # one all-reduced update
    # float32: the two half-batch sums are added in another order than one device's sum; 72 SGD steps keep
    # the difference at rounding level (measured 2e-7 relative).
    assert all(np.max(np.abs(a - b)) <= 1e-5 * np.max(np.abs(b)) for a, b in zip(worker0, one, strict=True))
    chief = (tmp_path / "results" / "two_workers" / "history.csv").read_text().splitlines()
    alone = (tmp_path / "single" / "two_workers" / "history.csv").read_text().splitlines()
    for row, reference in zip(chief[1:], alone[1:], strict=True):
        assert np.allclose([float(v) for v in row.split(",")], [float(v) for v in reference.split(",")], rtol=1e-5)
    assert "CollectiveAllReduceStrategy, 2 replicas, this is worker 1" in logs[1]


def test_surviving_worker_reports_a_killed_peer_and_both_resume_when_restarted(tmp_path):
    spec = spec_file(tmp_path, epochs=20)
    workers = launch_workers(spec, tmp_path)
    log0 = tmp_path / "worker0.log"
    deadline = time.monotonic() + WORKER_TIME_LIMIT_S
    while "Epoch 2/" not in log0.read_text() and time.monotonic() < deadline and workers[0][0].poll() is None:
        time.sleep(0.5)
    assert "Epoch 2/" in log0.read_text(), log0.read_text()[-2000:]
    workers[1][0].kill()
    killed_at = time.monotonic()
    codes = finish(workers[:1], timeout=180)
    workers[1][0].wait()
    workers[1][1].close()
    text = log0.read_text()
    assert codes == [2], text[-2000:]
    assert "error: a worker of the cluster failed or cannot be reached" in text
    assert "run the same command again on every worker to resume" in text
    assert time.monotonic() - killed_at < 180
    assert (tmp_path / "results" / "two_workers" / ".in_progress" / "state.json").is_file()

    restarted = launch_workers(spec, tmp_path)  # the same command on every worker, as the message says
    codes = finish(restarted, WORKER_TIME_LIMIT_S)
    logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], "\n".join(log[-1500:] for log in logs)
    assert all("resuming after epoch" in log for log in logs)
    worker0, worker1 = (weights(tmp_path / f"worker{i}.weights.h5") for i in range(2))
    assert all(np.array_equal(a, b) for a, b in zip(worker0, worker1, strict=True))
    history = (tmp_path / "results" / "two_workers" / "history.csv").read_text().splitlines()
    assert [int(row.split(",")[0]) for row in history[1:]] == list(range(1, 21))
    # The resumed cluster ends where a run never interrupted ends: one process, the same global batches.
    alone = run([TRAIN, spec, "--results-dir", tmp_path / "alone"])
    assert alone.returncode == 0, alone.stderr[-2000:]
    reference = (tmp_path / "alone" / "two_workers" / "history.csv").read_text().splitlines()
    for row, expected in zip(history[1:], reference[1:], strict=True):  # float32, 20 epochs: sums split in two
        assert np.allclose([float(v) for v in row.split(",")], [float(v) for v in expected.split(",")], rtol=1e-4)


@pytest.mark.parametrize("tf_config, message", [
    (None, "--strategy multiworker needs TF_CONFIG"),
    ("{not json", "TF_CONFIG is not a cluster spec"),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}',
     "is not one of the 2 workers in cluster.worker"),
    ('{"cluster": {"chief": ["a:1"]}, "task": {"type": "chief", "index": 0}}', "TF_CONFIG is not a cluster spec"),
    ('{"cluster": {"worker": "127.0.0.1:2222"}, "task": {"type": "worker", "index": 0}}',
     "cluster.worker must be a list of \"host:port\" addresses"),
    ('{"cluster": {"worker": ["127.0.0.1:99999", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 0}}',
     "'127.0.0.1:99999' is not \"host:port\" with a port in 1-65535"),
    ('{"cluster": {"worker": ["127.0.0.1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 0}}',
     "'127.0.0.1' is not \"host:port\""),
])
def test_bad_tf_config_is_one_line_naming_what_is_wrong(tmp_path, tf_config, message):
    env = {key: value for key, value in ENV.items() if key != "TF_CONFIG"}
    if tf_config is not None:
        env["TF_CONFIG"] = tf_config
    done = run_child([sys.executable, TRAIN, str(spec_file(tmp_path, epochs=1)), "--strategy", "multiworker"],
                     capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr[-1500:]


def test_a_killed_mirrored_run_with_adam_resumes_when_run_again(tmp_path):
    """Adam has slot variables: restoring them must happen inside the strategy's scope (it once crashed with
    "Need to be inside strategy.scope()"). Killed after an epoch, the same command resumes and ends as a run
    never interrupted."""
    spec = tiny_spec(tmp_path, "mirrored", epochs=12).path  # Adam, batch 64
    command = [sys.executable, TRAIN, str(spec), "--strategy", "mirrored", "--cpu-devices", "2"]
    state = tmp_path / "killed" / "mirrored" / ".in_progress" / "state.json"
    process = subprocess.Popen([*command, "--results-dir", str(tmp_path / "killed")], env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + WORKER_TIME_LIMIT_S
    while not (state.exists() and json.loads(state.read_text())["epochs_done"] >= 1):
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.1)
    process.kill()
    process.wait()
    resumed = run_child([*command, "--results-dir", str(tmp_path / "killed")], env=ENV, capture_output=True,
                        text=True, timeout=WORKER_TIME_LIMIT_S)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming after epoch" in resumed.stdout
    alone = run_child([*command, "--results-dir", str(tmp_path / "alone")], env=ENV, capture_output=True,
                      text=True, timeout=WORKER_TIME_LIMIT_S)
    assert alone.returncode == 0, alone.stderr[-2000:]
    rows = [(tmp_path / run_ / "mirrored" / "history.csv").read_text().splitlines() for run_ in ("killed", "alone")]
    assert len(rows[0]) == len(rows[1]) == 13
    for row, reference in zip(rows[0][1:], rows[1][1:], strict=True):
        assert np.allclose([float(v) for v in row.split(",")], [float(v) for v in reference.split(",")], rtol=1e-5)


def launch_alone(tmp_path, *extra):
    """Worker 0 of a two-worker cluster whose worker 1 never starts."""
    config = json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]},
                         "task": {"type": "worker", "index": 0}})
    return subprocess.Popen([sys.executable, TRAIN, str(spec_file(tmp_path, epochs=1)), "--strategy", "multiworker",
                             "--results-dir", str(tmp_path / "results"), *extra], env={**ENV, "TF_CONFIG": config},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_worker_whose_peer_never_starts_says_so_while_waiting_and_gives_up_after_its_timeout(tmp_path):
    process = launch_alone(tmp_path, "--peer-timeout", "12")
    start = time.monotonic()
    try:
        out, err = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("a worker told to wait 12 s for its peer was still running after 300 s: it does not give up",
                    pytrace=False)
    waited = time.monotonic() - start
    assert process.returncode == 2 and waited < 150, f"it gave up after {waited:.0f} s, not about 12 s"
    assert "[cluster] waiting for worker 1 at 127.0.0.1:" in out
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: a worker of the cluster failed or cannot be reached (no cluster after")
    assert "--peer-timeout" in last and "Traceback" not in err


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_waiting_worker_ends_at_once_on_sigterm_or_ctrl_c(tmp_path, stop):
    process = launch_alone(tmp_path, "--peer-timeout", "300")
    assert process.stdout.readline().startswith("[cluster] waiting for worker 1")  # it is waiting now
    process.send_signal(stop)
    try:
        _, err = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"{stop.name} did not end a worker waiting for its cluster within 120 s (it ends in about a "
                    "second)", pytrace=False)
    assert process.returncode == 128 + stop and f"stopped by {stop.name}" in err
