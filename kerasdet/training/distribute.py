"""`tf.distribute` strategies by name, and which worker writes files.

`make_strategy(name)` returns the strategy `kerasdet train --strategy NAME` trains under;
build and compile the model inside `strategy.scope()` and call `fit` as usual:

    strategy = make_strategy("mirrored")
    with strategy.scope():
        model = kerasdet.zoo.load("faster_rcnn_tiny")
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(dataset, ...)  # `dataset` batches the *global* batch; fit splits it

Faster R-CNN's `train_step` divides its loss by the number of replicas (the optimizer sums
the replicas' gradients) and its anchor / RoI samplers draw per replica what one device
would draw for the same rows of the global batch, so N replicas train like one device on
the global batch (see `docs/distributed.md`).
"""

from __future__ import annotations

import os
import tempfile

import tensorflow as tf

STRATEGY_NAMES = ("default", "mirrored", "multiworker", "tpu")


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def make_strategy(name: str = "default", *, tpu: str | None = None) -> tf.distribute.Strategy:
    """A `tf.distribute.Strategy` by name.

    Args:
        name: one of `STRATEGY_NAMES`:
            - `"default"`: no distribution (TensorFlow's default strategy, one device).
            - `"mirrored"`: `MirroredStrategy` over this machine's GPUs, or over its logical
              CPU devices when it has no GPU (one, unless the program split the CPU with
              `tf.config.set_logical_device_configuration` before TensorFlow started).
            - `"multiworker"`: `MultiWorkerMirroredStrategy`, cluster and role from the
              `TF_CONFIG` environment variable (a single worker without it). Create it
              before any other TensorFlow op of the process.
            - `"tpu"`: `TPUStrategy` on the Cloud TPU named by `tpu`, else by `$TPU_NAME`,
              else the TPU attached to this VM (`"local"`).
        tpu: TPU name or `grpc://` address for `"tpu"`.

    Raises:
        ValueError: an unknown name, or a strategy this machine cannot provide (no TPU,
            TensorFlow already initialized for `"multiworker"`) — one line, for the CLI.
    """
    if name not in STRATEGY_NAMES:
        raise ValueError(f"unknown strategy {name!r}; valid names: {', '.join(STRATEGY_NAMES)}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multiworker":
        try:
            return tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as error:  # e.g. "Collective ops must be configured at program startup"
            raise ValueError(
                f"cannot start MultiWorkerMirroredStrategy: {_first_line(error)} "
                "(create it before any other TensorFlow op)"
            ) from None
    tpu = tpu or os.environ.get("TPU_NAME") or "local"
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as error:
        raise ValueError(f"no TPU available (tpu={tpu!r}): {_first_line(error)}") from None


def is_chief(strategy: tf.distribute.Strategy | None = None) -> bool:
    """True on the one worker that writes checkpoints and outputs.

    Only `MultiWorkerMirroredStrategy` has several writers: its chief is the `"chief"` task,
    or worker 0 when the cluster has no `"chief"` job. Every other strategy runs one Python
    process (a TPU strategy's workers run no Python), which is the chief.
    """
    strategy = strategy or tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    resolver = strategy.cluster_resolver
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type is None or task_type == "chief":
        return True
    jobs = resolver.cluster_spec().as_dict()
    return task_type == "worker" and int(task_id or 0) == 0 and "chief" not in jobs


def worker_directory(path: str, strategy: tf.distribute.Strategy | None = None) -> str:
    """`path` on the chief; a new temporary directory on other workers.

    Saving runs on every worker (reading some variables is a collective op all workers
    must join), but only the chief's files are kept: other workers save into a directory
    of their own, which the caller deletes (`shutil.rmtree`) when done.
    """
    if is_chief(strategy):
        return path
    resolver = (strategy or tf.distribute.get_strategy()).cluster_resolver
    return tempfile.mkdtemp(prefix=f"kerasdet-{resolver.task_type}{resolver.task_id}-")
