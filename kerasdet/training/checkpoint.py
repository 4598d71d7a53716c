"""Crash-safe training checkpoints: atomic writes and exact mid-epoch resume.

Keras 3's `keras.callbacks.BackupAndRestore` (3.15) has two gaps this module closes:

- **Writes are not atomic.** It overwrites `latest.weights.h5` in place and then writes
  `training_metadata.json`: a process killed during the first write leaves a truncated
  weights file, and one killed between the two writes leaves new weights next to the old
  epoch number.
- **A mid-epoch backup does not resume mid-epoch.** With `save_freq=N` it records the batch,
  but on restart it only sets the epoch: the restored weights (already N batches into the
  epoch) train on that epoch again from its first batch, so the run takes more steps than
  an uninterrupted one and sees some batches twice.

`ResumableBackup` writes every file to a temporary name and `os.replace`s it into place,
with a small `state.json` as the commit record (it names the weights file, the epoch, the
batch within it and the input position), and resumes exactly where the state says: the
restored run skips the batches already trained on, so with deterministic ops
(`keras.utils.set_random_seed` + `tf.config.experimental.enable_op_determinism`) an
interrupted and resumed run ends with the same weights as an uninterrupted one.

The resumed run must see the same batches in the same order, which holds when the input
pipeline is deterministic and read through *one* iterator across epochs — e.g.
`dataset.shuffle(n, seed=s).repeat()` with `fit(steps_per_epoch=...)` — or when each epoch
is a fresh pass over data that is not reshuffled. (A `shuffle(reshuffle_each_iteration=True)`
dataset that `fit` re-iterates each epoch starts a restarted process at its first epoch's
order.)
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
import uuid
import warnings

import keras
import numpy as np
import tensorflow as tf

from kerasdet.training.distribute import is_chief, worker_directory

STATE_FILE = "state.json"
_WEIGHTS_PATTERN = "ckpt-*.weights.h5"
_TEMP_MARK = ".tmp-"


def _is_remote(path: str) -> bool:
    return "://" in str(path)


def _fsync_path(path: str, directory: bool = False) -> None:
    """Flushes a file (or a directory entry, after a rename) to disk; a no-op where the OS
    cannot open directories (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _local_temp_path(path: str, suffix: str) -> str:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}{_TEMP_MARK}", suffix=suffix)
    os.close(fd)
    return temp


def _commit(temp: str, path: str) -> None:
    _fsync_path(temp)
    os.replace(temp, path)  # atomic on POSIX and Windows within one filesystem
    _fsync_path(os.path.dirname(os.path.abspath(path)), directory=True)


def atomic_write_text(path: str, text: str) -> None:
    """Writes `text` to `path` so that `path` holds either its old or its new content, never
    a partial file (a temporary file in the same directory, fsync, `os.replace`).

    Remote paths (`gs://...`, any `scheme://`) go through `tf.io.gfile` the same way: a
    temporary object, then a rename (on GCS a copy, which publishes the object whole).
    """
    if _is_remote(path):
        temp = f"{path}{_TEMP_MARK}{uuid.uuid4().hex}"
        try:
            with tf.io.gfile.GFile(temp, "w") as f:
                f.write(text)
            tf.io.gfile.rename(temp, path, overwrite=True)
        finally:
            if tf.io.gfile.exists(temp):
                tf.io.gfile.remove(temp)
        return
    temp = _local_temp_path(path, ".tmp")
    try:
        with open(temp, "w", encoding="utf-8") as f:
            f.write(text)
        _commit(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.remove(temp)
        raise


def atomic_save_weights(model: keras.Model, path: str) -> None:
    """`model.save_weights(path)` (a `.weights.h5` file, optimizer state included) that never
    leaves a partial file at `path`: a process killed mid-write leaves the previous file.

    Remote paths are left to Keras, which saves to a local file and copies it up (an atomic
    object upload on GCS).
    """
    path = os.fspath(path)
    if not path.endswith(".weights.h5"):
        raise ValueError(f"weights files must end in `.weights.h5`, got {path!r}")
    if _is_remote(path):
        model.save_weights(path, overwrite=True)
        return
    temp = _local_temp_path(path, ".weights.h5")
    try:
        model.save_weights(temp, overwrite=True)
        _commit(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.remove(temp)
        raise


def _remove_tree(path: str) -> None:
    if _is_remote(path):
        if tf.io.gfile.exists(path):
            tf.io.gfile.rmtree(path)
    else:
        shutil.rmtree(path, ignore_errors=True)


class WeightsCheckpoint(keras.callbacks.Callback):
    """Saves the model's weights (and optimizer state) to one `.weights.h5` file, atomically:
    the crash-safe counterpart of `ModelCheckpoint(filepath, save_weights_only=True)`.

    Under `MultiWorkerMirroredStrategy` every worker saves (saving can involve collective
    reads) but only the chief's file is kept.

    Args:
        filepath: the `.weights.h5` file, overwritten at each save.
        save_freq: `"epoch"` (at the end of each epoch) or an int: every that many batches.
    """

    def __init__(self, filepath, save_freq="epoch"):
        super().__init__()
        filepath = os.fspath(filepath)
        if not filepath.endswith(".weights.h5"):
            raise ValueError(f"`filepath` must end in `.weights.h5`, got {filepath!r}")
        _check_save_freq(save_freq)
        self.filepath = filepath
        self.save_freq = save_freq
        self._batches = 0

    def _save(self):
        strategy = self.model.distribute_strategy
        if is_chief(strategy):
            atomic_save_weights(self.model, self.filepath)
            return
        temp = worker_directory(os.path.dirname(self.filepath), strategy)
        atomic_save_weights(self.model, os.path.join(temp, os.path.basename(self.filepath)))
        _remove_tree(temp)

    def on_train_batch_end(self, batch, logs=None):
        if self.save_freq == "epoch":
            return
        self._batches += 1
        if self._batches >= self.save_freq:
            self._batches = 0
            self._save()

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq == "epoch":
            self._save()


def _check_save_freq(save_freq):
    if save_freq != "epoch" and (isinstance(save_freq, bool) or not isinstance(save_freq, int) or save_freq < 1):
        raise ValueError(f"`save_freq` must be 'epoch' or a positive int (batches), got {save_freq!r}")


def read_state(backup_dir: str) -> dict | None:
    """The committed state of a `ResumableBackup` directory (`None` if there is none):
    `{"epoch", "batch", "consumed", "step", "weights", "metrics"}`."""
    path = os.path.join(os.fspath(backup_dir), STATE_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, "r") as f:
        return json.loads(f.read())


class _SkippingTrainFunction:
    """Stands in for `model.train_function` during `fit`: counts the batches each input
    iterator yields and, after a restore, consumes the batches already trained on without
    training (returning the restored metric values as the step logs)."""

    def __init__(self, callback, original):
        self.callback = callback
        self.original = original

    def __call__(self, iterator):
        return self.callback._train_call(self.original, iterator)


class ResumableBackup(keras.callbacks.Callback):
    """Backs up the training state atomically and resumes exactly, mid-epoch included.

    A drop-in replacement for `keras.callbacks.BackupAndRestore(backup_dir, save_freq)`:
    pass the same callback (same `backup_dir`) to `fit` again after an interruption, e.g. by
    rerunning the same script, and training continues from the last backup.

    Each backup writes `ckpt-<step>.weights.h5` (model and optimizer variables, so the
    optimizer's iteration counter and moments resume too), then commits `state.json`
    (atomically, see `atomic_write_text`) naming it with the epoch, the batches done in that
    epoch, how many batches the input iterator had yielded, the step and the values of the
    model's metrics; older weights files are deleted only after the commit. A process
    killed at any moment therefore leaves a complete, consistent backup.

    On `fit`'s start the callback loads the committed weights, makes `fit` start at the
    saved epoch, restores the epoch's running metrics, and then, instead of training on the
    batches of that epoch that were already trained on, reads them from the input and
    discards them (each such skipped batch still runs `fit`'s per-batch callbacks, with the
    restored logs). The resumed run thus takes exactly the steps the interrupted one had
    left, on the same batches, and its epoch logs are those of an uninterrupted run.

    Under `MultiWorkerMirroredStrategy` every worker takes part in each backup, only the
    chief's files are kept, and every worker restores from `backup_dir` — it must be on a
    filesystem all workers share (as for Keras's callback).

    Args:
        backup_dir: directory for the backup, used by nothing else.
        save_freq: `"epoch"` (at the end of each epoch) or an int: every that many
            training steps (counted over the whole run, so the schedule survives restarts).
        delete_checkpoint: delete the backup when `fit` completes (the default, as Keras),
            so a later `fit` with this callback starts afresh.

    Notes:
        Resuming with steps skipped assumes the restarted `fit` gets the same arguments and
        the same input (see the module docstring for which inputs replay identically). A
        backup taken at the end of an epoch resumes at the next epoch once that epoch's
        first batch has been seen; if the process died before that (e.g. during
        validation), the resumed run reads that epoch's batches again without training and
        repeats its end-of-epoch work (validation, other callbacks' `on_epoch_end`).
    """

    def __init__(self, backup_dir, save_freq="epoch", delete_checkpoint=True):
        super().__init__()
        if not backup_dir:
            raise ValueError("`backup_dir` must be a directory path, got an empty value")
        _check_save_freq(save_freq)
        self.backup_dir = os.fspath(backup_dir)
        self.save_freq = save_freq
        self.delete_checkpoint = bool(delete_checkpoint)

    # --- fit hooks ------------------------------------------------------------------------

    def on_train_begin(self, logs=None):
        model = self.model
        if not model.built:
            raise ValueError(
                "ResumableBackup needs a built model before `fit` (call it on a batch, or build "
                "it) so the backed-up weights can be loaded"
            )
        self._chief = is_chief(model.distribute_strategy)
        self._per_call = int(getattr(model, "steps_per_execution", 1) or 1)
        self._step = 0  # training steps done (over the whole run, restores included)
        self._epoch = 0
        self._batch = 0  # batches done in the current epoch (trained or skipped)
        self._iterator = None  # the input iterator `fit` passed last, and ...
        self._consumed = 0  # ... how many batches it has yielded
        self._skip_extra = 0  # after a restore: batches of earlier epochs to read first
        self._skip_calls = 0  # after a restore: calls that read a batch without training
        self._restore_epoch = None
        self._restore_metrics = None
        self._committed = None  # the state on disk
        state = read_state(self.backup_dir)
        if state is not None:
            self._restore(state)
        if self._chief:
            self._remove_stale_files()
        self._bucket = self._step // self.save_freq if self.save_freq != "epoch" else 0
        original = model.train_function
        if isinstance(original, _SkippingTrainFunction):  # left over from a fit that raised
            original = original.original
        model.train_function = _SkippingTrainFunction(self, original)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._batch = epoch, 0
        if epoch == self._restore_epoch and self._restore_metrics is not None:
            # `fit` reset the metrics just before this; give them the interrupted epoch's totals.
            self._assign_metrics(self._restore_metrics)
        self._restore_epoch = self._restore_metrics = None

    def on_train_batch_end(self, batch, logs=None):
        self._batch = batch + 1
        if self.save_freq == "epoch" or self._skip_calls or self._skip_extra:
            return
        bucket = self._step // self.save_freq
        if bucket > self._bucket:
            self._bucket = bucket
            self._save()

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq == "epoch":
            self._save()

    def on_train_end(self, logs=None):
        model = self.model
        if isinstance(model.train_function, _SkippingTrainFunction):
            model.train_function = model.train_function.original
        model._initial_epoch = None  # set by the restore; a later fit starts from its own argument
        if self.delete_checkpoint and self._chief:
            self._delete_backup()

    # --- the train-function wrapper ---------------------------------------------------------

    def _train_call(self, original, iterator):
        if iterator is not self._iterator:  # `fit` started a new pass over the input
            self._iterator, self._consumed = iterator, 0
        committed = self._committed
        if (
            self._batch == 0
            and committed is not None
            and committed["step"] == self._step
            and committed["batch"] != 0
            and not (self._skip_calls or self._skip_extra)
        ):
            # An end-of-epoch backup and no training since: now that the input of the new
            # epoch is known (a fresh iterator or the same one), re-commit it as "start of
            # this epoch" so a restart does not replay the finished epoch's batches.
            self._write_state(dict(committed, epoch=self._epoch, batch=0, consumed=self._consumed, metrics=None))
        if self._skip_extra:
            self._read(iterator, self._skip_extra)
            self._skip_extra = 0
        if self._skip_calls:
            self._skip_calls -= 1
            self._read(iterator, self._per_call)
            return self.model.get_metrics_result()
        logs = original(iterator)
        self._consumed += self._per_call
        self._step += self._per_call
        return logs

    def _read(self, iterator, count):
        for _ in range(count):
            next(iterator)  # StopIteration / OutOfRangeError end the epoch as in `fit`
            self._consumed += 1

    # --- state --------------------------------------------------------------------------

    def _metric_values(self):
        return [[np.asarray(v.numpy()).tolist() for v in m.variables] for m in self.model.metrics]

    def _assign_metrics(self, values):
        metrics = self.model.metrics
        shapes_match = len(values) == len(metrics) and all(
            len(vals) == len(m.variables) for vals, m in zip(values, metrics)
        )
        if not shapes_match:
            warnings.warn(
                "ResumableBackup: the model's metrics differ from the backed-up ones; the "
                "resumed epoch's logs cover only the batches trained after the restart",
                stacklevel=2,
            )
            return
        for vals, metric in zip(values, metrics):
            for value, variable in zip(vals, metric.variables):
                variable.assign(np.asarray(value, dtype=variable.dtype))

    def _restore(self, state):
        model = self.model
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)  # so its variables load too
        model.load_weights(os.path.join(self.backup_dir, state["weights"]))
        # Keras's own BackupAndRestore sets the same attribute; `fit` reads it after
        # `on_train_begin` to pick its first epoch.
        model._initial_epoch = int(state["epoch"])
        self._step = int(state["step"])
        batch = int(state["batch"])
        self._skip_calls = -(-batch // self._per_call)
        self._skip_extra = max(int(state["consumed"]) - self._skip_calls * self._per_call, 0)
        self._restore_epoch = int(state["epoch"])
        self._restore_metrics = state.get("metrics") if batch else None
        self._committed = state

    def _save(self):
        """Writes the weights (unless this step's file exists) and commits the state."""
        name = f"ckpt-{self._step:010d}.weights.h5"
        state = {
            "epoch": self._epoch,
            "batch": self._batch,
            "consumed": self._consumed,
            "step": self._step,
            "weights": name,
            # Read on every worker: metric variables are summed across replicas on read.
            "metrics": self._metric_values(),
        }
        if not self._chief:
            temp = worker_directory(self.backup_dir, self.model.distribute_strategy)
            atomic_save_weights(self.model, os.path.join(temp, name))
            _remove_tree(temp)
            self._committed = state
            return
        if self._committed is None or self._committed["weights"] != name or not tf.io.gfile.exists(
            os.path.join(self.backup_dir, name)
        ):
            atomic_save_weights(self.model, os.path.join(self.backup_dir, name))
        self._write_state(state)

    def _write_state(self, state):
        if self._chief:
            tf.io.gfile.makedirs(self.backup_dir)
            atomic_write_text(os.path.join(self.backup_dir, STATE_FILE), json.dumps(state))
            self._remove_stale_files(keep=state["weights"])
        self._committed = state

    def _remove_stale_files(self, keep=None):
        """Deletes weights files the committed state does not name and temporary files of
        writes that were interrupted."""
        if not tf.io.gfile.isdir(self.backup_dir):
            return
        keep = keep if keep is not None else (self._committed or {}).get("weights")
        for path in tf.io.gfile.glob(os.path.join(self.backup_dir, _WEIGHTS_PATTERN)):
            if os.path.basename(path) != keep:
                tf.io.gfile.remove(path)
        if not _is_remote(self.backup_dir):  # remote writes leave no temporary files
            for path in glob.glob(os.path.join(self.backup_dir, f".*{_TEMP_MARK}*")):
                os.remove(path)

    def _delete_backup(self):
        for name in (STATE_FILE, (self._committed or {}).get("weights")):
            path = os.path.join(self.backup_dir, name) if name else None
            if path and tf.io.gfile.exists(path):
                tf.io.gfile.remove(path)
        self._remove_stale_files(keep="")
        if not _is_remote(self.backup_dir):
            try:
                os.rmdir(self.backup_dir)  # only if nothing else is in it
            except OSError:
                pass
        self._committed = None
