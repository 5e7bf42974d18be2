"""Reading Keras files: the Keras 3 `.keras` archive, the `.keras` archive of
TensorFlow 2.13-2.15 and legacy `.h5` files, with h5py and zipfile only (no
stored Python code is ever run)."""
import io
import json
import zipfile
import zlib

import h5py
import numpy as np

from .. import Refusal

class KerasFile:
    """What the importer needs from a Keras file: the model config (a dict with
    "class_name" and "config"), the Keras major version that wrote it, and
    `weights(path, layer)`: the arrays of the primitive layer reached through the
    nested model names `path`, as {name: array} or, for positional formats,
    {index: array}."""

    def __init__(self, config, keras_major, weights_reader):
        self.config = config
        self.keras_major = keras_major
        self.weights = weights_reader


def _decode(value):
    return value.decode("utf8") if isinstance(value, bytes) else value


def _major(version, default):
    """The major number of a Keras version string such as "2.4.0"."""
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return default


def read_keras_file(path):
    """Opens `path` as a .keras archive or a legacy .h5 file; raises Refusal."""
    try:
        with open(path, "rb") as f:
            magic = f.read(8)
    except OSError as e:
        raise Refusal(f"cannot read {path}: {e.strerror}") from None
    if magic.startswith(b"PK"):
        return _read_archive(path)
    if magic == b"\x89HDF\r\n\x1a\n":
        return _read_legacy_h5(path)
    raise Refusal(f"{path} is neither a .keras archive (zip) nor a legacy Keras .h5 file (HDF5)")


def _read_archive(path):
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            for needed in ("config.json", "model.weights.h5"):
                if needed not in names:
                    raise Refusal(f"{path}: the .keras archive has no {needed}")
            config = json.loads(archive.read("config.json"))
            metadata = json.loads(archive.read("metadata.json")) if "metadata.json" in names else {}
            weights_bytes = archive.read("model.weights.h5")
    except (zipfile.BadZipFile, EOFError, zlib.error) as e:
        raise Refusal(f"{path} is a truncated or corrupt .keras archive ({e})") from None
    except json.JSONDecodeError as e:
        raise Refusal(f"{path}: config.json or metadata.json is not valid JSON ({e})") from None
    try:
        store = h5py.File(io.BytesIO(weights_bytes), "r")
    except OSError as e:
        raise Refusal(f"{path}: model.weights.h5 is not a readable HDF5 file ({e})") from None

    def weights(nesting, layer):
        group = store
        for name in list(nesting) + [layer]:
            for container in ("layers", "_layer_checkpoint_dependencies"):
                if container in group and name in group[container]:
                    group = group[container][name]
                    break
            else:
                return {}
        if "vars" not in group:
            return {}
        return {int(k): np.asarray(v) for k, v in group["vars"].items()}

    return KerasFile(config, _major(metadata.get("keras_version"), 3), weights)


def _read_legacy_h5(path):
    try:
        store = h5py.File(path, "r")
        config = store.attrs.get("model_config")
    except OSError as e:
        raise Refusal(f"{path} is a truncated or unreadable HDF5 file ({e})") from None
    if config is None:
        raise Refusal(f"{path} holds weights only (no model_config): save the whole model "
                      "with model.save(), not model.save_weights()")
    config = json.loads(_decode(config))
    if "model_weights" not in store:
        raise Refusal(f"{path} has a model config but no model_weights group")
    root = store["model_weights"]
    version = _decode(store.attrs.get("keras_version", root.attrs.get("keras_version", "2")))

    def datasets(group, prefix=()):
        for key, item in group.items():
            if isinstance(item, h5py.Dataset):
                yield prefix + (key,), item
            else:
                yield from datasets(item, prefix + (key,))

    def weights(nesting, layer):
        top = (list(nesting) + [layer])[0]
        if top not in root:
            return {}
        found = {}
        layer_parts = tuple(layer.split("/"))  # "conv1/conv" (DenseNet) is a path of groups in HDF5
        for parts, dataset in datasets(root[top]):
            # ".../<layer>/<weight>:0" (Keras 2) or ".../<layer>/<weight>" (Keras 3)
            if len(parts) > len(layer_parts) and parts[-1 - len(layer_parts):-1] == layer_parts:
                found.setdefault(parts[-1].split(":")[0], []).append((parts, dataset))
        chosen = {}
        for name, candidates in found.items():
            if len(candidates) > 1:  # the same layer name in two nested models, or "bn" beside "conv1/bn"
                exact = [c for c in candidates if c[0][:-1] in (layer_parts, tuple(nesting[1:]) + layer_parts)]
                candidates = exact or [c for c in candidates if all(n in c[0] for n in nesting[1:])]
            if len(candidates) != 1:
                raise Refusal(f"layer {layer!r}: weight {name!r} is stored "
                              f"{len(candidates) or 'no'} times under model_weights/{top}")
            chosen[name] = np.asarray(candidates[0][1])
        return chosen

    return KerasFile(config, _major(version, 2), weights)


