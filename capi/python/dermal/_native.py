"""Finds libdermal_c.so, checks its ABI version and declares its C prototypes.

The library is looked for in this order: the path in the DERMAL_LIBRARY
environment variable, libdermal_c.so beside this package, then the system
loader's search path (LD_LIBRARY_PATH, ldconfig).

Functions returning a dermal_status raise StatusError (with the thread's
dermal_last_error()) instead of returning a non-zero status; the package
turns it into the matching DermalError subclass.
"""
from __future__ import annotations

import ctypes
import os
from ctypes import POINTER, c_char_p, c_float, c_int, c_size_t, c_uint64, c_void_p
from typing import Any

ABI_VERSION = 5  # the DERMAL_ABI_VERSION this package was written for

c_status = object()  # a restype marker: a dermal_status (int), non-zero raises StatusError
c_handle = c_void_p  # every opaque dermal_* handle
c_bytes = c_void_p   # const uint8_t*: an address, so that any buffer can be passed without a copy


class StatusError(Exception):
    """A non-zero dermal_status with the library's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _library_path() -> str:
    """The path or name handed to the dynamic loader."""
    override = os.environ.get("DERMAL_LIBRARY")
    if override:
        if not os.path.isfile(override):
            raise ImportError(f"DERMAL_LIBRARY names {override!r}, which is not a file")
        return override
    beside = os.path.join(os.path.dirname(os.path.abspath(__file__)), "libdermal_c.so")
    if os.path.isfile(beside):
        return beside
    return "libdermal_c.so"


def open_library(path: str) -> Any:
    """Opens the library at path and declares its functions; raises ImportError
    when it cannot be opened or its ABI version is not ABI_VERSION."""
    try:
        library = ctypes.CDLL(path)
    except OSError as error:
        raise ImportError(
            f"cannot load the dermal C library ({path}): {error}. Build it (cmake --build build) and set "
            "DERMAL_LIBRARY to build/capi/libdermal_c.so, or install the package with DERMAL_LIBRARY set"
        ) from error

    def check_status(status: int, function: Any, arguments: Any) -> int:
        if status != 0:
            raise StatusError(status, library.dermal_last_error().decode("utf-8", "replace"))
        return status

    def declare(name: str, restype: Any, *argtypes: Any) -> None:
        function = getattr(library, name)
        function.argtypes = list(argtypes)
        if restype is c_status:
            function.restype = c_int
            function.errcheck = check_status
        else:
            function.restype = restype

    # int dermal_abi_version(void);
    declare("dermal_abi_version", c_int)
    found = library.dermal_abi_version()
    if found != ABI_VERSION:
        raise ImportError(
            f"the dermal C library {path} has ABI version {found}, but this dermal package needs "
            f"{ABI_VERSION}; install the package and the library from the same source tree"
        )

    # const char* dermal_version_string(void);
    declare("dermal_version_string", c_char_p)
    # const char* dermal_status_name(dermal_status status);
    declare("dermal_status_name", c_char_p, c_int)
    # const char* dermal_last_error(void);
    declare("dermal_last_error", c_char_p)
    # dermal_status dermal_memory_status(uint64_t* current_rss_bytes, uint64_t* peak_rss_bytes);
    declare("dermal_memory_status", c_status, POINTER(c_uint64), POINTER(c_uint64))

    # dermal_status dermal_load_options_create(dermal_load_options** options);
    declare("dermal_load_options_create", c_status, POINTER(c_handle))
    # void dermal_load_options_free(dermal_load_options* options);
    declare("dermal_load_options_free", None, c_handle)
    # dermal_status dermal_load_options_set_threads(dermal_load_options* options, int threads);
    declare("dermal_load_options_set_threads", c_status, c_handle, c_int)
    # dermal_status dermal_load_options_set_preload(dermal_load_options* options, int preload);
    declare("dermal_load_options_set_preload", c_status, c_handle, c_int)
    # dermal_status dermal_load_options_set_explain(dermal_load_options* options, int explain);
    declare("dermal_load_options_set_explain", c_status, c_handle, c_int)
    # dermal_status dermal_load_options_set_optimise(dermal_load_options* options, int optimise);
    declare("dermal_load_options_set_optimise", c_status, c_handle, c_int)
    # dermal_status dermal_load_options_set_cam_layer(dermal_load_options* options, const char* layer);
    declare("dermal_load_options_set_cam_layer", c_status, c_handle, c_char_p)
    # dermal_status dermal_load_options_set_max_pixels(dermal_load_options* options, uint64_t max_pixels);
    declare("dermal_load_options_set_max_pixels", c_status, c_handle, c_uint64)
    # dermal_status dermal_load_options_set_max_concurrent(dermal_load_options* options, int max_concurrent);
    declare("dermal_load_options_set_max_concurrent", c_status, c_handle, c_int)
    # dermal_status dermal_load_options_set_queue_timeout_ms(dermal_load_options* options, int queue_timeout_ms);
    declare("dermal_load_options_set_queue_timeout_ms", c_status, c_handle, c_int)
    # dermal_status dermal_load_options_set_tune_allocator(dermal_load_options* options, int tune_allocator);
    declare("dermal_load_options_set_tune_allocator", c_status, c_handle, c_int)
    # dermal_status dermal_load_options_set_release_memory_after_predict(dermal_load_options* options, int release);
    declare("dermal_load_options_set_release_memory_after_predict", c_status, c_handle, c_int)

    # dermal_status dermal_predict_options_create(dermal_predict_options** options);
    declare("dermal_predict_options_create", c_status, POINTER(c_handle))
    # void dermal_predict_options_free(dermal_predict_options* options);
    declare("dermal_predict_options_free", None, c_handle)
    # dermal_status dermal_predict_options_set_top_k(dermal_predict_options* options, int top_k);
    declare("dermal_predict_options_set_top_k", c_status, c_handle, c_int)
    # dermal_status dermal_predict_options_set_explain(dermal_predict_options* options, int explain);
    declare("dermal_predict_options_set_explain", c_status, c_handle, c_int)
    # dermal_status dermal_predict_options_set_cam_method(dermal_predict_options* options, const char* method);
    declare("dermal_predict_options_set_cam_method", c_status, c_handle, c_char_p)
    # dermal_status dermal_predict_options_set_cam_class(dermal_predict_options* options, const char* label);
    declare("dermal_predict_options_set_cam_class", c_status, c_handle, c_char_p)
    # dermal_status dermal_predict_options_set_cam_top_k(dermal_predict_options* options, int cam_top_k);
    declare("dermal_predict_options_set_cam_top_k", c_status, c_handle, c_int)
    # dermal_status dermal_predict_options_set_overlay(dermal_predict_options* options, int overlay);
    declare("dermal_predict_options_set_overlay", c_status, c_handle, c_int)
    # dermal_status dermal_predict_options_set_full_heatmap(dermal_predict_options* options, int full_heatmap);
    declare("dermal_predict_options_set_full_heatmap", c_status, c_handle, c_int)
    # dermal_status dermal_predict_options_set_colormap(dermal_predict_options* options, const char* colormap);
    declare("dermal_predict_options_set_colormap", c_status, c_handle, c_char_p)
    # dermal_status dermal_predict_options_set_overlay_format(dermal_predict_options* options, const char* format);
    declare("dermal_predict_options_set_overlay_format", c_status, c_handle, c_char_p)
    # dermal_status dermal_predict_options_set_overlay_alpha(dermal_predict_options* options, float alpha);
    declare("dermal_predict_options_set_overlay_alpha", c_status, c_handle, c_float)
    # dermal_status dermal_predict_options_set_jpeg_quality(dermal_predict_options* options, int quality);
    declare("dermal_predict_options_set_jpeg_quality", c_status, c_handle, c_int)
    # dermal_status dermal_predict_options_set_faithfulness(dermal_predict_options* options, int faithfulness);
    declare("dermal_predict_options_set_faithfulness", c_status, c_handle, c_int)
    # dermal_status dermal_predict_options_set_eigen_smooth(dermal_predict_options* options, int eigen_smooth);
    declare("dermal_predict_options_set_eigen_smooth", c_status, c_handle, c_int)
    # dermal_status dermal_predict_options_set_aug_smooth(dermal_predict_options* options, int aug_smooth);
    declare("dermal_predict_options_set_aug_smooth", c_status, c_handle, c_int)

    # dermal_status dermal_model_open(const char* path, const dermal_load_options* options, dermal_model** model);
    declare("dermal_model_open", c_status, c_char_p, c_handle, POINTER(c_handle))
    # void dermal_model_free(dermal_model* model);
    declare("dermal_model_free", None, c_handle)
    # dermal_status dermal_model_predict(dermal_model* model, const uint8_t* bytes, size_t size,
    #                                    const dermal_predict_options* options, dermal_result** result);
    declare("dermal_model_predict", c_status, c_handle, c_bytes, c_size_t, c_handle, POINTER(c_handle))
    # dermal_status dermal_model_predict_rgb(dermal_model* model, const uint8_t* rgb, int width, int height,
    #                                        size_t row_stride, const dermal_predict_options* options,
    #                                        dermal_result** result);
    declare("dermal_model_predict_rgb", c_status, c_handle, c_bytes, c_int, c_int, c_size_t, c_handle,
            POINTER(c_handle))
    # dermal_status dermal_model_load(dermal_model* model);
    declare("dermal_model_load", c_status, c_handle)
    # dermal_status dermal_model_unload(dermal_model* model);
    declare("dermal_model_unload", c_status, c_handle)
    # dermal_status dermal_model_is_loaded(const dermal_model* model, int* loaded);
    declare("dermal_model_is_loaded", c_status, c_handle, POINTER(c_int))
    # dermal_status dermal_model_weight_bytes(const dermal_model* model, uint64_t* bytes);
    declare("dermal_model_weight_bytes", c_status, c_handle, POINTER(c_uint64))
    # dermal_status dermal_model_probe_result(const dermal_model* model, const char** result);
    declare("dermal_model_probe_result", c_status, c_handle, POINTER(c_char_p))
    # dermal_status dermal_model_label_count(const dermal_model* model, size_t* count);
    declare("dermal_model_label_count", c_status, c_handle, POINTER(c_size_t))
    # dermal_status dermal_model_label(const dermal_model* model, size_t index, const char** label);
    declare("dermal_model_label", c_status, c_handle, c_size_t, POINTER(c_char_p))

    # void dermal_result_free(dermal_result* result);
    declare("dermal_result_free", None, c_handle)
    # dermal_status dermal_result_top_count(const dermal_result* result, size_t* count);
    declare("dermal_result_top_count", c_status, c_handle, POINTER(c_size_t))
    # dermal_status dermal_result_top(const dermal_result* result, size_t rank, const char** label, int* index,
    #                                 float* probability);
    declare("dermal_result_top", c_status, c_handle, c_size_t, POINTER(c_char_p), POINTER(c_int), POINTER(c_float))
    # dermal_status dermal_result_probabilities(const dermal_result* result, const float** values, size_t* count);
    declare("dermal_result_probabilities", c_status, c_handle, POINTER(POINTER(c_float)), POINTER(c_size_t))
    # dermal_status dermal_result_explanation_count(const dermal_result* result, size_t* count);
    declare("dermal_result_explanation_count", c_status, c_handle, POINTER(c_size_t))
    # dermal_status dermal_result_explanation_class(const dermal_result* result, size_t i, const char** label,
    #                                               int* index);
    declare("dermal_result_explanation_class", c_status, c_handle, c_size_t, POINTER(c_char_p), POINTER(c_int))
    # dermal_status dermal_result_explanation_cam_method(const dermal_result* result, size_t i, const char** method);
    declare("dermal_result_explanation_cam_method", c_status, c_handle, c_size_t, POINTER(c_char_p))
    # dermal_status dermal_result_explanation_flat(const dermal_result* result, size_t i, int* flat);
    declare("dermal_result_explanation_flat", c_status, c_handle, c_size_t, POINTER(c_int))
    # dermal_status dermal_result_explanation_heatmap(const dermal_result* result, size_t i, int* width,
    #                                                 int* height, const float** values);
    declare("dermal_result_explanation_heatmap", c_status, c_handle, c_size_t, POINTER(c_int), POINTER(c_int),
            POINTER(c_void_p))
    # dermal_status dermal_result_explanation_full_heatmap(const dermal_result* result, size_t i, int* width,
    #                                                      int* height, const float** values);
    declare("dermal_result_explanation_full_heatmap", c_status, c_handle, c_size_t, POINTER(c_int), POINTER(c_int),
            POINTER(c_void_p))
    # dermal_status dermal_result_explanation_overlay(const dermal_result* result, size_t i,
    #                                                 const uint8_t** bytes, size_t* size);
    declare("dermal_result_explanation_overlay", c_status, c_handle, c_size_t, POINTER(c_void_p), POINTER(c_size_t))
    # dermal_status dermal_result_explanation_faithfulness(const dermal_result* result, size_t i, int* present,
    #                                                      float* cam_mult_image_change, float* road);
    declare("dermal_result_explanation_faithfulness", c_status, c_handle, c_size_t, POINTER(c_int), POINTER(c_float),
            POINTER(c_float))
    return library


lib = open_library(_library_path())
