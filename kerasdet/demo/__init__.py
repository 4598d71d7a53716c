"""The `kerasdet demo` command's two demos.

* `kerasdet.demo.detector` (`kerasdet demo`): the bundled `faster_rcnn_tiny` weights on
  fresh synthetic images — COCO AP, an annotated PNG, TFLite export and a parity check.
* `kerasdet.demo.layers` (`kerasdet demo --layers`): a small untrained graph built from
  every foundation layer, converted to builtin-op TFLite and compared with Keras.
* `kerasdet.demo.parity`: the rule that decides whether two runs of a detector agree.
"""

from kerasdet.demo.detector import demo_examples, run_demo
from kerasdet.demo.layers import FoundationDemoModel, run_layers_demo, synthetic_image
from kerasdet.demo.parity import ParityReport, check_parity

__all__ = [
    "FoundationDemoModel",
    "ParityReport",
    "check_parity",
    "demo_examples",
    "run_demo",
    "run_layers_demo",
    "synthetic_image",
]
