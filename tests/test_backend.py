"""`import kerasdet` defaults TensorFlow's CPU allocator to BFC (kerasdet/_backend.py), and
an explicit user setting wins. Fresh processes: the allocator is chosen once per process."""

import json
import os
import subprocess
import sys

# Convolutions whose activations (32×113×113×24 float32, 39 MB) are far above glibc's mmap
# threshold: with malloc each one is mapped, page-faulted in and unmapped again.
_PROBE = """
import json, os, resource, sys
import kerasdet, tensorflow as tf
x = tf.random.normal([32, 113, 113, 24]); k = tf.random.normal([3, 3, 24, 24])
tf.nn.relu(tf.nn.conv2d(x, k, 1, "SAME"))
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    y = tf.nn.relu(tf.nn.conv2d(x, k, 1, "SAME")) * 2.0
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"setting": os.environ.get("TF_CPU_ALLOCATOR_USE_BFC"), "faults": faults}))
"""


def _probe(setting):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPU_ALLOCATOR_USE_BFC"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    # On CPUs where TensorFlow turns oneDNN on (AVX-512 VNNI / BF16 and newer, e.g. the CI
    # machine of session 10), the CPU device allocates through oneDNN's own pooled allocator
    # and both settings fault alike (measured: 19k and 19k). Off, the allocator the setting
    # chooses is the one TensorFlow uses, as on CPUs without oneDNN (session 8's machine).
    env["TF_ENABLE_ONEDNN_OPTS"] = "0"
    if setting is not None:
        env["TF_CPU_ALLOCATOR_USE_BFC"] = setting
    done = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_defaults_to_the_bfc_allocator_and_respects_an_explicit_choice():
    default, opted_out = _probe(None), _probe("false")
    assert default["setting"] == "true"
    assert opted_out["setting"] == "false"
    # The pooled allocator reuses its memory: the activations are not faulted in again on
    # every op (measured: ~18k faults against ~180k for ten of these convolutions).
    assert default["faults"] * 3 < opted_out["faults"], (default, opted_out)
