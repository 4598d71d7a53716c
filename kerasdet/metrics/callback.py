"""Keras callback writing COCO AP of a validation dataset into the epoch logs."""

from __future__ import annotations

import keras

from kerasdet.metrics.coco import STAT_NAMES, COCOEvaluator


class COCOMetricCallback(keras.callbacks.Callback):
    """Evaluates COCO AP on a validation dataset at the end of every `every_n_epochs` epochs
    (and of the last epoch) and writes it into `logs` as `val_AP`, `val_AP50`, `val_AP75`.

    The keys then appear in the progress bar and in `model.fit(...).history`, and
    `EarlyStopping(monitor="val_AP", mode="max")` / `ModelCheckpoint` can use them if they
    come after this callback in the `callbacks` list. Epochs that are skipped have no
    `val_AP*` keys.

    Example::

        val = load_shapes("validation", batch_size=16)
        model.fit(train, epochs=10, callbacks=[COCOMetricCallback(val, every_n_epochs=2)])

    Args:
        dataset: an iterable (e.g. `tf.data.Dataset`) of `(images, ground_truth)` batches,
            `ground_truth = {"boxes": [B, M, 4] yxyx pixels, "classes": [B, M]}`. Detections
            come from `model.predict_on_batch(images)` and must be a kerasdet detections dict.
        every_n_epochs: evaluate every this many epochs.
        class_names: optional class names (see `COCOEvaluator`).
        metrics: which `COCOEvaluator.result()` keys to log (default AP, AP50, AP75).
        prefix: prefix of the log keys.
        max_detections: detections per image kept by COCO.
        verbose: 1 prints pycocotools' summary table after each evaluation.

    Attributes:
        last_result: the full result dict of the latest evaluation (all 12 COCO numbers).
        summary: pycocotools' summary table of the latest evaluation.
    """

    def __init__(
        self,
        dataset,
        every_n_epochs: int = 1,
        *,
        class_names=None,
        metrics=("AP", "AP50", "AP75"),
        prefix: str = "val_",
        max_detections: int = 100,
        verbose: int = 0,
    ):
        super().__init__()
        if (
            isinstance(every_n_epochs, bool)
            or not isinstance(every_n_epochs, int)
            or every_n_epochs < 1
        ):
            raise ValueError(f"`every_n_epochs` must be a positive integer, got {every_n_epochs!r}")
        if not hasattr(dataset, "__iter__"):
            raise ValueError(
                f"`dataset` must be an iterable of (images, ground_truth) batches, got {type(dataset).__name__}"
            )
        unknown = [m for m in metrics if m not in STAT_NAMES]
        if unknown:
            raise ValueError(f"`metrics` must be names from {STAT_NAMES}, got {unknown}")
        self.dataset = dataset
        self.every_n_epochs = every_n_epochs
        self.metrics = tuple(metrics)
        self.prefix = prefix
        self.verbose = verbose
        self.evaluator = COCOEvaluator(class_names, max_detections=max_detections)
        self.last_result = None
        self.summary = ""

    def evaluate(self) -> dict:
        """Runs the model over the dataset and returns all COCO numbers."""
        self.evaluator.reset()
        self.evaluator.update_from_model(self.model, self.dataset)
        self.last_result = self.evaluator.result()
        self.summary = self.evaluator.summary
        return self.last_result

    def on_epoch_end(self, epoch, logs=None):
        last = self.params.get("epochs") if self.params else None
        if (epoch + 1) % self.every_n_epochs and epoch + 1 != last:
            return
        result = self.evaluate()
        if self.verbose:
            print(f"\nCOCO evaluation after epoch {epoch + 1}:\n{self.summary}")
        if logs is not None:
            for name in self.metrics:
                logs[self.prefix + name] = result[name]
