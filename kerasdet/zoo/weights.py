"""Weights for zoo models: where a file comes from, that it is the right file, and loading
it into a model by layer name.

Sources (the `weights` argument of `kerasdet.zoo.load`):

* `None`: random initialization.
* A path to a `.weights.h5` file (`model.save_weights`) or a `.keras` file (`model.save`).
* The name of an entry of the configuration's `weights:` mapping: a bundled file (`file:`,
  shipped in `BUNDLED_DIR` beside this module, or beside a user's YAML file) or a registry
  file (`url:`, downloaded once with `keras.utils.get_file` into `$KERASDET_HOME/weights`,
  default `~/.kerasdet/weights`). Either way the file's SHA-256 must equal the entry's
  `sha256` before anything is loaded.
* `"imagenet"`: the backbone's ImageNet weights from `keras.applications` (needs network
  access the first time); the detection layers stay randomly initialized.

Loading is by layer name, not by position in the model: a weights file stores each layer's
variables under the layer's name (Keras writes it as metadata next to them), and this module
pairs each weight-carrying layer of the model with the file's layer of the same qualified
name (`"roi_head/class_logits"`, `"conv3"`, `"block4_conv1"`). So a file still loads when
weight-free layers differ (another image pyramid, merge mode, dropout), and when
`num_classes` changes only the class-dependent layers — whose shapes then differ — are left
freshly initialized while every other weight is kept (fine-tuning).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import pathlib
import re
import shutil
import tempfile
import urllib.parse
import zipfile

import h5py
import keras

from kerasdet.zoo.config import WEIGHTS_SUFFIXES, WeightsEntry, ZooConfig, suggestion

# Bundled weights files of the shipped configurations (tests may point this elsewhere).
BUNDLED_DIR = pathlib.Path(__file__).resolve().parent / "weights"


class WeightsError(ValueError):
    """Weights that cannot be used: a SHA-256 mismatch, a download that failed (no
    network), a missing bundled file, or a file that does not fit the model."""


def kerasdet_home() -> pathlib.Path:
    """`$KERASDET_HOME`, default `~/.kerasdet`: where downloaded weights are cached."""
    return pathlib.Path(os.path.expanduser(os.environ.get("KERASDET_HOME") or "~/.kerasdet"))


def sha256_of(path) -> str:
    """Hex SHA-256 of a file (what `sha256sum` prints)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class ResolvedWeights:
    """What a `weights` argument resolved to.

    Attributes:
        path: local file to load, or None.
        entry: the configuration's entry when `weights` named one.
        imagenet: backbone ImageNet weights were asked for.
    """

    path: str | None = None
    entry: WeightsEntry | None = None
    imagenet: bool = False


def _looks_like_path(value: str) -> bool:
    return value.endswith((*WEIGHTS_SUFFIXES, ".h5", ".hdf5", ".json")) or os.sep in value or os.path.exists(value)


def resolve_weights(config: ZooConfig, weights) -> ResolvedWeights:
    """Turns a `weights` argument into a verified local file (downloading if needed).

    Raises:
        ValueError: for an unknown entry name (listing the valid ones, with a close match)
            or a path with an unsupported suffix. FileNotFoundError: for a missing path.
        WeightsError: for a SHA-256 mismatch, a failed download, or a missing bundled file.
    """
    if weights is None:
        return ResolvedWeights()
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"`weights` must be None, a weights name or a file path, got {weights!r}")
    text = os.fspath(weights)
    if text == "imagenet":
        return ResolvedWeights(imagenet=True)
    if text in config.weights:
        entry = config.weights[text]
        path = _fetch_registry(config, entry) if entry.url else _bundled_file(config, entry)
        return ResolvedWeights(path=str(path), entry=entry)
    if _looks_like_path(text):
        if not os.path.isfile(text):
            raise FileNotFoundError(f"weights file {text!r} does not exist")
        if not text.endswith(WEIGHTS_SUFFIXES):
            raise ValueError(
                f"weights file {text!r} must be a Keras 3 {' or '.join(WEIGHTS_SUFFIXES)} file "
                "(model.save_weights / model.save)"
            )
        return ResolvedWeights(path=text)
    valid = [*config.weights, "imagenet"]
    raise ValueError(
        f"unknown weights {text!r} for {config.name!r}.{suggestion(text, valid)} Valid: "
        f"{', '.join(repr(v) for v in valid)}, None, or a path ending in {' or '.join(WEIGHTS_SUFFIXES)}"
    )


def _verify(path, entry: WeightsEntry, origin: str) -> None:
    actual = sha256_of(path)
    if actual != entry.sha256:
        raise WeightsError(
            f"SHA-256 mismatch for weights {entry.name!r} ({origin}): expected {entry.sha256}, "
            f"got {actual}; nothing was loaded"
        )


def bundled_dir(config: ZooConfig) -> pathlib.Path:
    """Where the `file:` entries of `config` live: `BUNDLED_DIR` for shipped
    configurations, the YAML file's own directory for user files."""
    return pathlib.Path(BUNDLED_DIR) if config.bundled else pathlib.Path(config.path).resolve().parent


def _bundled_file(config: ZooConfig, entry: WeightsEntry) -> pathlib.Path:
    path = bundled_dir(config) / entry.file
    if not path.is_file():
        raise WeightsError(
            f"weights {entry.name!r} of {config.name!r}: file {str(path)!r} is missing"
            + (" from this kerasdet installation" if config.bundled else "")
        )
    _verify(path, entry, str(path))
    return path


def _fetch_registry(config: ZooConfig, entry: WeightsEntry) -> pathlib.Path:
    # Cache under a name that carries the hash, so a new file for the same URL never
    # collides with an old download.
    base = os.path.basename(urllib.parse.urlsplit(entry.url).path)
    suffix = next(s for s in WEIGHTS_SUFFIXES if base.endswith(s))
    fname = f"{base[: -len(suffix)]}-{entry.sha256[:12]}{suffix}"
    cache = kerasdet_home()
    # get_file quietly caches in /tmp/.keras when `cache_dir` is not a writable directory:
    # create it first so the file lands where KERASDET_HOME says.
    with contextlib.suppress(OSError):
        (cache / "weights").mkdir(parents=True, exist_ok=True)
    target = cache / "weights" / fname
    try:
        path = keras.utils.get_file(
            fname, origin=entry.url, file_hash=entry.sha256, hash_algorithm="sha256",
            cache_dir=str(cache), cache_subdir="weights",
        )
    except ValueError as error:  # get_file's hash check, after the download
        with contextlib.suppress(OSError):
            target.unlink()  # a corrupt file must not stay in the cache
        raise WeightsError(
            f"SHA-256 mismatch for weights {entry.name!r} of {config.name!r} downloaded from "
            f"{entry.url}: expected {entry.sha256}; the file was deleted and nothing was loaded "
            f"({' '.join(str(error).split())})"
        ) from None
    except Exception as error:  # get_file raises a bare Exception for network failures
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise WeightsError(
            f"could not download weights {entry.name!r} of {config.name!r} from {entry.url} "
            f"(registry weights need network access once; they are then cached in "
            f"{cache / 'weights'}): {first}"
        ) from None
    # get_file checks the hash only when it downloads; check a cached file here too.
    _verify(path, entry, entry.url)
    return pathlib.Path(path)


# --- loading by layer name -------------------------------------------------------------------


def _own_variables(layer) -> list:
    # The variables `Layer.save_own_variables` writes, in its order.
    return list(layer._trainable_variables) + list(layer._non_trainable_variables)


def _is_functional(layer) -> bool:
    obj_type = getattr(layer, "_obj_type", None)
    return callable(obj_type) and obj_type() in ("Functional", "Sequential")


def model_layers_by_name(model) -> dict:
    """`{qualified name: layer}` for every layer of `model` that owns variables.

    A layer's qualified name is its name, prefixed by the names of the enclosing layers
    that are not functional models (`"roi_head/fc1"`, `"rpn_head/conv"`, `"conv3"`): the
    same rule `weights_by_name` applies to a file, so it does not depend on how functional
    sub-models are nested.
    """
    out, seen = {}, set()

    def visit(layer, prefix, root=False):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        if _own_variables(layer):
            key = prefix + layer.name
            if key in out:
                raise WeightsError(f"model {model.name!r} has two layers with variables named {key!r}")
            out[key] = layer
        # Keras saves a functional model's `layers` first, under no name of their own;
        # every other sub-layer is reached through an attribute, under its parent's name.
        for child in layer.layers if _is_functional(layer) else ():
            visit(child, "" if root else prefix)
        for child in layer._layers:
            visit(child, "" if root else f"{prefix}{layer.name}/")

    visit(model, "", root=True)
    return out


def _weights_h5(path, stack: contextlib.ExitStack) -> h5py.File:
    path = os.fspath(path)
    if path.endswith(".keras"):
        # A .keras file is a zip archive whose weights are the member model.weights.h5.
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="kerasdet-"))
        try:
            with zipfile.ZipFile(path) as archive, archive.open("model.weights.h5") as src:
                with open(os.path.join(tmp, "model.weights.h5"), "wb") as dst:
                    shutil.copyfileobj(src, dst)
        except (zipfile.BadZipFile, KeyError) as error:
            raise WeightsError(
                f"{path!r} is not a Keras 3 .keras archive with weights, or it is truncated ({error}); "
                "expected a complete file written by model.save"
            ) from None
        inner = os.path.join(tmp, "model.weights.h5")
        try:
            return stack.enter_context(h5py.File(inner, "r"))
        except OSError as error:
            raise WeightsError(f"{path!r}: its model.weights.h5 is {_h5_problem(error)}") from None
    try:
        return stack.enter_context(h5py.File(path, "r"))
    except OSError as error:
        raise WeightsError(f"weights file {path!r} is {_h5_problem(error)}") from None


def _h5_problem(error: OSError) -> str:
    """What is wrong with an HDF5 file h5py cannot open, in words (HDF5 reports a
    truncated file as `truncated file: eof = N, ..., stored_eof = M`)."""
    text = " ".join(str(error).split())
    truncated = re.search(r"truncated file: eof = (\d+).*stored_eof = (\d+)", text)
    if truncated:
        have, want = (int(v) for v in truncated.groups())
        return (
            f"truncated: {have:,} of its {want:,} bytes (an interrupted download or copy?); "
            "expected a complete .weights.h5 file"
        )
    return f"not a readable .weights.h5 file ({text}); expected a file written by model.save_weights"


def weights_by_name(h5: h5py.File) -> dict:
    """`{qualified name: [h5py datasets]}` of a Keras 3 weights file (see
    `model_layers_by_name`)."""
    out = {}

    def visit_saveable(group, prefix, root=False):
        own = group.get("vars")
        name = str(own.attrs.get("name", "")) if own is not None else ""
        if own is not None and len(own):
            key = prefix + name
            if key in out:
                raise WeightsError(f"weights file has two layers with variables named {key!r}")
            out[key] = [own[str(i)] for i in range(len(own))]
        for attr, child in group.items():
            if attr == "vars" or not isinstance(child, h5py.Group):
                continue
            child_prefix = prefix if (attr == "layers" or root) else f"{prefix}{name}/"
            visit_node(child, "" if root else child_prefix)

    def visit_node(group, prefix):
        if "vars" in group:  # a saveable object
            visit_saveable(group, prefix)
        else:  # a list / dict container of saveables
            for child in group.values():
                if isinstance(child, h5py.Group):
                    visit_node(child, prefix)

    visit_saveable(h5, "", root=True)
    return out


@dataclasses.dataclass(frozen=True)
class LoadReport:
    """What `load_weights_by_name` did.

    Attributes:
        loaded: qualified names of the layers whose weights came from the file.
        reinitialized: class-dependent layers left freshly initialized because their shapes
            differ from the file's (a different `num_classes`).
    """

    loaded: tuple
    reinitialized: tuple


def load_weights_by_name(model, path, *, class_layers=(), allow_class_mismatch=False) -> LoadReport:
    """Loads a `.weights.h5` / `.keras` file into `model` by qualified layer name.

    Every weight-carrying layer of `model` must be in the file with the same shapes, except
    the `class_layers` (qualified names) when `allow_class_mismatch`: those keep their
    fresh initialization if their shapes differ. Layers in the file that the model lacks
    are ignored (e.g. an optimizer's state). Nothing is assigned unless every check passes.

    Raises:
        WeightsError: naming the missing layers or the first shape mismatch.
    """
    layers = model_layers_by_name(model)
    with contextlib.ExitStack() as stack:
        stored = weights_by_name(_weights_h5(path, stack))
        missing = [key for key in layers if key not in stored]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise WeightsError(
                f"weights file {os.fspath(path)!r} does not fit model {model.name!r}: it has no "
                f"weights for layer(s) {shown} (was it saved from another configuration?)"
            )
        plan, skipped = [], []
        for key, layer in layers.items():
            variables, values = _own_variables(layer), stored[key]
            shapes = [tuple(v.shape) for v in variables]
            file_shapes = [tuple(d.shape) for d in values]
            if shapes == file_shapes:
                plan.append((key, layer, values))
                continue
            if key in class_layers and allow_class_mismatch:
                skipped.append(key)
                continue
            hint = (
                "; the weights have another number of classes: pass num_classes to load them "
                "with new class-dependent layers"
                if key in class_layers else " (was it saved from another configuration?)"
            )
            raise WeightsError(
                f"weights file {os.fspath(path)!r} does not fit model {model.name!r}: layer {key!r} "
                f"has shapes {file_shapes} in the file, the model expects {shapes}{hint}"
            )
        # Read every array before assigning any, so a file that is damaged inside leaves
        # the model untouched.
        arrays = []
        for key, layer, values in plan:
            try:
                arrays.append((layer, {str(i): d[()] for i, d in enumerate(values)}))
            except OSError as error:
                raise WeightsError(
                    f"weights file {os.fspath(path)!r} is damaged: the weights of layer {key!r} cannot "
                    f"be read ({' '.join(str(error).split())})"
                ) from None
        for layer, stored_arrays in arrays:
            layer.load_own_variables(stored_arrays)
    return LoadReport(loaded=tuple(key for key, _, _ in plan), reinitialized=tuple(skipped))


def stored_shape(path, key: str, index: int = -1):
    """Shape of variable `index` of layer `key` in a weights file, or None if absent."""
    with contextlib.ExitStack() as stack:
        values = weights_by_name(_weights_h5(path, stack)).get(key)
        return tuple(values[index].shape) if values else None
