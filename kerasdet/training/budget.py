"""Training under a wall-clock budget: stop after `seconds` and decay the learning rate
(cosine) over the budget, since the number of steps that fit is not known in advance."""

from __future__ import annotations

import time

import keras
import numpy as np


class TimeBudget(keras.callbacks.Callback):
    """Stops `model.fit` once `seconds` of training time have passed (checked every
    batch). Time between batches — data waits included — counts; time spent between
    epochs (e.g. a validation callback's `on_epoch_end`) does not."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = float(seconds)
        self.elapsed = 0.0
        self._last = None

    def on_epoch_begin(self, epoch, logs=None):
        # Restart the clock here so end-of-epoch evaluation is not charged to training.
        self._last = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        self.elapsed += now - self._last
        self._last = now
        if self.elapsed >= self.seconds:
            self.model.stop_training = True


class CosineOverBudget(keras.callbacks.Callback):
    """Sets the learning rate before every batch to
    `base · ½(1 + cos(π · elapsed / budget))`, after a linear warm-up over `warmup` steps.
    The optimizer's learning rate must be a variable (a float), not a schedule."""

    def __init__(self, budget: TimeBudget, base_lr: float, warmup: int = 20):
        super().__init__()
        self.budget, self.base_lr, self.warmup = budget, float(base_lr), int(warmup)
        self.step = 0

    def on_train_batch_begin(self, batch, logs=None):
        progress = min(1.0, self.budget.elapsed / self.budget.seconds)
        lr = self.base_lr * 0.5 * (1.0 + np.cos(np.pi * progress)) * min(1.0, (self.step + 1) / self.warmup)
        self.model.optimizer.learning_rate.assign(lr)
        self.step += 1
