"""--strategy: two MultiWorkerMirroredStrategy workers on 127.0.0.1, mirrored / one-device on the CPU,
TF_CONFIG errors, and the hand-driven training loop (fit_distributed) against model.fit's contract."""

import json
import os
import re
import socket
import subprocess
import sys

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from deeplense_tf.training import distributed

from deeplense_tf import train
from deeplense_tf.training.batchnorm import batch_norm_layers
import deeplense_tf.api  # noqa: F401  (registers the layers, schedules and losses for load_model)
from deeplense_tf.config import RunConfig, replace
from deeplense_tf.errors import ConfigError

COMMON = ["--arch", "mobilenet_v3_small", "--task", "classification", "--samples", "12", "--batch-size", "4",
          "--workers", "2", "--image-size", "32"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tf_config(index: int, ports: list[int], chief: bool = False) -> str:
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    if chief:
        cluster = {"chief": cluster["worker"][:1], "worker": cluster["worker"][1:]}
    return json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})


@pytest.mark.slow  # 80 s on 2 idle cores: the default suite keeps the mirrored and one-device runs
def test_two_workers_train_in_step_and_only_the_chief_writes(sim_cache, tmp_path):
    from deeplense_tf.data.prepare import prepare_data

    prepare_data(replace(RunConfig(), data={"samples": 12}))  # simulate once, before two processes read it
    ports = [_free_port(), _free_port()]
    procs = []
    for i in range(2):
        env = {**os.environ, "TF_CONFIG": _tf_config(i, ports)}
        argv = [sys.executable, "-m", "deeplense_tf.train", *COMMON, "--epochs", "2", "--strategy", "multiworker",
                "--class-weights", "balanced", "--out", str(tmp_path / f"w{i}")]
        procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env))
    try:
        outs = [p.communicate(timeout=420)[0] for p in procs]  # ~2 min on an idle 2-core machine
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], "\n-----\n".join(o[-3000:] for o in outs)
    # The same epoch lines on both: all-reduced loss and metrics, identical step for step (each
    # worker's own timings, epoch_seconds, step_ms, ..._seconds, left out).
    epochs = [[re.sub(r"(\w+_seconds|step_ms): \S+( - |$)", "", line) for line in re.findall(r"(?m)^\d+/\d+ - .*?step - (.*)$", o)]
              for o in outs]
    assert len(epochs[0]) == 2 and epochs[0] == epochs[1], epochs
    (chief,), (worker,) = [list((tmp_path / f"w{i}").iterdir()) for i in range(2)]
    for name in ("checkpoints/last.keras", "checkpoints/best.keras", "export/saved_model", "metrics.json"):
        assert (chief / name).exists() and not (worker / name).exists(), name
    assert pd.read_csv(chief / "history.csv")["epoch"].tolist() == [0, 1]
    assert json.loads((chief / "checkpoints" / "state.json").read_text())["epochs_done"] == 2
    assert json.loads((worker / "config.json").read_text())["train"]["strategy"] == "multiworker"
    # BatchNorm recalibrated (the default 20 batches): MobileNetV3's averages (momentum 0.999) barely leave
    # their initial variance of 1 in 12 steps (median |var - 1| 0.01 without recalibration, 0.9 with it).
    model = keras.models.load_model(chief / "checkpoints" / "last.keras")
    variances = np.concatenate([layer.moving_variance.numpy() for layer in batch_norm_layers(model)])
    assert np.median(np.abs(variances - 1)) > 0.3
    # ... and averaged over the workers: each worker validated the whole split with its own statistics and
    # the logged val_loss is their mean, so it equals the chief's checkpoint evaluated alone only if both
    # held the chief's statistics (measured: 4e-7 apart; 0.18 with each worker's own recalibration).
    x_val, y_val = prepare_data(RunConfig.load(chief / "config.json")).subset("val")
    val_loss = model.evaluate(x_val, y_val, batch_size=2, verbose=0, return_dict=True)["loss"]
    np.testing.assert_allclose(pd.read_csv(chief / "history.csv")["val_loss"].iloc[-1], val_loss, rtol=1e-4)


def _check_finished(run, strategy, steps_per_epoch, epochs=1):
    """Exported, and trained ``steps_per_epoch(n_train)`` steps an epoch."""
    assert (run / "export" / "saved_model").is_dir()
    assert json.loads((run / "config.json").read_text())["train"]["strategy"] == strategy
    n_train = json.loads((run / "data.json").read_text())["counts"]["train"]
    steps = keras.models.load_model(run / "checkpoints" / "last.keras").optimizer.iterations
    assert int(steps.numpy()) == epochs * steps_per_epoch(n_train)


def test_one_device_strategy_finishes(sim_cache, tmp_path):
    assert train.main([*COMMON, "--epochs", "1", "--strategy", "one-device", "--out", str(tmp_path)]) == 0
    (run,) = list(tmp_path.iterdir())
    _check_finished(run, "one-device", lambda n: -(-n // 4))  # batches of --batch-size, not whole blocks of rows


# --strategy mirrored over two logical CPUs (two replicas, as two GPUs), without BatchNorm recalibration:
# records how far apart the replicas' copies of the BatchNorm averages are when the trainer's averaging
# callback runs (before validation and the checkpoint), before and after it.
MIRRORED_TWO_REPLICAS = """
import json, sys, numpy as np, tensorflow as tf
cpu, = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from deeplense_tf.training import distributed, trainer
from deeplense_tf import train
from deeplense_tf.training.batchnorm import batch_norm_layers
distributed.LOCAL_STRATEGIES["mirrored"] = lambda gpus: tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
spreads = []
def spread(model):
    copies = [np.stack([c.numpy() for c in v.value.values]) for layer in batch_norm_layers(model)
              for v in (layer.moving_mean, layer.moving_variance)]
    assert all(len(c) == 2 for c in copies)
    return float(max(np.abs(c[0] - c[1]).max() for c in copies))
class Spy(trainer.AverageBatchNormOverReplicas):
    def _update(self):
        before = spread(self.model)
        super()._update()
        spreads.append([before, spread(self.model)])
trainer.AverageBatchNormOverReplicas = Spy
code = train.main(sys.argv[1:])
print(json.dumps({"code": code, "spreads": spreads}))
"""


def test_mirrored_strategy_on_two_replicas_keeps_one_set_of_batchnorm_averages(sim_cache, tmp_path):
    argv = [*COMMON, "--epochs", "2", "--strategy", "mirrored", "--bn-recalibration", "0", "--out", str(tmp_path)]
    # Before whole_steps, the last validation step handed replica 1 an empty batch (6 images, 2 a replica),
    # on which oneDNN's CPU convolution failed ("Incompatible shapes: [0,33,33,16] vs. [72]").
    out = subprocess.run([sys.executable, "-c", MIRRORED_TWO_REPLICAS, *argv], capture_output=True, text=True,
                         timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["code"] == 0
    assert len(r["spreads"]) == 2  # once an epoch
    for before, after in r["spreads"]:
        assert before > 1e-6, "the premise: each replica's batches moved its own copy"
        assert after == 0.0
    assert "ran out of data" not in out.stderr  # Keras counted steps, not batches (distributed.whole_steps)
    (run,) = list(tmp_path.iterdir())
    # Steps of one 2-image batch per replica; the odd batch left over is left out (others every epoch).
    _check_finished(run, "mirrored", lambda n: -(-n // 2) // 2, epochs=2)


def test_whole_steps_for_local_replicas():
    batches = lambda n: tf.data.Dataset.range(n).batch(1)  # noqa: E731
    one = batches(5)
    assert distributed.whole_steps(one, 1) == (one, None)  # one replica: unchanged
    train_ds, steps = distributed.whole_steps(batches(5), 2)  # 2 steps; the 5th batch left out
    assert steps == 2 and [int(b[0]) for b in train_ds.take(8)] == [0, 1, 2, 3, 0, 1, 2, 3]  # a pass an epoch
    val_ds, steps = distributed.whole_steps(batches(6), 3, training=False)
    assert steps == 2 and [int(b[0]) for b in val_ds.take(6)] == list(range(6))
    assert distributed.whole_steps(batches(5), 2, training=False)[1] is None  # evaluation drops nothing
    with pytest.raises(ConfigError, match="--batch-size"):
        distributed.whole_steps(batches(1), 2)
    # evaluation batches: the largest per-replica size that fills whole steps
    assert distributed.whole_step_batch(6, 2, 2) == 1  # 6 batches of 1 (3 steps), not 3 of 2
    assert distributed.whole_step_batch(8, 2, 2) == 2
    assert distributed.whole_step_batch(1001, 64, 2) == 64  # 16 batches, the last one of 41
    assert distributed.whole_step_batch(10, 4, 1) == 4
    assert distributed.whole_step_batch(1, 4, 2) == 4  # no size fills 2 replicas from 1 image: unchanged


@pytest.mark.parametrize("value", [None, "not json", '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", '
                                                  '"index": 3}}'])
def test_multiworker_without_a_valid_tf_config_says_so(tmp_path, monkeypatch, capsys, value):
    if value is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", value)
    assert train.main([*COMMON, "--strategy", "multiworker", "--out", str(tmp_path)]) == 2
    assert "TF_CONFIG" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_chief_and_worker_shares(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", _tf_config(1, [1, 2, 3]))
    assert not distributed.is_chief() and distributed.worker_place() == (1, 3)
    x, y = np.arange(10) * 10, np.arange(10)
    shares = [distributed.worker_share(x, y, 6, 3, i, 3) for i in range(3)]
    assert all(batch == 2 and len(ys) == 3 and np.all(xs == ys * 10) for xs, ys, batch in shares)
    assert len(np.unique(np.concatenate([ys for _, ys, _ in shares]))) == 9  # disjoint, one image left out
    assert distributed.worker_share(x, y, 4, 2)[2] == 2  # one machine, two GPUs: all rows, half the batch each
    with pytest.raises(ConfigError, match="divisible"):
        distributed.worker_share(x, y, 5, 3, 0, 3)
    monkeypatch.setenv("TF_CONFIG", _tf_config(0, [1, 2, 3], chief=True))
    assert not distributed.is_chief()  # worker 0 is not the chief when the cluster names one
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["h:1"], "worker": ["h:2"]},
                                                "task": {"type": "chief", "index": 0}}))
    assert distributed.is_chief() and distributed.worker_place() == (0, 2)


def test_class_weights_come_from_the_whole_training_split(sim_cache, monkeypatch):
    """Under MultiWorker each worker reads its own share; the class weights must not depend on it."""
    import types

    from deeplense_tf.training import trainer
    from deeplense_tf.data.prepare import prepare_data

    config = replace(RunConfig(), data={"samples": 12}, model={"task": "classification"},
                     train={"class_weights": "balanced", "batch_size": 4, "strategy": "mirrored"})
    data = prepare_data(config)
    monkeypatch.setattr(trainer, "strategy_share",  # as worker 1 of 2 would see it
                        lambda strategy, x, y, batch: distributed.worker_share(x, y, batch, 2, 1, 2))
    seen = []

    def stop(dataset, y):
        seen.append(np.asarray(y))
        raise StopIteration

    monkeypatch.setattr(trainer, "with_class_weights", stop)
    model = types.SimpleNamespace(distribute_strategy=tf.distribute.MirroredStrategy(["/cpu:0"]))
    with pytest.raises(StopIteration):
        trainer.fit_model(model, config, data, run_dir=None)
    np.testing.assert_array_equal(seen[0], data.y[data.splits["train"]])


# Two replicas in one process: two logical CPUs, set up before TensorFlow starts (so in a process of its own).
TWO_REPLICAS = """
import json, keras, numpy as np, tensorflow as tf
from deeplense_tf.training.batchnorm import BatchNormRecalibrator, batch_norm_layers
cpu, = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    inputs = keras.Input((4,))
    features = keras.layers.Dense(3, kernel_initializer="ones", use_bias=False)(inputs)
    model = keras.Model(inputs, keras.layers.BatchNormalization()(features))
(bn,) = batch_norm_layers(model)
x = (5.0 + 2.0 * np.random.default_rng(0).standard_normal((256, 4))).astype("float32")
copies = lambda v: [c.numpy().tolist() for c in v.value.values]
shifted = strategy.experimental_distribute_values_from_function(lambda ctx: x[:16] + 10 * ctx.replica_id_in_sync_group)
forward = tf.function(lambda b: strategy.run(lambda t: model(t, training=True), args=(b,)))
for _ in range(10):
    forward(shifted)  # replica 1's inputs are larger: its copy of the averages drifts away
trained = copies(bn.moving_mean)
recalibrate = BatchNormRecalibrator(model, batches=20, strategy=strategy)
recalibrate.average_over_replicas()
averaged = copies(bn.moving_mean)
used = recalibrate(tf.data.Dataset.from_tensor_slices(x).batch(16))
means, variances = copies(bn.moving_mean), copies(bn.moving_variance)
for _ in range(10):
    forward(shifted)  # apart again
# As the trainer recalibrates under --strategy mirrored: outside the scope, in cross-replica context.
BatchNormRecalibrator(model, batches=20)(tf.data.Dataset.from_tensor_slices(x).batch(16))
print(json.dumps({"trained": trained, "averaged": averaged, "used": used, "means": means,
                  "variances": variances, "mean": float(x.sum(1).mean()), "var": float(x.sum(1).var()),
                  "local_means": copies(bn.moving_mean), "local_variances": copies(bn.moving_variance)}))
"""


def test_batchnorm_statistics_are_averaged_over_replicas():
    """Each replica keeps its own BatchNorm averages; averaging and recalibration make them one."""
    out = subprocess.run([sys.executable, "-c", TWO_REPLICAS], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    a, b = np.array(r["trained"])
    assert np.abs(a - b).min() > 1.0  # the premise: the replicas' copies drifted apart
    np.testing.assert_allclose(r["averaged"], [(a + b) / 2] * 2, rtol=1e-6)
    assert r["used"] == 8  # 16 batches, two a step (one per replica); at most 20 steps
    (m0, m1), (v0, v1) = r["means"], r["variances"]
    assert m0 == m1 and v0 == v1  # identical on both replicas
    np.testing.assert_allclose(m0, r["mean"], rtol=0.02)  # the population statistics, as without a strategy
    np.testing.assert_allclose(v0, r["var"], rtol=0.15)
    (m0, m1), (v0, v1) = r["local_means"], r["local_variances"]  # one recalibration writes every copy
    assert m0 == m1 and v0 == v1
    np.testing.assert_allclose(m0, r["mean"], rtol=0.02)
    np.testing.assert_allclose(v0, r["var"], rtol=0.15)


class Recorder(keras.callbacks.Callback):
    def __init__(self, stop_at_epoch):
        super().__init__()
        self.calls, self.stop_at_epoch = [], stop_at_epoch

    def on_train_begin(self, logs=None):
        self.calls.append("train_begin")

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(f"epoch_begin {epoch}")

    def on_train_batch_end(self, batch, logs=None):
        assert set(logs) == {"loss", "mae"}

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(f"epoch_end {epoch} {sorted(logs)}")
        self.model.stop_training = epoch == self.stop_at_epoch

    def on_train_end(self, logs=None):
        self.calls.append("train_end")


def test_fit_distributed_drives_callbacks_like_fit():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(24, 3)).astype("float32"), rng.normal(size=(24, 1)).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse",
                      metrics=[keras.metrics.MeanAbsoluteError(name="mae")])
    before = model.evaluate(data, verbose=0, return_dict=True)
    recorder = Recorder(stop_at_epoch=2)
    history = distributed.fit_distributed(model, data, data, epochs=5, initial_epoch=1, callbacks=[recorder], verbose=0)
    keys = ["loss", "mae", "val_loss", "val_mae"]
    assert recorder.calls == ["train_begin", "epoch_begin 1", f"epoch_end 1 {keys}", "epoch_begin 2",
                              f"epoch_end 2 {keys}", "train_end"]
    assert history.epoch == [1, 2] and sorted(history.history) == keys
    after = model.evaluate(data, verbose=0, return_dict=True)
    assert after["loss"] < before["loss"]
    np.testing.assert_allclose(history.history["val_loss"][-1], after["loss"], rtol=1e-5)
