"""Benchmark: CPU training steps with TensorFlow's default (malloc) and BFC CPU allocators.

`import kerasdet` sets `TF_CPU_ALLOCATOR_USE_BFC=true` unless the user set it (see
`kerasdet/_backend.py`). With the default allocator, glibc returns large freed blocks to the
kernel, so every training step page-faults its activations in again and a large share of
the CPU time is spent in the kernel. This benchmark measures what the default buys: for each
model, fresh processes alternate between `TF_CPU_ALLOCATOR_USE_BFC=false` and `true` (both
set before kerasdet is imported), each running warm-up steps and then `--steps` timed
training steps of `model.fit`. Per allocator it reports, as medians over the processes: the
median step (time between batch ends), the whole timed loop per step, and the CPU seconds
per step in user and kernel mode with the minor page faults per step (`getrusage`).

Models (the two CPU training recipes of the zoo):
  overfeat     OverFeat-tiny (batch norm), the dense classifier's step on 32 patches of
               230×230 from the recipe's `DensePatchSampler` (200 `kerasdet_shapes` images);
  faster_rcnn  Faster R-CNN tiny (the zoo configuration, random weights) on 8
               `kerasdet_shapes` images of 256×256 with their boxes.

Run:
    . /work/venv/bin/activate
    python tools/bench_cpu_allocator.py                     # both models, 3 processes each
    python tools/bench_cpu_allocator.py --models overfeat --rounds 5 --steps 20
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

# Importing Keras (and TensorFlow) allocates no tensor: the allocator is still the
# environment's choice when a child builds its model.
import keras

MODELS = ("overfeat", "faster_rcnn")
ALLOCATORS = {"malloc": "false", "bfc": "true"}


def _overfeat_step_data():
    from kerasdet.data.shapes import make_example
    from kerasdet.models.overfeat import overfeat_classifier
    from kerasdet.models.overfeat_architectures import ARCHITECTURES
    from kerasdet.training.overfeat_dense_data import DensePatchSampler
    from kerasdet.training.overfeat_dense_fit import DenseClassificationLoss

    model = overfeat_classifier("tiny", num_classes=6, batch_norm=True, dropout=0.0)
    model.compile(optimizer="adam", loss=DenseClassificationLoss(4.0), jit_compile=False)
    # The recipe's own data path: patches cut at random pyramid scales by a generator.
    examples = [make_example("train", i) for i in range(200)]
    sampler = DensePatchSampler(examples, model=model, window=ARCHITECTURES["tiny"].window, object_prob=0.7, seed=0)
    return model, sampler.dataset(32)


def _faster_rcnn_step_data():
    import numpy as np
    import tensorflow as tf

    import kerasdet
    from kerasdet.data.shapes import ground_truth_batch, make_example

    model = kerasdet.zoo.load("faster_rcnn_tiny", weights=None)
    model.compile(optimizer="adam")
    examples = [make_example("train", i) for i in range(8)]
    images = np.stack([e["image"] for e in examples]).astype("float32")
    truth = ground_truth_batch(examples)
    return model, tf.data.Dataset.from_tensors((images, truth)).repeat()


class StepClock(keras.callbacks.Callback):
    """Seconds between consecutive batch ends (a step plus its data wait)."""

    def __init__(self):
        super().__init__()
        self.seconds, self._last = [], None

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if self._last is not None:
            self.seconds.append(now - self._last)
        self._last = now


def child(model_name: str, steps: int, warmup: int) -> dict:
    """One process: build, warm up, time `steps` training steps. The allocator is the
    environment's `TF_CPU_ALLOCATOR_USE_BFC`, set by the parent."""
    build = _overfeat_step_data if model_name == "overfeat" else _faster_rcnn_step_data
    model, dataset = build()
    model.fit(dataset, steps_per_epoch=warmup, epochs=1, verbose=0)  # tracing, first allocations
    clock = StepClock()
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[clock])
    seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    return {
        "step_s": statistics.median(clock.seconds),
        "loop_s": seconds / steps,
        "user_s": (after.ru_utime - before.ru_utime) / steps,
        "sys_s": (after.ru_stime - before.ru_stime) / steps,
        "faults": (after.ru_minflt - before.ru_minflt) / steps,
    }


def run_child(model_name, allocator, steps, warmup):
    env = dict(os.environ, TF_CPU_ALLOCATOR_USE_BFC=ALLOCATORS[allocator], TF_CPP_MIN_LOG_LEVEL="3")
    command = [sys.executable, __file__, "--child", model_name, "--steps", str(steps), "--warmup", str(warmup)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{model_name} / {allocator} child failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--rounds", type=int, default=3, help="processes per allocator and model (alternating)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per process")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--child", choices=MODELS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.steps, args.warmup)))
        return None
    print(f"load average (1 min) {os.getloadavg()[0]:.2f}; {args.rounds} processes x {args.steps} steps per row")
    print("| model | allocator | s / step (median step) | s / step (whole loop) | user CPU s / step | kernel CPU s / step "
          "| minor faults / step |")
    print("|---|---|---|---|---|---|---|")
    results = {}
    for model_name in args.models:
        runs = {name: [] for name in ALLOCATORS}
        for _ in range(args.rounds):
            for allocator in ALLOCATORS:  # alternating, so drifting load hits both alike
                runs[allocator].append(run_child(model_name, allocator, args.steps, args.warmup))
        for allocator, measured in runs.items():
            row = {key: statistics.median(m[key] for m in measured) for key in measured[0]}
            results[(model_name, allocator)] = row
            print(f"| {model_name} | {allocator} | {row['step_s']:.3f} | {row['loop_s']:.3f} | {row['user_s']:.3f} "
                  f"| {row['sys_s']:.3f} | {row['faults']:,.0f} |")
        speedup = results[(model_name, "malloc")]["step_s"] / results[(model_name, "bfc")]["step_s"]
        loop = results[(model_name, "malloc")]["loop_s"] / results[(model_name, "bfc")]["loop_s"]
        print(f"| {model_name} | speed-up of bfc | {speedup:.2f}x | {loop:.2f}x | | | |")
    return results


if __name__ == "__main__":
    main()
