"""Finds libdermal_c.so, checks its ABI version and declares its C prototypes.

The library is looked for in this order: the path in the DERMAL_LIBRARY
environment variable, libdermal_c.so beside this package, then the system
loader's search path (LD_LIBRARY_PATH, ldconfig).
"""
import ctypes
import functools
import os
from ctypes import POINTER, c_char_p, c_float, c_int, c_size_t, c_uint64, c_void_p

ABI_VERSION = 1  # the DERMAL_ABI_VERSION this package was written for

c_status = c_int
c_handle = c_void_p


class StatusError(Exception):
    """A non-zero dermal_status with the library's message; mapped to dermal's exceptions."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def _library_path():
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


def _check_status(status, function, arguments):
    """ctypes errcheck: raises StatusError with the thread's last-error message."""
    if status != 0:
        raise StatusError(status, lib.dermal_last_error().decode("utf-8", "replace"))
    return status


def _declare(library, name, restype, *argtypes):
    function = getattr(library, name)
    function.restype = restype
    function.argtypes = list(argtypes)
    if restype is c_status:
        function.errcheck = _check_status


def open_library(path):
    """Opens the library at path and declares its functions; raises ImportError
    when it cannot be opened or its ABI version is not ABI_VERSION."""
    try:
        library = ctypes.CDLL(path)
    except OSError as error:
        raise ImportError(
            f"cannot load the dermal C library ({path}): {error}. Build it (cmake --build build) and set "
            "DERMAL_LIBRARY to build/capi/libdermal_c.so, or install the package with DERMAL_LIBRARY set"
        ) from error
    library.dermal_abi_version.restype = c_int
    library.dermal_abi_version.argtypes = []
    found = library.dermal_abi_version()
    if found != ABI_VERSION:
        raise ImportError(
            f"the dermal C library {path} has ABI version {found}, but this dermal package needs "
            f"{ABI_VERSION}; install the package and the library from the same source tree"
        )
    d = functools.partial(_declare, library)

    # const char* dermal_version_string(void);
    d("dermal_version_string", c_char_p)
    # const char* dermal_status_name(dermal_status status);
    d("dermal_status_name", c_char_p, c_status)
    # const char* dermal_last_error(void);
    d("dermal_last_error", c_char_p)
    # dermal_status dermal_memory_status(uint64_t* current_rss_bytes, uint64_t* peak_rss_bytes);
    d("dermal_memory_status", c_status, POINTER(c_uint64), POINTER(c_uint64))

    # dermal_status dermal_load_options_create(dermal_load_options** options);
    d("dermal_load_options_create", c_status, POINTER(c_handle))
    # void dermal_load_options_free(dermal_load_options* options);
    d("dermal_load_options_free", None, c_handle)
    # dermal_status dermal_load_options_set_threads(dermal_load_options* options, int threads);
    d("dermal_load_options_set_threads", c_status, c_handle, c_int)
    # dermal_status dermal_load_options_set_preload(dermal_load_options* options, int preload);
    d("dermal_load_options_set_preload", c_status, c_handle, c_int)
    # dermal_status dermal_load_options_set_gradcam(dermal_load_options* options, int enabled);
    d("dermal_load_options_set_gradcam", c_status, c_handle, c_int)
    # dermal_status dermal_load_options_set_cam_layer(dermal_load_options* options, const char* layer);
    d("dermal_load_options_set_cam_layer", c_status, c_handle, c_char_p)
    # dermal_status dermal_load_options_set_max_pixels(dermal_load_options* options, uint64_t max_pixels);
    d("dermal_load_options_set_max_pixels", c_status, c_handle, c_uint64)
    # dermal_status dermal_load_options_set_max_concurrent(dermal_load_options* options, int max_concurrent,
    #                                                      int queue_timeout_ms);
    d("dermal_load_options_set_max_concurrent", c_status, c_handle, c_int, c_int)

    # dermal_status dermal_predict_options_create(dermal_predict_options** options);
    d("dermal_predict_options_create", c_status, POINTER(c_handle))
    # void dermal_predict_options_free(dermal_predict_options* options);
    d("dermal_predict_options_free", None, c_handle)
    # dermal_status dermal_predict_options_set_top_k(dermal_predict_options* options, int top_k);
    d("dermal_predict_options_set_top_k", c_status, c_handle, c_int)
    # dermal_status dermal_predict_options_set_gradcam(dermal_predict_options* options, int enabled);
    d("dermal_predict_options_set_gradcam", c_status, c_handle, c_int)
    # dermal_status dermal_predict_options_set_cam(dermal_predict_options* options, const char* method);
    d("dermal_predict_options_set_cam", c_status, c_handle, c_char_p)
    # dermal_status dermal_predict_options_set_cam_class(dermal_predict_options* options, const char* label);
    d("dermal_predict_options_set_cam_class", c_status, c_handle, c_char_p)
    # dermal_status dermal_predict_options_set_colormap(dermal_predict_options* options, const char* colormap);
    d("dermal_predict_options_set_colormap", c_status, c_handle, c_char_p)
    # dermal_status dermal_predict_options_set_overlay_format(dermal_predict_options* options, const char* format);
    d("dermal_predict_options_set_overlay_format", c_status, c_handle, c_char_p)
    # dermal_status dermal_predict_options_set_overlay_alpha(dermal_predict_options* options, float alpha);
    d("dermal_predict_options_set_overlay_alpha", c_status, c_handle, c_float)
    # dermal_status dermal_predict_options_set_cam_top_k(dermal_predict_options* options, int cam_top_k);
    d("dermal_predict_options_set_cam_top_k", c_status, c_handle, c_int)
    # dermal_status dermal_predict_options_set_jpeg_quality(dermal_predict_options* options, int quality);
    d("dermal_predict_options_set_jpeg_quality", c_status, c_handle, c_int)
    # dermal_status dermal_predict_options_set_render_overlay(dermal_predict_options* options, int enabled);
    d("dermal_predict_options_set_render_overlay", c_status, c_handle, c_int)
    # dermal_status dermal_predict_options_set_full_heatmap(dermal_predict_options* options, int enabled);
    d("dermal_predict_options_set_full_heatmap", c_status, c_handle, c_int)

    # dermal_status dermal_model_load(const char* path, const dermal_load_options* options, dermal_model** model);
    d("dermal_model_load", c_status, c_char_p, c_handle, POINTER(c_handle))
    # void dermal_model_free(dermal_model* model);
    d("dermal_model_free", None, c_handle)
    # dermal_status dermal_model_predict(dermal_model* model, const uint8_t* bytes, size_t size,
    #                                    const dermal_predict_options* options, dermal_result** result);
    d("dermal_model_predict", c_status, c_handle, c_char_p, c_size_t, c_handle, POINTER(c_handle))
    # dermal_status dermal_model_predict_rgb(dermal_model* model, const uint8_t* rgb, int width, int height,
    #                                       const dermal_predict_options* options, dermal_result** result);
    d("dermal_model_predict_rgb", c_status, c_handle, c_char_p, c_int, c_int, c_handle, POINTER(c_handle))
    # dermal_status dermal_model_ensure_loaded(dermal_model* model);
    d("dermal_model_ensure_loaded", c_status, c_handle)
    # dermal_status dermal_model_unload(dermal_model* model);
    d("dermal_model_unload", c_status, c_handle)
    # dermal_status dermal_model_is_loaded(const dermal_model* model, int* loaded);
    d("dermal_model_is_loaded", c_status, c_handle, POINTER(c_int))
    # dermal_status dermal_model_weight_bytes(const dermal_model* model, uint64_t* bytes);
    d("dermal_model_weight_bytes", c_status, c_handle, POINTER(c_uint64))
    # dermal_status dermal_model_label_count(const dermal_model* model, size_t* count);
    d("dermal_model_label_count", c_status, c_handle, POINTER(c_size_t))
    # dermal_status dermal_model_label(const dermal_model* model, size_t index, const char** label);
    d("dermal_model_label", c_status, c_handle, c_size_t, POINTER(c_char_p))

    # void dermal_result_free(dermal_result* result);
    d("dermal_result_free", None, c_handle)
    # dermal_status dermal_result_top_count(const dermal_result* result, size_t* count);
    d("dermal_result_top_count", c_status, c_handle, POINTER(c_size_t))
    # dermal_status dermal_result_top(const dermal_result* result, size_t rank, const char** label, int* index,
    #                                 float* probability);
    d("dermal_result_top", c_status, c_handle, c_size_t, POINTER(c_char_p), POINTER(c_int), POINTER(c_float))
    # dermal_status dermal_result_probabilities(const dermal_result* result, const float** values, size_t* count);
    d("dermal_result_probabilities", c_status, c_handle, POINTER(POINTER(c_float)), POINTER(c_size_t))
    # dermal_status dermal_result_explanation_count(const dermal_result* result, size_t* count);
    d("dermal_result_explanation_count", c_status, c_handle, POINTER(c_size_t))
    # dermal_status dermal_result_explanation_class(const dermal_result* result, size_t i, const char** label,
    #                                               int* index);
    d("dermal_result_explanation_class", c_status, c_handle, c_size_t, POINTER(c_char_p), POINTER(c_int))
    # dermal_status dermal_result_explanation_method(const dermal_result* result, size_t i, const char** method);
    d("dermal_result_explanation_method", c_status, c_handle, c_size_t, POINTER(c_char_p))
    # dermal_status dermal_result_explanation_flat(const dermal_result* result, size_t i, int* flat);
    d("dermal_result_explanation_flat", c_status, c_handle, c_size_t, POINTER(c_int))
    # dermal_status dermal_result_explanation_heatmap(const dermal_result* result, size_t i, int* width,
    #                                                 int* height, const float** values);
    d("dermal_result_explanation_heatmap", c_status, c_handle, c_size_t, POINTER(c_int), POINTER(c_int),
      POINTER(POINTER(c_float)))
    # dermal_status dermal_result_explanation_full_heatmap(const dermal_result* result, size_t i, int* width,
    #                                                      int* height, const float** values);
    d("dermal_result_explanation_full_heatmap", c_status, c_handle, c_size_t, POINTER(c_int), POINTER(c_int),
      POINTER(POINTER(c_float)))
    # dermal_status dermal_result_explanation_overlay(const dermal_result* result, size_t i,
    #                                                 const uint8_t** bytes, size_t* size);
    d("dermal_result_explanation_overlay", c_status, c_handle, c_size_t, POINTER(c_void_p), POINTER(c_size_t))
    return library


lib = open_library(_library_path())
