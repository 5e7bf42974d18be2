"""dermal: classify skin-lesion photos and explain the scores with class activation maps.

    import dermal
    with dermal.Model("demo-model.pt") as model:
        result = model.predict("photo.jpg")
        print(result.top[0].label, result.top[0].probability)
        with open("gradcam.jpg", "wb") as file:
            file.write(result.explanations[0].overlay)

The scores are a model's output, not a diagnosis.

A Model may be shared by many threads: predictions run on the model's own
inference threads in the C library, without the GIL. Results are plain Python
objects owning copies of their data; heatmaps are numpy float32 arrays. Every
failure raises a subclass of DermalError.
"""
from __future__ import annotations

import ctypes
import dataclasses
import os
import sys
import threading
from ctypes import byref, c_char_p, c_float, c_int, c_size_t, c_uint64, c_void_p
from typing import TYPE_CHECKING, Any, Dict, List, NamedTuple, Optional, Tuple, Union

import numpy

from . import _native
from ._native import ABI_VERSION, lib

if TYPE_CHECKING:
    import PIL.Image

__version__ = "0.2.0"

__all__ = [
    "__version__", "ABI_VERSION", "library_version", "memory_status", "MemoryStatus",
    "Model", "Result", "ClassScore", "Explanation", "Faithfulness",
    "DermalError", "InvalidArgument", "FileError", "InvalidImage", "UnsupportedImage", "ImageTooLarge",
    "InvalidModel", "ModelNotLoaded", "UnknownLayer", "UnknownClass", "OutOfMemory", "InternalError",
    "ExplainDisabled", "Busy", "NumericsMismatch",
]


# ---- Errors: one class per dermal_status; status_name is the C library's name for it ----

class DermalError(Exception):
    """A failure reported by dermal: .status is the dermal_status number,
    .status_name its C name (e.g. "invalid_image"), str() the message."""

    status: int = -1
    status_name: str = "unknown"

    def __init__(self, message: str, status: Optional[int] = None) -> None:
        super().__init__(message)
        if status is not None:  # a status this package has no class for
            self.status = status
            self.status_name = lib.dermal_status_name(status).decode()


class InvalidArgument(DermalError):
    """A wrong argument or option value."""
    status = 1


class FileError(DermalError):
    """A file could not be read (C name "io")."""
    status = 2


class InvalidImage(DermalError):
    """Empty, truncated or corrupt image data."""
    status = 3


class UnsupportedImage(DermalError):
    """A format or pixel layout dermal does not decode."""
    status = 4


class ImageTooLarge(DermalError):
    """More pixels than the model's max_pixels."""
    status = 5


class InvalidModel(DermalError):
    """Not a dermal model, or its description is wrong."""
    status = 6


class ModelNotLoaded(DermalError):
    """A model used after it was closed."""
    status = 7


class UnknownLayer(DermalError):
    """A CAM layer that is not a stage with spatial output."""
    status = 8


class UnknownClass(DermalError):
    """A class label the model does not have."""
    status = 9


class OutOfMemory(DermalError):
    """An allocation failed."""
    status = 10


class InternalError(DermalError):
    """An unexpected failure inside LibTorch or dermal (C name "internal")."""
    status = 11


class ExplainDisabled(DermalError):
    """A heatmap was asked of a model opened with explain=False."""
    status = 12


class Busy(DermalError):
    """No inference thread took the request within queue_timeout_ms."""
    status = 13


class NumericsMismatch(DermalError):
    """Neither the optimised nor the frozen graphs compute the model file's
    probe as its exporter did; the message names the largest difference, the
    CPU features oneDNN used and the remedy to try (ONEDNN_MAX_CPU_ISA=AVX2)."""
    status = 14


# The table: status number -> class, each class's status_name from the C library.
_ERRORS: Dict[int, type] = {}
for _class in DermalError.__subclasses__():
    _class.status_name = lib.dermal_status_name(_class.status).decode()
    _ERRORS[_class.status] = _class
del _class


def _translated(error: _native.StatusError) -> DermalError:
    """The DermalError subclass instance for a C failure."""
    cls = _ERRORS.get(error.status)
    return cls(error.message) if cls else DermalError(error.message, error.status)


# ---- Library -----------------------------------------------------------------------------

class MemoryStatus(NamedTuple):
    current_rss_bytes: int  # VmRSS
    peak_rss_bytes: int     # VmHWM


def library_version() -> str:
    """The version of the C library in use, e.g. "0.2.0" (the package's is __version__)."""
    return lib.dermal_version_string().decode()


def memory_status() -> MemoryStatus:
    """The process's resident set and its peak, in bytes."""
    current, peak = c_uint64(), c_uint64()
    try:
        lib.dermal_memory_status(byref(current), byref(peak))
    except _native.StatusError as error:
        raise _translated(error) from None
    return MemoryStatus(current.value, peak.value)


# ---- Results -----------------------------------------------------------------------------

class ClassScore(NamedTuple):
    label: str
    index: int          # position in Model.labels
    probability: float


ROAD_PERCENTS = (10, 20, 50, 80)


@dataclasses.dataclass(frozen=True)
class Faithfulness:
    """How the explained class's probability moves when the photo is changed
    where the map points (docs/cam-methods.md); model scores about the map,
    not a diagnosis. cam_mult_image_change: p(input x map) - p(input); road:
    percent removed (10, 20, 50, 80) -> p(input with that share of the most
    important pixels removed, ROAD) - p(input)."""

    cam_mult_image_change: float
    road: Dict[int, float]


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Explanation:
    """One class activation map. heatmap: at the CAM layer's resolution;
    full_heatmap: at the photo's size (zero outside the part the model saw),
    None unless predict(full_heatmap=True). Both are float32 (height, width)
    arrays with values in [0, 1], 0 and 1 both present unless flat (the map
    had no contrast and is all zeros). overlay: the encoded photo + heatmap,
    None with predict(overlay=False). faithfulness: with
    predict(faithfulness=True) and a map that is not flat, else None."""

    label: str
    index: int
    cam_method: str
    flat: bool
    heatmap: numpy.ndarray
    full_heatmap: Optional[numpy.ndarray]
    overlay: Optional[bytes]
    faithfulness: Optional[Faithfulness] = None

    def __repr__(self) -> str:
        return (f"<dermal.Explanation {self.label!r} {self.cam_method} flat={self.flat} "
                f"heatmap {self.heatmap.shape[1]}x{self.heatmap.shape[0]}>")


@dataclasses.dataclass(frozen=True, eq=False)
class Result:
    """One prediction. top: the best classes, best first; probabilities:
    label -> probability for every label; explanations: one per explained
    class (empty without explain), the top class's first."""

    top: List[ClassScore]
    probabilities: Dict[str, float]
    explanations: List[Explanation]


def _float_map(result: c_void_p, getter: Any, position: int) -> Optional[numpy.ndarray]:
    """A copy of a result's heatmap as a (height, width) float32 array; None when it is 0 x 0."""
    width, height, values = c_int(), c_int(), c_void_p()
    getter(result, position, byref(width), byref(height), byref(values))
    if width.value == 0 or height.value == 0:
        return None
    out = numpy.empty((height.value, width.value), numpy.float32)
    ctypes.memmove(out.ctypes.data, values.value, out.nbytes)
    return out


def _explanation(result: c_void_p, position: int) -> Explanation:
    label, index, method, flat = c_char_p(), c_int(), c_char_p(), c_int()
    lib.dermal_result_explanation_class(result, position, byref(label), byref(index))
    lib.dermal_result_explanation_cam_method(result, position, byref(method))
    lib.dermal_result_explanation_flat(result, position, byref(flat))
    overlay, size = c_void_p(), c_size_t()
    lib.dermal_result_explanation_overlay(result, position, byref(overlay), byref(size))
    heatmap = _float_map(result, lib.dermal_result_explanation_heatmap, position)
    assert heatmap is not None, "the C library returned an explanation without a heatmap"
    present, change, road = c_int(), c_float(), (c_float * len(ROAD_PERCENTS))()
    lib.dermal_result_explanation_faithfulness(result, position, byref(present), byref(change), road)
    faithfulness = Faithfulness(change.value, dict(zip(ROAD_PERCENTS, road))) if present.value else None
    return Explanation(
        label=label.value.decode(), index=index.value, cam_method=method.value.decode(), flat=bool(flat.value),
        heatmap=heatmap, full_heatmap=_float_map(result, lib.dermal_result_explanation_full_heatmap, position),
        overlay=ctypes.string_at(overlay.value, size.value) if size.value else None, faithfulness=faithfulness)


def _result(result: c_void_p, labels: Tuple[str, ...]) -> Result:
    """A Python copy of a dermal_result."""
    count = c_size_t()
    label, index, probability = c_char_p(), c_int(), c_float()
    lib.dermal_result_top_count(result, byref(count))
    top = []
    for rank in range(count.value):
        lib.dermal_result_top(result, rank, byref(label), byref(index), byref(probability))
        top.append(ClassScore(label.value.decode(), index.value, probability.value))
    values = ctypes.POINTER(c_float)()
    lib.dermal_result_probabilities(result, byref(values), byref(count))
    probabilities = dict(zip(labels, values[: count.value]))
    lib.dermal_result_explanation_count(result, byref(count))
    return Result(top, probabilities, [_explanation(result, position) for position in range(count.value)])


# ---- Images ------------------------------------------------------------------------------

PathLike = Union[str, "os.PathLike[str]"]
# What predict() accepts: an encoded photo, its path, an RGB array or a PIL image.
Photo = Union[bytes, bytearray, memoryview, PathLike, numpy.ndarray, "PIL.Image.Image"]


def _encoded_bytes(image: Union[bytes, bytearray, memoryview]) -> numpy.ndarray:
    """The bytes as a uint8 array without a copy (a non-contiguous memoryview is copied once)."""
    if isinstance(image, memoryview) and not image.c_contiguous:
        image = image.tobytes()
    return numpy.frombuffer(image, numpy.uint8)


def _read_file(path: PathLike) -> numpy.ndarray:
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as error:
        raise FileError(f"cannot read the photo {os.fsdecode(path)!r}: {error.strerror or error}") from None
    return numpy.frombuffer(data, numpy.uint8)


def _rgb_rows(array: numpy.ndarray) -> numpy.ndarray:
    """array if it is a uint8 (height, width, 3) array whose rows are packed
    pixels (rows may be padded), else one contiguous copy of it; raises
    InvalidArgument naming a wrong dtype or shape."""
    if array.dtype != numpy.uint8:
        raise InvalidArgument(f"an RGB picture must be a uint8 array, not {array.dtype}")
    if array.ndim != 3 or array.shape[2] != 3:
        raise InvalidArgument(f"an RGB picture must have the shape (height, width, 3), not {array.shape}")
    height, width = array.shape[:2]
    if array.strides[2] == 1 and array.strides[1] == 3 and array.strides[0] >= 3 * width:
        return array
    return numpy.ascontiguousarray(array)


def _is_pil_image(image: Any) -> bool:
    pil = sys.modules.get("PIL.Image")  # a PIL image implies PIL is imported: never import it here
    return pil is not None and isinstance(image, pil.Image)


# ---- Model -------------------------------------------------------------------------------

_OPTIONS_CACHED = 16  # distinct predict-option sets kept per model; more are built per call


class Model:
    """A dermal model file.

    preload=False loads it at the first prediction; threads is LibTorch's
    intra-op thread count on each of the model's inference threads (the
    host's own LibTorch settings are left alone); cam_layer=None
    explains the model's own CAM layer; explain=False never computes heatmaps
    (less memory); optimise=False serves frozen graphs only, not optimised
    for inference (slower on most machines; where the load's checks find the
    optimised graphs wrong or crashing, frozen ones are served anyway and
    probe_result says "frozen_fallback"); photos with more than max_pixels
    pixels are refused before decoding. The model runs predictions on
    max_concurrent inference threads of its own, whatever the number of
    calling threads; a prediction no inference thread has taken within
    queue_timeout_ms raises Busy. A model
    loaded before os.fork() serves in the children, sharing its weights.
    tune_allocator=True changes glibc's malloc thresholds for the whole
    process (a lower load peak, and faster requests where page faults are
    slow; see the package README).
    release_memory_after_predict=False keeps the memory a prediction freed
    for the next one instead of handing the process's free heap back to the
    system after each (faster where page faults are slow, more resident
    memory between requests).

    close() (or leaving a with block) frees the model once predictions in
    flight have finished; later calls raise ModelNotLoaded. unload() frees
    only the weights: the next prediction loads them again.
    """

    def __init__(self, path: PathLike, *, preload: bool = True, threads: int = 1, cam_layer: Optional[str] = None,
                 explain: bool = True, optimise: bool = True, max_pixels: int = 40_000_000, max_concurrent: int = 1,
                 queue_timeout_ms: int = 30_000, tune_allocator: bool = False,
                 release_memory_after_predict: bool = True) -> None:
        self._handle: Optional[int] = None
        self._in_flight = 0
        self._idle = threading.Condition()
        self._labels: Optional[Tuple[str, ...]] = None
        self._options: Dict[tuple, int] = {}  # predict-option values -> C options object
        self._options_lock = threading.Lock()
        self.path = os.fspath(path)
        options, handle = c_void_p(), c_void_p()
        try:
            lib.dermal_load_options_create(byref(options))
            try:
                _set_each(options, "dermal_load_options_set_", (
                    ("threads", threads), ("preload", bool(preload)), ("explain", bool(explain)),
                    ("optimise", bool(optimise)),
                    ("cam_layer", None if cam_layer is None else _text("cam_layer", cam_layer)),
                    ("max_pixels", max_pixels), ("max_concurrent", max_concurrent),
                    ("queue_timeout_ms", queue_timeout_ms), ("tune_allocator", bool(tune_allocator)),
                    ("release_memory_after_predict", bool(release_memory_after_predict))))
                lib.dermal_model_open(os.fsencode(path), options, byref(handle))
            finally:
                lib.dermal_load_options_free(options)
        except _native.StatusError as error:
            raise _translated(error) from None
        self._handle = handle.value

    def predict(self, image: Photo, *, top_k: int = 3, explain: Optional[bool] = None,
                cam_method: str = "gradcam", cam_class: Optional[str] = None, cam_top_k: int = 1,
                overlay: bool = True, full_heatmap: bool = False, colormap: str = "jet",
                overlay_format: str = "jpeg", overlay_alpha: float = 0.45, jpeg_quality: int = 90,
                faithfulness: bool = False, eigen_smooth: bool = False, aug_smooth: bool = False) -> Result:
        """Classifies a photo and, unless explain is False, explains it.

        image is one of: the encoded photo (JPEG, PNG or BMP) as bytes,
        bytearray or memoryview; a path (str or os.PathLike) to such a file;
        an upright RGB picture as a numpy uint8 array of shape (height, width,
        3), used without a copy when each row is packed pixels; a PIL image,
        converted to RGB. EXIF orientation is applied to encoded photos and
        files only: a PIL image or array is taken as it is, so rotate it first
        (PIL.ImageOps.exif_transpose).

        top_k classes are listed. explain=None follows the model's explain;
        cam_method is "gradcam", "gradcam++", "xgradcam", "hirescam",
        "layercam", "eigencam", "gradcamelementwise", "eigengradcam",
        "finercam", "fem", "kpcacam", "ablationcam" or "scorecam" (docs/cam-methods.md); cam_class explains that label, else the
        cam_top_k best classes are explained. overlay=False skips the encoded
        overlay (overlay_format "jpeg" at jpeg_quality 1..100, or "png";
        colormap "jet" or "viridis"; overlay_alpha 0..1, the heatmap's weight).
        full_heatmap=True adds the map at the photo's size (4 bytes per photo
        pixel per explanation; the overlay does not need it).
        faithfulness=True adds each map's Faithfulness (five more forwards
        and four sparse solves per explanation; docs/cam-methods.md).
        eigen_smooth=True makes the map the first principal component of the
        per-channel terms it sums (pytorch-grad-cam's eigen_smooth).
        aug_smooth=True makes it the mean of the maps of six flipped and
        scaled copies of the input (pytorch-grad-cam's aug_smooth; up to six
        times a request's time).
        """
        handle = self._acquire()
        options, temporary = None, False
        try:
            options, temporary = self._predict_options((
                top_k, explain, cam_method, cam_class, cam_top_k, overlay, full_heatmap, colormap, overlay_format,
                overlay_alpha, jpeg_quality, faithfulness, eigen_smooth, aug_smooth))
            if isinstance(image, (bytes, bytearray, memoryview)):
                pixels, encoded = _encoded_bytes(image), True
            elif isinstance(image, (str, os.PathLike)):
                pixels, encoded = _read_file(image), True
            elif isinstance(image, numpy.ndarray):
                pixels, encoded = _rgb_rows(image), False
            elif _is_pil_image(image):
                pixels, encoded = numpy.asarray(image if image.mode == "RGB" else image.convert("RGB")), False
            else:
                raise InvalidArgument("image must be encoded bytes, a path, a numpy uint8 (height, width, 3) array "
                                      f"or a PIL image, not {type(image).__name__}")
            result = c_void_p()
            if encoded:
                lib.dermal_model_predict(handle, pixels.ctypes.data, pixels.nbytes, options, byref(result))
            else:
                height, width = pixels.shape[:2]
                lib.dermal_model_predict_rgb(handle, pixels.ctypes.data, width, height, pixels.strides[0], options,
                                             byref(result))
            try:
                return _result(result, self._labels or self._read_labels(handle))
            finally:
                lib.dermal_result_free(result)
        except _native.StatusError as error:
            raise _translated(error) from None
        finally:
            if temporary:
                lib.dermal_predict_options_free(options)
            self._release()

    def load(self) -> None:
        """Loads the weights now if they are not loaded."""
        self._call(lib.dermal_model_load)

    def unload(self) -> None:
        """Frees the weights (predictions in flight finish first); the next prediction loads them again."""
        self._call(lib.dermal_model_unload)

    @property
    def loaded(self) -> bool:
        """Whether the weights are in memory; False once closed."""
        flag = c_int()
        try:
            self._call(lib.dermal_model_is_loaded, byref(flag))
        except ModelNotLoaded:
            return False
        return bool(flag.value)

    @property
    def weight_bytes(self) -> int:
        """Bytes of the loaded weights and buffers; 0 when unloaded or closed."""
        count = c_uint64()
        try:
            self._call(lib.dermal_model_weight_bytes, byref(count))
        except ModelNotLoaded:
            return 0
        return count.value

    @property
    def probe_result(self) -> str:
        """What the load found when it ran the file's probe through the graphs:
        "none" (not loaded or closed, or a file without a probe), "passed", or
        "frozen_fallback" (the optimised graphs disagreed with the probe, or
        oneDNN's tensor ops crashed in the load's check, files without a probe
        included: the frozen graphs are served, slower)."""
        name = c_char_p()
        try:
            self._call(lib.dermal_model_probe_result, byref(name))
        except ModelNotLoaded:
            return "none"
        return name.value.decode()

    @property
    def labels(self) -> Tuple[str, ...]:
        """The class labels in the model's order, read once (the first read
        loads the model if it has never been loaded)."""
        handle = self._acquire()
        try:
            return self._labels or self._read_labels(handle)
        except _native.StatusError as error:
            raise _translated(error) from None
        finally:
            self._release()

    def close(self) -> None:
        """Frees the model once predictions in flight have finished; idempotent."""
        with self._idle:
            handle, self._handle = self._handle, None
            self._idle.wait_for(lambda: self._in_flight == 0)
            options, self._options = self._options, {}
        for cached in options.values():
            lib.dermal_predict_options_free(cached)
        if handle is not None:
            lib.dermal_model_free(handle)

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __del__(self) -> None:
        # The safety net: nothing else can be using the model while it is collected.
        if getattr(self, "_handle", None) is not None:
            for cached in self._options.values():
                lib.dermal_predict_options_free(cached)
            lib.dermal_model_free(self._handle)

    def __repr__(self) -> str:
        return f"<dermal.Model {self.path!r}{'' if self._handle else ' closed'}>"

    # -- internals --

    def _acquire(self) -> int:
        """The C handle, kept alive until _release(); raises ModelNotLoaded once closed."""
        with self._idle:
            if self._handle is None:
                raise ModelNotLoaded(f"the model {self.path!r} was closed")
            self._in_flight += 1
            return self._handle

    def _release(self) -> None:
        """Ends an _acquire()."""
        with self._idle:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.notify_all()

    def _call(self, function: Any, *arguments: Any) -> None:
        handle = self._acquire()
        try:
            function(handle, *arguments)
        except _native.StatusError as error:
            raise _translated(error) from None
        finally:
            self._release()

    def _read_labels(self, handle: int) -> Tuple[str, ...]:
        count, label = c_size_t(), c_char_p()
        lib.dermal_model_label_count(handle, byref(count))
        labels = []
        for index in range(count.value):
            lib.dermal_model_label(handle, index, byref(label))
            labels.append(label.value.decode())
        self._labels = tuple(labels)
        return self._labels

    def _predict_options(self, values: tuple) -> Tuple[int, bool]:
        """The C options object for these predict() values, and whether it is
        temporary (the caller frees it). Each distinct set is built once and
        kept until close() (C options objects may be read by many threads at
        once); once _OPTIONS_CACHED sets are kept, others are built per call.
        Raises InvalidArgument naming a wrong value."""
        key: Optional[tuple] = values
        try:
            cached = self._options.get(values)
        except TypeError:  # an unhashable value, named by _set_each below
            cached, key = None, None
        if cached is not None:
            return cached, False
        with self._options_lock:
            cached = self._options.get(key) if key is not None else None
            if cached is not None:
                return cached, False
            top_k, explain, cam_method, cam_class, cam_top_k, overlay, full_heatmap, colormap, overlay_format, \
                overlay_alpha, jpeg_quality, faithfulness, eigen_smooth, aug_smooth = values
            settings = [("top_k", top_k), ("cam_method", _text("cam_method", cam_method)),
                        ("cam_class", None if cam_class is None else _text("cam_class", cam_class)),
                        ("cam_top_k", cam_top_k), ("overlay", bool(overlay)), ("full_heatmap", bool(full_heatmap)),
                        ("colormap", _text("colormap", colormap)),
                        ("overlay_format", _text("overlay_format", overlay_format)),
                        ("overlay_alpha", overlay_alpha), ("jpeg_quality", jpeg_quality),
                        ("faithfulness", bool(faithfulness)), ("eigen_smooth", bool(eigen_smooth)),
                        ("aug_smooth", bool(aug_smooth))]
            if explain is not None:
                settings.append(("explain", bool(explain)))
            options = c_void_p()
            lib.dermal_predict_options_create(byref(options))
            try:
                _set_each(options, "dermal_predict_options_set_", settings)
            except BaseException:
                lib.dermal_predict_options_free(options)
                raise
            if key is None or len(self._options) >= _OPTIONS_CACHED:
                return options.value, True
            self._options[key] = options.value
            return options.value, False


def _text(name: str, value: Any) -> bytes:
    if not isinstance(value, str):
        raise InvalidArgument(f"{name} must be a str, not {type(value).__name__}")
    return value.encode()


def _set_each(options: c_void_p, prefix: str, settings: Any) -> None:
    """Calls prefix + name for each (name, value); raises InvalidArgument
    naming an option whose value has the wrong type or is refused."""
    for name, value in settings:
        try:
            getattr(lib, prefix + name)(options, value)
        except ctypes.ArgumentError:
            raise InvalidArgument(f"{name}={value!r}: a {type(value).__name__} where a number is expected") from None
        except _native.StatusError as error:
            raise _translated(error) from None
