"""Backend guard: kerasdet layers are written with TensorFlow ops.

They need Keras 3 running on the TensorFlow backend (for `tf.image` NMS, TFLite and
SavedModel export). Importing kerasdet before Keras selects TensorFlow by default; a user
who explicitly chose another backend gets a one-line error instead of graph errors later.
"""

import os

# Only a default: an explicit KERAS_BACKEND set by the user is respected (and checked below).
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# TensorFlow's CPU tensors come from malloc by default, and glibc hands the large ones back
# to the kernel on free: every training step then page-faults its activations in again
# (200,000 faults and 40 % of the CPU time in the kernel per OverFeat-tiny dense step).
# The BFC allocator keeps them pooled: 1.7x faster steps there (tools/bench_cpu_allocator.py).
# Where TensorFlow turns oneDNN on (it logs "oneDNN custom operations are on": AVX-512 VNNI /
# BF16 CPUs and newer) its CPU device already pools through oneDNN's allocator, and this
# changes nothing. Only a default, read when TensorFlow allocates its first tensor: set it to "false" to opt
# out, and it has no effect if TensorFlow ran an op before kerasdet was imported.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

import keras  # noqa: E402

if keras.backend.backend() != "tensorflow":
    raise ImportError(
        f"kerasdet needs the Keras 'tensorflow' backend, got KERAS_BACKEND="
        f"{keras.backend.backend()!r}; set KERAS_BACKEND=tensorflow before importing keras."
    )
