"""Resumable training: atomic checkpoint writes, exact mid-epoch resume (in-process with a
small Keras model, and a Faster R-CNN training process killed with SIGKILL), and why Keras's
own `BackupAndRestore` is not enough."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasdet.training.checkpoint import (
    STATE_FILE,
    ResumableBackup,
    WeightsCheckpoint,
    atomic_save_weights,
    atomic_write_text,
    read_state,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# --- atomic writes ---------------------------------------------------------------------------


def test_atomic_write_text_keeps_old_content_if_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    atomic_write_text(str(path), "old")
    assert path.read_text() == "old"

    def killed(src, dst):
        raise KeyboardInterrupt  # the process dies between writing the temp file and the rename

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(str(path), "new")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["state.json"]  # no temporary file left behind
    monkeypatch.undo()
    atomic_write_text(str(path), "new")
    assert path.read_text() == "new"


def _dense_model(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1)])
    # Eager: a few dozen tiny steps run faster than tracing the train step.
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss="mse", run_eagerly=True)
    return model


def test_atomic_save_weights_interrupted_write_keeps_the_previous_file(tmp_path, monkeypatch):
    model = _dense_model()
    path = str(tmp_path / "last.weights.h5")
    atomic_save_weights(model, path)
    expected = [w.copy() for w in model.get_weights()]
    original = keras.Model.save_weights

    def dies_mid_write(self, filepath, overwrite=True, **kwargs):
        with open(filepath, "wb") as f:
            f.write(b"\x89HDF\r\n partial")  # a truncated file, as a killed writer leaves
        raise KeyboardInterrupt

    model.set_weights([w + 1.0 for w in expected])
    monkeypatch.setattr(keras.Model, "save_weights", dies_mid_write)
    with pytest.raises(KeyboardInterrupt):
        atomic_save_weights(model, path)
    monkeypatch.setattr(keras.Model, "save_weights", original)
    assert sorted(os.listdir(tmp_path)) == ["last.weights.h5"]
    other = _dense_model(seed=1)
    other.load_weights(path)
    for got, want in zip(other.get_weights(), expected):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match=r"\.weights\.h5"):
        atomic_save_weights(model, str(tmp_path / "model.h5"))


def test_weights_checkpoint_saves_every_epoch_or_n_batches(tmp_path):
    model = _dense_model()
    x, y = np.ones([8, 3], "float32"), np.ones([8, 1], "float32")
    saved = []

    class Spy(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            saved.append(os.path.getmtime(tmp_path / "w.weights.h5"))

    model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[WeightsCheckpoint(tmp_path / "w.weights.h5"), Spy()])
    assert len(saved) == 2 and os.listdir(tmp_path) == ["w.weights.h5"]
    other = _dense_model(seed=1)
    other.load_weights(tmp_path / "w.weights.h5")
    np.testing.assert_array_equal(other.get_weights()[0], model.get_weights()[0])
    with pytest.raises(ValueError, match="save_freq"):
        WeightsCheckpoint(tmp_path / "w.weights.h5", save_freq=0)


# --- exact resume, in-process ----------------------------------------------------------------

X = np.random.default_rng(0).normal(size=(24, 3)).astype("float32")
Y = X.sum(axis=1, keepdims=True)


def _data(mode):
    """`"repeat"`: one shuffled iterator across epochs (the documented recipe);
    `"epochs"`: a finite dataset `fit` re-iterates every epoch."""
    ds = tf.data.Dataset.from_tensor_slices((X, Y))
    if mode == "repeat":
        return ds.shuffle(24, seed=1).repeat().batch(4), {"steps_per_epoch": 6}
    return ds.batch(4), {}


class Interrupted(Exception):
    pass


class InterruptAt(keras.callbacks.Callback):
    """Raises before global step `step` (counted from this fit's start)."""

    def __init__(self, step):
        super().__init__()
        self.step, self.seen = step, 0

    def on_train_batch_begin(self, batch, logs=None):
        if self.seen == self.step:
            raise Interrupted
        self.seen += 1


def _fit(mode, backup, *, interrupt=None, save_freq=4, callback=ResumableBackup):
    """A fresh model and dataset, as a restarted process would build them."""
    model = _dense_model()
    ds, kwargs = _data(mode)
    callbacks = [callback(str(backup), save_freq=save_freq)]
    if interrupt is not None:
        callbacks.append(InterruptAt(interrupt))
    try:
        history = model.fit(ds, epochs=3, verbose=0, callbacks=callbacks, shuffle=False, **kwargs)
    except Interrupted:
        return None, None
    return model, history.history


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """Uninterrupted runs by data mode (the backup schedule does not change training)."""
    cache = {}

    def get(mode):
        if mode not in cache:
            cache[mode] = _fit(mode, tmp_path_factory.mktemp("reference"))
        return cache[mode]

    return get


@pytest.mark.parametrize(
    "mode, save_freq, interrupt, expected",
    [
        ("repeat", 4, 10, {"epoch": 1, "batch": 2, "consumed": 8, "step": 8}),  # mid-epoch, one iterator
        ("epochs", 4, 10, {"epoch": 1, "batch": 2, "consumed": 2, "step": 8}),  # mid-epoch, iterator per epoch
        ("repeat", 5, 13, {"epoch": 1, "batch": 4, "consumed": 10, "step": 10}),  # save_freq not dividing the epoch
        ("repeat", "epoch", 6, {"epoch": 0, "batch": 6, "consumed": 6, "step": 6}),  # killed before the next epoch ran
        ("epochs", "epoch", 13, {"epoch": 2, "batch": 0, "consumed": 0, "step": 12}),
    ],
)
def test_resume_matches_an_uninterrupted_run(tmp_path, references, mode, save_freq, interrupt, expected):
    reference, ref_history = references(mode)
    backup = tmp_path / "backup"
    assert _fit(mode, backup, interrupt=interrupt, save_freq=save_freq) == (None, None)
    state = read_state(str(backup))
    assert {k: state[k] for k in expected} == expected
    assert sorted(os.listdir(backup)) == sorted([STATE_FILE, state["weights"]])

    resumed, history = _fit(mode, backup, save_freq=save_freq)
    assert int(resumed.optimizer.iterations) == int(reference.optimizer.iterations) == 18
    for got, want in zip(resumed.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-7)
    # The resumed epochs' logs are those of the uninterrupted run (metrics restored).
    runs = len(history["loss"])
    np.testing.assert_allclose(history["loss"], ref_history["loss"][-runs:], rtol=1e-6)
    assert not backup.exists()  # deleted once fit completes


def test_resume_from_a_remote_backup_dir(references):
    """`gs://` and other `tf.io.gfile` filesystems, here TensorFlow's in-memory `ram://`."""
    reference, _ = references("repeat")
    backup = f"ram://kerasdet-test-{os.getpid()}/backup"
    assert _fit("repeat", backup, interrupt=10) == (None, None)
    assert sorted(tf.io.gfile.listdir(backup)) == sorted([STATE_FILE, read_state(backup)["weights"]])
    resumed, _ = _fit("repeat", backup)
    assert int(resumed.optimizer.iterations) == 18
    for got, want in zip(resumed.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-7)
    assert tf.io.gfile.glob(backup + "/*") == []


def test_keras_backup_and_restore_replays_the_interrupted_epoch(tmp_path, references):
    """Why `ResumableBackup` exists: Keras 3's callback saves mid-epoch but restarts the epoch
    from its first batch with the already-advanced weights, so the resumed run trains more
    steps and ends elsewhere."""
    reference, _ = references("repeat")
    backup = tmp_path / "backup"
    _fit("repeat", backup, interrupt=10, save_freq=4, callback=keras.callbacks.BackupAndRestore)
    # Saved after step 8 = epoch 1, batch index 1 ...
    assert json.loads((backup / "training_metadata.json").read_text()) == {"epoch": 1, "batch": 1}
    resumed, _ = _fit("repeat", backup, save_freq=4, callback=keras.callbacks.BackupAndRestore)
    assert int(reference.optimizer.iterations) == 18
    # ... but resumed at epoch 1's first batch: its first 2 batches are trained on twice.
    assert int(resumed.optimizer.iterations) == 8 + 12
    assert not np.allclose(resumed.get_weights()[0], reference.get_weights()[0])


def test_stale_files_are_cleaned_and_a_broken_commit_is_ignored(tmp_path):
    backup = tmp_path / "backup"
    _fit("repeat", backup, interrupt=10)
    state = read_state(str(backup))
    # What a process killed mid-save leaves: a temporary file and a weights file it never
    # committed. Neither is used, both are removed at the next start.
    (backup / f".{STATE_FILE}.tmp-abc.tmp").write_text('{"epoch": 99')
    (backup / "ckpt-0000000012.weights.h5").write_bytes(b"partial")
    model = _dense_model()
    ds, kwargs = _data("repeat")
    seen = []

    class Watch(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen.append(sorted(os.listdir(backup)))

    model.fit(ds, epochs=3, verbose=0, callbacks=[ResumableBackup(str(backup), save_freq=4, delete_checkpoint=False), Watch()],
              **kwargs)
    assert seen == [sorted([STATE_FILE, state["weights"]])]
    assert int(model.optimizer.iterations) == 18
    assert read_state(str(backup))["step"] == 16  # kept: delete_checkpoint=False
    assert model.train_function.__class__.__name__ != "_SkippingTrainFunction"  # unwrapped after fit


def test_resumable_backup_arguments(tmp_path):
    with pytest.raises(ValueError, match="save_freq"):
        ResumableBackup(str(tmp_path), save_freq="batch")
    with pytest.raises(ValueError, match="backup_dir"):
        ResumableBackup("")


# --- Faster R-CNN killed with SIGKILL --------------------------------------------------------

# Trains a tiny Faster R-CNN deterministically for 2 epochs x 6 steps on 12 synthetic 64x64
# images (a seeded shuffle, one iterator across epochs: the documented recipe) with a backup
# every 4 steps; SIGKILLs itself before global step KILL_AT (-1: never); saves the final
# weights, step count and loss history.
TRAIN_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import keras, numpy as np, tensorflow as tf
    from kerasdet.models import FasterRCNN, ProposalLayer
    from kerasdet.training.checkpoint import ResumableBackup

    backup, out, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    keras.utils.set_random_seed(0)
    tf.config.experimental.enable_op_determinism()

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 80, (12, 64, 64, 3)).astype("float32")
    boxes = np.zeros((12, 2, 4), "float32")
    classes = -np.ones((12, 2), "int32")
    for i in range(12):
        for j in range(1 + i % 2):
            y, x = rng.integers(0, 36, 2)
            h, w = rng.integers(14, 28, 2)
            images[i, y:y + h, x:x + w, j] = 250.0
            boxes[i, j] = [y, x, y + h, x + w]
            classes[i, j] = j
    dataset = (tf.data.Dataset.from_tensor_slices((images, {"boxes": boxes, "classes": classes}))
               .shuffle(12, seed=1).repeat().batch(2))

    model = FasterRCNN(
        3, image_size=(64, 64), head_units=(16, 16), rpn_batch_size=32, rcnn_batch_size=16,
        max_detections=5, proposal_layer=ProposalLayer(
            pre_nms_top_k_train=100, post_nms_top_k_train=32, pre_nms_top_k_test=100, post_nms_top_k_test=16),
    )
    # Eager steps: a dozen steps run faster than the one-off train-step trace.
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), run_eagerly=True)

    class Kill(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if int(self.model.optimizer.iterations) == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    history = model.fit(dataset, epochs=2, steps_per_epoch=6, verbose=0,
                        callbacks=[ResumableBackup(backup, save_freq=4), Kill()])
    np.savez(out, iterations=int(model.optimizer.iterations), loss=np.array(history.history["loss"]),
             **{f"w{i}": w for i, w in enumerate(model.get_weights())})
    """
)


def _start(script, *args, cwd):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="-1")
    return subprocess.Popen([sys.executable, str(script), *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(process, timeout=600):
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


@pytest.mark.slow  # three training processes, ~45 s on 2 busy cores
def test_faster_rcnn_killed_mid_epoch_resumes_to_the_uninterrupted_result(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT)
    start = time.time()
    # The uninterrupted reference and the run that gets killed, side by side.
    reference = _start(script, tmp_path / "ref_backup", tmp_path / "reference.npz", -1, cwd=tmp_path)
    killed = _start(script, tmp_path / "backup", tmp_path / "never.npz", 10, cwd=tmp_path)
    code, output = _finish(killed)
    assert code == -signal.SIGKILL, output[-3000:]
    state = read_state(str(tmp_path / "backup"))
    # Killed before step 10 (epoch 2, batch 5): the last backup is after step 8.
    assert {k: state[k] for k in ("epoch", "batch", "step")} == {"epoch": 1, "batch": 2, "step": 8}
    assert not (tmp_path / "never.npz").exists()

    resumed = _start(script, tmp_path / "backup", tmp_path / "resumed.npz", -1, cwd=tmp_path)
    code, output = _finish(resumed)
    assert code == 0, output[-3000:]
    code, output = _finish(reference)
    assert code == 0, output[-3000:]
    print(f"reference + killed + resumed runs: {time.time() - start:.1f}s")

    want, got = np.load(tmp_path / "reference.npz"), np.load(tmp_path / "resumed.npz")
    assert int(got["iterations"]) == int(want["iterations"]) == 12
    weights = [k for k in want.files if k.startswith("w")]
    assert weights and set(weights) == {k for k in got.files if k.startswith("w")}
    # Deterministic ops: the same computation. Two uninterrupted runs of this script differ
    # by ~7e-9 on this CPU (rounding noise in a few weights), the resumed run by the same;
    # 1e-6 leaves room for such noise, not for a skipped or repeated SGD step.
    worst = max(float(np.max(np.abs(got[k] - want[k]))) for k in weights)
    print(f"max |resumed - uninterrupted| weight difference: {worst:.3g}")
    assert worst <= 1e-6
    # The resumed process ran epoch 2 only; its loss log equals the uninterrupted epoch 2's.
    np.testing.assert_allclose(got["loss"], want["loss"][-1:], rtol=1e-6)
    assert not (tmp_path / "backup").exists()


# --- `kerasdet train` killed with SIGKILL and rerun -------------------------------------------

# Runs `kerasdet train` (deterministic ops; eager steps, 2 epochs x 4 steps on 8 shapes/tiny
# images, reshuffled and flipped every epoch, a backup every 3 steps) and SIGKILLs it before
# global step KILL_AT (-1: never).
CLI_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import keras, tensorflow as tf
    import kerasdet.cli.train as train
    from kerasdet.cli import main

    tf.config.experimental.enable_op_determinism()
    kill_at, out = int(sys.argv[1]), sys.argv[2]

    class Kill(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if int(self.model.optimizer.iterations) == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    callbacks = train._callbacks
    train._callbacks = lambda *args, **kwargs: callbacks(*args, **kwargs) + [Kill()]
    sys.exit(main(["train", "faster_rcnn_tiny", "--data", "shapes/tiny", "--image-size", "64", "64",
                   "--max-images", "8", "--batch-size", "2", "--epochs", "2", "--save-every", "3",
                   "--val-images", "0", "--verbose", "0", "--run-eagerly", "--output", out]))
    """
)


def _h5_arrays(path):
    import h5py

    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, item: arrays.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None)
    return arrays


@pytest.mark.slow  # three `kerasdet train` processes, ~1 min on 2 busy cores
def test_kerasdet_train_killed_mid_epoch_resumes_to_the_uninterrupted_result(tmp_path):
    script = tmp_path / "cli.py"
    script.write_text(CLI_SCRIPT)
    reference = _start(script, -1, tmp_path / "reference", cwd=tmp_path)
    killed = _start(script, 7, tmp_path / "run", cwd=tmp_path)
    code, output = _finish(killed)
    assert code == -signal.SIGKILL, output[-3000:]
    state = read_state(str(tmp_path / "run" / "backup" / "model"))
    # 4 steps per epoch: killed in epoch 2 after its third step, the last backup after step 6.
    assert {k: state[k] for k in ("epoch", "batch", "step")} == {"epoch": 1, "batch": 2, "step": 6}
    code, output = _finish(_start(script, -1, tmp_path / "run", cwd=tmp_path))
    assert code == 0, output[-3000:]
    code, output = _finish(reference)
    assert code == 0, output[-3000:]

    want = _h5_arrays(tmp_path / "reference" / "faster_rcnn_tiny.weights.h5")
    got = _h5_arrays(tmp_path / "run" / "faster_rcnn_tiny.weights.h5")
    assert set(got) == set(want) and any("optimizer" in k for k in want)
    worst = max(float(np.max(np.abs(got[k].astype("float64") - want[k]))) for k in want)
    print(f"max |resumed - uninterrupted| difference over weights and optimizer state: {worst:.3g}")
    assert worst <= 1e-6
    assert not (tmp_path / "run" / "backup" / "model").exists()
