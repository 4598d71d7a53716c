"""tf.distribute: strategies by name, Faster R-CNN under MirroredStrategy (2 logical CPUs)
training exactly like one device on the same global batch, MultiWorkerMirroredStrategy with
two worker processes, and `kerasdet train --strategy`."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf

from kerasdet.cli import main
from kerasdet.training.distribute import STRATEGY_NAMES, is_chief, make_strategy, worker_directory

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_strategy_names_and_errors():
    from kerasdet.cli import train

    assert train.STRATEGY_NAMES == STRATEGY_NAMES
    assert make_strategy("default") is tf.distribute.get_strategy()
    assert is_chief() and worker_directory("some/dir") == "some/dir"
    with pytest.raises(ValueError, match="unknown strategy 'gpu'; valid names: default, mirrored"):
        make_strategy("gpu")
    # No TPU on this machine: one line, no traceback-sized TensorFlow message.
    with pytest.raises(ValueError, match=r"^no TPU available \(tpu='local'\): ") as error:
        make_strategy("tpu")
    assert "\n" not in str(error.value)


def test_cli_strategy_errors_are_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["train", "faster_rcnn_tiny", "--data", "shapes/tiny", "--max-images", "2", "--batch-size", "2",
            "--val-images", "0", "--output", str(out)]
    assert main([*args, "--strategy", "tpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kerasdet train: error: no TPU available") and "\n" not in err
    assert not out.exists()  # the strategy is made first, before data, model or files
    assert main(["train", "overfeat_tiny", "--strategy", "mirrored", "--output", str(out)]) == 2
    assert "--strategy is for Faster R-CNN" in capsys.readouterr().err


# --- MirroredStrategy on 2 logical CPUs, in a fresh process --------------------------------

# Logical devices must be configured before TensorFlow initializes its runtime, hence a
# separate process. The script trains the same tiny Faster R-CNN twice from the same
# initial weights on the same global batches of 4 — on one device, then mirrored on two
# (2 images per replica) — one step per epoch so the loss history is per step.
MIRRORED_SCRIPT = textwrap.dedent(
    """
    import sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np
    from kerasdet.models import FasterRCNN, ProposalLayer
    from kerasdet.training.distribute import make_strategy

    out, eager = sys.argv[1], sys.argv[2] == "eager"
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 80, (8, 64, 64, 3)).astype("float32")
    boxes, classes = np.zeros((8, 2, 4), "float32"), -np.ones((8, 2), "int32")
    for i in range(8):
        for j in range(1 + i % 2):
            y, x = rng.integers(0, 36, 2)
            h, w = rng.integers(14, 28, 2)
            images[i, y:y + h, x:x + w, j] = 250.0
            boxes[i, j], classes[i, j] = [y, x, y + h, x + w], j
    dataset = (tf.data.Dataset.from_tensor_slices((images, {"boxes": boxes, "classes": classes}))
               .batch(4, drop_remainder=True).repeat())

    def train(name):
        strategy = make_strategy(name)
        with strategy.scope():
            keras.utils.set_random_seed(0)
            model = FasterRCNN(
                3, image_size=(64, 64), head_units=(16, 16), rpn_batch_size=32, rcnn_batch_size=16,
                max_detections=5, proposal_layer=ProposalLayer(
                    pre_nms_top_k_train=100, post_nms_top_k_train=32, pre_nms_top_k_test=100,
                    post_nms_top_k_test=16),
            )
            model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), run_eagerly=eager)
        history = model.fit(dataset, epochs=3, steps_per_epoch=1, verbose=0, shuffle=False).history
        return strategy.num_replicas_in_sync, history, model.get_weights()

    results = {}
    for name in ("default", "mirrored"):
        replicas, history, weights = train(name)
        results[name] = replicas
        np.savez(f"{out}/{name}.npz", **{f"h_{k}": v for k, v in history.items()},
                 **{f"w{i}": w for i, w in enumerate(weights)})
    print("REPLICAS", results["default"], results["mirrored"])
    """
)


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="-1")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _run_mirrored(tmp_path, mode):
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED_SCRIPT)
    start = time.time()
    result = subprocess.run([sys.executable, str(script), str(tmp_path), mode], env=_env(), cwd=tmp_path,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    print(f"single-device + mirrored training ({mode}): {time.time() - start:.1f}s")
    assert "REPLICAS 1 2" in result.stdout
    single, mirrored = np.load(tmp_path / "default.npz"), np.load(tmp_path / "mirrored.npz")
    losses = [k for k in single.files if k.startswith("h_")]
    assert {k[2:] for k in losses} == {"loss", "rpn_objectness", "rpn_box", "rcnn_class", "rcnn_box"}
    for key in losses:
        print(key[2:], single[key], mirrored[key])
        # The same anchors and RoIs are sampled and every image has full samples, so the mean
        # of the replicas' means is the global mean: equal up to float summation order.
        np.testing.assert_allclose(mirrored[key], single[key], rtol=1e-5, atol=1e-6, err_msg=key)
    # The gradient of the global-batch mean (the replicas' losses are divided by 2 before the
    # optimizer sums their gradients): after 3 SGD steps, the same weights.
    worst = max(float(np.max(np.abs(mirrored[k] - single[k]))) for k in single.files if k.startswith("w"))
    print(f"max |mirrored - single-device| weight difference: {worst:.3g}")
    assert worst <= 1e-5


def test_mirrored_training_matches_one_device_eager(tmp_path):
    _run_mirrored(tmp_path, "eager")


@pytest.mark.slow  # traces the train step for both strategies, ~40 s
def test_mirrored_training_matches_one_device_graph(tmp_path):
    _run_mirrored(tmp_path, "graph")


# --- MultiWorkerMirroredStrategy: two `kerasdet train` workers on this machine -------------


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow  # two TensorFlow processes training in lockstep, ~1-2 min
def test_multiworker_cli_training_two_workers(tmp_path):
    out = tmp_path / "out"
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    args = ["-m", "kerasdet.cli", "train", "faster_rcnn_tiny", "--data", "shapes/tiny", "--image-size", "64", "64",
            "--max-images", "8", "--batch-size", "4", "--epochs", "2", "--steps", "2", "--save-every", "1",
            "--val-images", "2", "--verbose", "0", "--strategy", "multiworker", "--output", str(out)]
    processes = []
    for index in range(2):
        temp = tmp_path / f"tmp{index}"  # where a worker's throw-away files go
        temp.mkdir()
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        processes.append(subprocess.Popen(
            [sys.executable, *args], cwd=tmp_path, env=_env(TF_CONFIG=json.dumps(tf_config), TMPDIR=str(temp)),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        ))
    start = time.time()
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=900)[0])
    finally:
        for process in processes:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
    print(f"two workers: {time.time() - start:.1f}s")
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-4000:]
    assert "the chief writes the outputs" in outputs[1]
    assert "trained faster_rcnn_tiny" in outputs[0] and "; validation AP" in outputs[0]  # the chief evaluated
    # The chief (worker 0) wrote the weights, the configuration and the epoch checkpoint; the
    # backup was deleted at the end; worker 1 left nothing behind.
    assert (out / "faster_rcnn_tiny.weights.h5").is_file() and (out / "faster_rcnn_tiny.yaml").is_file()
    assert (out / "checkpoints" / "last.weights.h5").is_file()
    assert not (out / "backup" / "model").exists()
    assert os.listdir(tmp_path / "tmp1") == []
    import keras

    from kerasdet import zoo

    model = zoo.load(str(out / "faster_rcnn_tiny.yaml"), weights="trained")
    other = zoo.load(str(out / "faster_rcnn_tiny.yaml"), weights="trained")
    other.load_weights(str(out / "checkpoints" / "last.weights.h5"))
    for a, b in zip(model.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(a, b)  # the final weights are the last epoch's checkpoint
    assert isinstance(model, keras.Model)
