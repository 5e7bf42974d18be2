"""dermal: classify skin-lesion photos and explain them with Grad-CAM heatmaps.

    with dermal.Model("demo-model.pt") as model:
        result = model.predict(open("photo.jpg", "rb").read())
        print(result.top[0].label, result.top[0].probability)
        open("gradcam.jpg", "wb").write(result.overlay)

The scores are a model's output, not a diagnosis.

A Model may be shared by many threads: predictions run in the C library
without the GIL. Results are plain Python objects that own copies of their
data. Every failure raises a subclass of DermalError.
"""
import collections
import contextlib
import ctypes
import os
import threading
from ctypes import POINTER, byref, c_char_p, c_float, c_int, c_size_t, c_uint64, c_void_p

from . import _native
from ._native import ABI_VERSION, lib

try:
    import numpy
except ImportError:  # heatmaps become lists of rows
    numpy = None

__all__ = [
    "ABI_VERSION", "Model", "Result", "ClassScore", "MemoryStatus", "memory_status", "version",
    "DermalError", "InvalidArgument", "FileError", "InvalidImage", "UnsupportedImage", "ImageTooLarge",
    "InvalidModel", "ModelNotLoaded", "UnknownLayer", "UnknownClass", "OutOfMemory", "InternalError",
    "GradcamDisabled", "Busy",
]


class DermalError(Exception):
    """A failure reported by dermal: .code is the dermal_status number,
    .status_name its name (e.g. "invalid_image"), str() the message."""

    code = None

    def __init__(self, message, code=None):
        super().__init__(message)
        if code is not None:
            self.code = code
        self.status_name = lib.dermal_status_name(self.code).decode() if self.code is not None else None


class InvalidArgument(DermalError):
    code = 1


class FileError(DermalError):
    code = 2


class InvalidImage(DermalError):
    code = 3


class UnsupportedImage(DermalError):
    code = 4


class ImageTooLarge(DermalError):
    code = 5


class InvalidModel(DermalError):
    code = 6


class ModelNotLoaded(DermalError):
    code = 7


class UnknownLayer(DermalError):
    code = 8


class UnknownClass(DermalError):
    code = 9


class OutOfMemory(DermalError):
    code = 10


class InternalError(DermalError):
    code = 11


class GradcamDisabled(DermalError):
    code = 12


class Busy(DermalError):
    code = 13


_ERROR_CLASSES = {cls.code: cls for cls in DermalError.__subclasses__()}


@contextlib.contextmanager
def _translated_errors():
    """Re-raises the C library's failures as the matching DermalError subclass."""
    try:
        yield
    except _native.StatusError as error:
        raise _ERROR_CLASSES.get(error.status, DermalError)(error.message, error.status) from None


ClassScore = collections.namedtuple("ClassScore", "label index probability")
MemoryStatus = collections.namedtuple("MemoryStatus", "current_rss_bytes peak_rss_bytes")


def version():
    """The C library's version, e.g. "0.1.0"."""
    return lib.dermal_version_string().decode()


def memory_status():
    """The process's resident set and its peak, in bytes."""
    current, peak = c_uint64(), c_uint64()
    with _translated_errors():
        lib.dermal_memory_status(byref(current), byref(peak))
    return MemoryStatus(current.value, peak.value)


def _heatmap(values, width, height):
    """A copy of width*height floats: a float32 numpy array (height x width),
    else a list of rows; None for an empty map."""
    if width == 0 or height == 0:
        return None
    if numpy is not None:
        return numpy.ctypeslib.as_array(values, shape=(height, width)).astype(numpy.float32, copy=True)
    flat = values[: width * height]
    return [flat[row * width:(row + 1) * width] for row in range(height)]


class Explanation:
    """One class activation map: the explained class (label, index), the
    method, flat (the map had no contrast and is all zeros), heatmap at the
    photo's size (None with full_heatmap=False), heatmap_raw at the CAM
    layer's, overlay (encoded photo + heatmap, or None when not rendered)."""

    def __init__(self, handle, position):
        label, index, method, flat = c_char_p(), c_int(), c_char_p(), c_int()
        width, height, values, size = c_int(), c_int(), POINTER(c_float)(), c_size_t()
        lib.dermal_result_explanation_class(handle, position, byref(label), byref(index))
        lib.dermal_result_explanation_method(handle, position, byref(method))
        lib.dermal_result_explanation_flat(handle, position, byref(flat))
        self.label, self.index = label.value.decode(), index.value
        self.method, self.flat = method.value.decode(), bool(flat.value)
        lib.dermal_result_explanation_heatmap(handle, position, byref(width), byref(height), byref(values))
        self.heatmap_raw = _heatmap(values, width.value, height.value)
        lib.dermal_result_explanation_full_heatmap(handle, position, byref(width), byref(height), byref(values))
        self.heatmap = _heatmap(values, width.value, height.value)
        overlay = c_void_p()
        lib.dermal_result_explanation_overlay(handle, position, byref(overlay), byref(size))
        self.overlay = ctypes.string_at(overlay, size.value) if size.value else None

    def __repr__(self):
        return f"<dermal.Explanation {self.label!r} {self.method} flat={self.flat}>"


class Result:
    """One prediction. top: the best classes (ClassScore), best first;
    probabilities: label -> probability for every label; explanations: one
    Explanation per explained class. cam_label/cam_method/flat/heatmap/
    heatmap_raw/overlay are those of the first explanation (None without
    Grad-CAM)."""

    def __init__(self, handle, labels):
        count = c_size_t()
        label, index, probability = c_char_p(), c_int(), c_float()
        lib.dermal_result_top_count(handle, byref(count))
        self.top = []
        for rank in range(count.value):
            lib.dermal_result_top(handle, rank, byref(label), byref(index), byref(probability))
            self.top.append(ClassScore(label.value.decode(), index.value, probability.value))
        values = POINTER(c_float)()
        lib.dermal_result_probabilities(handle, byref(values), byref(count))
        self.probabilities = dict(zip(labels, values[: count.value]))
        lib.dermal_result_explanation_count(handle, byref(count))
        self.explanations = [Explanation(handle, position) for position in range(count.value)]
        first = self.explanations[0] if self.explanations else None
        self.cam_label = first and first.label
        self.cam_method = first and first.method
        self.flat = first and first.flat
        self.heatmap = first and first.heatmap
        self.heatmap_raw = first and first.heatmap_raw
        self.overlay = first and first.overlay

    def __repr__(self):
        return f"<dermal.Result top={self.top!r} cam_label={self.cam_label!r}>"


class Model:
    """A dermal model file. preload=False loads it at the first prediction;
    gradcam=False never computes heatmaps (less memory); cam_layer=None uses
    the model's own CAM layer; photos over max_pixels are refused. With
    max_concurrent > 0, at most that many predictions run at once; others wait
    up to queue_timeout seconds, then raise Busy.

    close() (or leaving a with block) frees the model; it waits for
    predictions in flight, and later calls raise ModelNotLoaded. unload()
    frees only the weights: the next prediction loads them again."""

    def __init__(self, path, preload=True, threads=1, gradcam=True, cam_layer=None, max_pixels=40_000_000,
                 max_concurrent=0, queue_timeout=30.0):
        self._handle = None
        self._in_flight = 0
        self._idle = threading.Condition()
        options, handle = c_void_p(), c_void_p()
        with _translated_errors():
            lib.dermal_load_options_create(byref(options))
            try:
                lib.dermal_load_options_set_threads(options, threads)
                lib.dermal_load_options_set_preload(options, bool(preload))
                lib.dermal_load_options_set_gradcam(options, bool(gradcam))
                lib.dermal_load_options_set_cam_layer(options, None if cam_layer is None else cam_layer.encode())
                lib.dermal_load_options_set_max_pixels(options, max_pixels)
                lib.dermal_load_options_set_max_concurrent(options, max_concurrent, int(queue_timeout * 1000))
                lib.dermal_model_load(os.fsencode(path), options, byref(handle))
            finally:
                lib.dermal_load_options_free(options)
        self._handle = handle

    @contextlib.contextmanager
    def _use(self):
        """The C handle, kept alive until the block ends; ModelNotLoaded once closed."""
        with self._idle:
            if self._handle is None:
                raise ModelNotLoaded("the model was closed")
            self._in_flight += 1
        try:
            with _translated_errors():
                yield self._handle
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def predict(self, image_bytes, **options):
        """Classifies an encoded photo (JPEG, PNG or BMP bytes); see _predict for the options."""
        data = bytes(image_bytes)
        return self._predict(lambda handle, opts, result: lib.dermal_model_predict(
            handle, data, len(data), opts, result), **options)

    def predict_rgb(self, pixels, width, height, **options):
        """Classifies an upright 8-bit RGB picture (width * height * 3 bytes,
        rows top to bottom); the options are predict's."""
        data = bytes(pixels)
        if width < 1 or height < 1 or len(data) != width * height * 3:
            raise InvalidArgument(f"an RGB picture of {width}x{height} needs {max(width, 0) * max(height, 0) * 3} "
                                  f"bytes, got {len(data)}")
        return self._predict(lambda handle, opts, result: lib.dermal_model_predict_rgb(
            handle, data, width, height, opts, result), **options)

    def _predict(self, call, top_k=3, gradcam=None, cam="gradcam", cam_class=None, colormap="jet",
                 overlay_format="jpeg", alpha=0.45, cam_top_k=1, overlay=True, jpeg_quality=90,
                 full_heatmap=True):
        """gradcam=None follows the load option; cam_class explains that
        label, else the cam_top_k best classes are explained; overlay=False
        skips rendering; overlay_format is "jpeg" (at jpeg_quality, 1..100) or
        "png"; alpha (0..1) is the heatmap's weight in the overlay;
        full_heatmap=False leaves Explanation.heatmap None (the map at the
        photo's size costs 4 bytes per photo pixel, twice through Python)."""
        labels = self.labels
        options, result = c_void_p(), c_void_p()
        with self._use() as handle:
            lib.dermal_predict_options_create(byref(options))
            try:
                lib.dermal_predict_options_set_top_k(options, top_k)
                if gradcam is not None:
                    lib.dermal_predict_options_set_gradcam(options, bool(gradcam))
                lib.dermal_predict_options_set_cam(options, cam.encode())
                if cam_class is not None:
                    lib.dermal_predict_options_set_cam_class(options, cam_class.encode())
                lib.dermal_predict_options_set_colormap(options, colormap.encode())
                lib.dermal_predict_options_set_overlay_format(options, overlay_format.encode())
                lib.dermal_predict_options_set_overlay_alpha(options, alpha)
                lib.dermal_predict_options_set_cam_top_k(options, cam_top_k)
                lib.dermal_predict_options_set_render_overlay(options, bool(overlay))
                lib.dermal_predict_options_set_full_heatmap(options, bool(full_heatmap))
                lib.dermal_predict_options_set_jpeg_quality(options, jpeg_quality)
                call(handle, options, byref(result))
            finally:
                lib.dermal_predict_options_free(options)
            try:
                return Result(result, labels)
            finally:
                lib.dermal_result_free(result)

    def load(self):
        """Loads the weights now if they are not loaded."""
        with self._use() as handle:
            lib.dermal_model_ensure_loaded(handle)

    def unload(self):
        """Frees the weights; the next prediction loads them again."""
        with self._use() as handle:
            lib.dermal_model_unload(handle)

    def close(self):
        """Frees the model once predictions in flight have finished; idempotent."""
        with self._idle:
            handle, self._handle = self._handle, None
            self._idle.wait_for(lambda: self._in_flight == 0)
        if handle is not None:
            lib.dermal_model_free(handle)

    @property
    def loaded(self):
        """Whether the weights are in memory; False once closed."""
        flag = c_int()
        try:
            with self._use() as handle:
                lib.dermal_model_is_loaded(handle, byref(flag))
        except ModelNotLoaded:
            return False
        return bool(flag.value)

    @property
    def weight_bytes(self):
        """Bytes of the loaded weights and buffers; 0 when unloaded or closed."""
        count = c_uint64()
        try:
            with self._use() as handle:
                lib.dermal_model_weight_bytes(handle, byref(count))
        except ModelNotLoaded:
            return 0
        return count.value

    @property
    def labels(self):
        """The class labels, in the model's order."""
        count, label = c_size_t(), c_char_p()
        with self._use() as handle:
            lib.dermal_model_label_count(handle, byref(count))
            labels = []
            for index in range(count.value):
                lib.dermal_model_label(handle, index, byref(label))
                labels.append(label.value.decode())
        return labels

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __del__(self):
        # The safety net: nothing else can hold the model while it is collected.
        if getattr(self, "_handle", None) is not None:
            lib.dermal_model_free(self._handle)
