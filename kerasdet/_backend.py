"""Backend guard: kerasdet layers are written with TensorFlow ops.

They need Keras 3 running on the TensorFlow backend (for `tf.image` NMS, TFLite and
SavedModel export). Importing kerasdet before Keras selects TensorFlow by default; a user
who explicitly chose another backend gets a one-line error instead of graph errors later.
"""

import os

# Only a default: an explicit KERAS_BACKEND set by the user is respected (and checked below).
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402

if keras.backend.backend() != "tensorflow":
    raise ImportError(
        f"kerasdet needs the Keras 'tensorflow' backend, got KERAS_BACKEND="
        f"{keras.backend.backend()!r}; set KERAS_BACKEND=tensorflow before importing keras."
    )
