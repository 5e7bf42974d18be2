"""The upload page and the JSON endpoints.

Every refused request gets a 4xx JSON body {"error": code, "message": text};
only failures of the server itself (no model, out of memory) are 5xx.
"""
import base64
import functools
import logging
import os

import dermal
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.shortcuts import render

from . import services

log = logging.getLogger("classifier")

NOTICE = ("These scores and heatmaps are a machine-learning model's output, not a diagnosis. "
          "They can be wrong. Any concern about a skin lesion belongs with a doctor or dermatologist.")

# Leading bytes of the accepted formats, and of a few others so that a refusal can name them.
SIGNATURES = [
    ("jpeg", b"\xff\xd8\xff"),
    ("png", b"\x89PNG\r\n\x1a\n"),
    ("bmp", b"BM"),
    ("gif", b"GIF8"),
    ("tiff", b"II*\x00"),
    ("tiff", b"MM\x00*"),
    ("webp", b"RIFF"),
]

# dermal status name -> HTTP status of a refused request.
REQUEST_ERRORS = {
    "invalid_argument": 400,
    "unknown_class": 400,
    "invalid_image": 400,
    "unsupported_image": 415,
    "image_too_large": 413,
    "explain_disabled": 409,
}
# dermal status names that mean the model file could not be loaded (lazily).
MODEL_ERRORS = {"io", "invalid_model", "unknown_layer", "model_not_loaded", "numerics_mismatch"}

MULTIPART_OVERHEAD = 64 * 1024  # room for the multipart boundary, headers and small fields


class ApiError(Exception):
    """A refusal: becomes a JSON response with this status, code and message."""

    def __init__(self, status, code, message, headers=None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def _error(status, code, message, headers=None):
    response = JsonResponse({"error": code, "message": message}, status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def api(*methods):
    """Allows only `methods` (else 405 with Allow) and turns ApiError into its JSON response."""
    allowed = set(methods) | ({"HEAD"} if "GET" in methods else set())

    def decorate(view):
        @functools.wraps(view)
        def wrapper(request, *args, **kwargs):
            if request.method not in allowed:
                return _error(405, "method_not_allowed",
                              f"{request.method} is not allowed here; use {' or '.join(sorted(allowed))}.",
                              {"Allow": ", ".join(sorted(allowed))})
            try:
                return view(request, *args, **kwargs)
            except ApiError as error:
                return _error(error.status, error.code, error.message, error.headers)
        return wrapper
    return decorate


def _mb(size):
    return f"{size / (1024 * 1024):.1f} MB"


def _sniff(data):
    for kind, signature in SIGNATURES:
        if data.startswith(signature):
            return kind
    return None


def _upload(request):
    """The bytes of the `image` field, checked for size and type by content; raises ApiError."""
    limit = services.config()["max_upload_bytes"]
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit + MULTIPART_OVERHEAD:
        raise ApiError(413, "file_too_large", f"The upload is {_mb(declared)}; the limit is {_mb(limit)}.")
    try:
        upload = request.FILES.get("image")
    except RequestDataTooBig:
        raise ApiError(413, "file_too_large", f"The request is too large; the image limit is {_mb(limit)}.")
    except (MultiPartParserError, SuspiciousOperation) as error:
        raise ApiError(400, "malformed_request", f"The multipart body could not be read: {error}")
    if upload is None:
        raise ApiError(400, "missing_image",
                       "No image: send the photo as the multipart/form-data file field 'image'.")
    if upload.size > limit:
        raise ApiError(413, "file_too_large", f"The image is {_mb(upload.size)}; the limit is {_mb(limit)}.")
    data = upload.read()
    if not data:
        raise ApiError(400, "empty_image", "The uploaded file 'image' is empty.")
    accepted = services.config()["image_types"]
    kind = _sniff(data)
    if kind not in accepted:
        names = ", ".join(t.upper() for t in accepted)
        found = f"a {kind.upper()} image" if kind else "not an image this server recognises"
        raise ApiError(415, "unsupported_image_type",
                       f"The file is {found} (judged by its content, not its name); accepted: {names}.")
    return data


def _flag(request, name):
    """A yes/no option from the form or query string: True, False, or None when absent."""
    value = request.POST.get(name, request.GET.get(name))
    if value is None or value == "":
        return None
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ApiError(400, "invalid_argument", f"'{name}' must be true or false, not {value!r}.")


def _top_k(request):
    value = request.POST.get("top_k", request.GET.get("top_k", "3"))
    try:
        top_k = int(value)
    except ValueError:
        top_k = 0
    if not 1 <= top_k <= 100:
        raise ApiError(400, "invalid_argument", f"'top_k' must be a whole number from 1 to 100, not {value!r}.")
    return top_k


def _library_error(error):
    if isinstance(error, dermal.Busy):
        c = services.config()
        return ApiError(503, "busy", f"The server's {c['max_concurrent']} inference thread(s) stayed busy for "
                        f"{c['queue_timeout_ms']} ms; try again shortly.", {"Retry-After": "5"})
    if error.status_name in REQUEST_ERRORS:
        return ApiError(REQUEST_ERRORS[error.status_name], error.status_name, str(error))
    log.error("dermal failed: %s: %s", error.status_name, error)
    if error.status_name in MODEL_ERRORS:
        services.note_model_error(f"{error.status_name}: {error}")
        return ApiError(503, "model_unavailable", f"The model could not be loaded: {error}")
    if error.status_name == "out_of_memory":
        return ApiError(503, "out_of_memory", "The server ran out of memory for this photo; try a smaller one.")
    return ApiError(500, "internal", f"The model failed: {error}")


def _model():
    try:
        return services.model()
    except dermal.DermalError as error:
        raise ApiError(503, "model_unavailable", f"The model could not be opened: {error}")


@api("GET")
def index(request):
    """The upload page (plain HTML and a little inline JavaScript, nothing external)."""
    c = services.config()
    response = render(request, "classifier/index.html", {
        "notice": NOTICE,
        "max_upload_bytes": c["max_upload_bytes"],
        "max_upload": _mb(c["max_upload_bytes"]),
        "image_types": ", ".join(t.upper() for t in c["image_types"]),
        "accept": ",".join(f"image/{t}" for t in c["image_types"]),
        "explain": c["explain"],
    })
    response["Content-Security-Policy"] = (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "img-src data: blob:; connect-src 'self'; form-action 'self'; base-uri 'none'")
    return response


@api("POST")
def predict(request):
    """Classifies the multipart field 'image': top labels, all probabilities and the explanation's overlay.

    Options (form or query): top_k (default 3); explain: absent means on when
    the server has it on (else labels only, explanation null), true when the
    server has it off is a 409; cam_method (default "gradcam"); cam_class:
    explain this label instead of the top one ("scorecam" is a 409 unless the
    server has DERMAL_SCORECAM=1: one forward per CAM-layer channel, minutes
    and ~500 MB on a real network); faithfulness (default false):
    the map's faithfulness figures (docs/cam-methods.md), null for a flat map;
    eigen_smooth, aug_smooth (default false; docs/cam-methods.md).
    """
    c = services.config()
    data = _upload(request)
    top_k = _top_k(request)
    explain = _flag(request, "explain")
    if explain and not c["explain"]:
        raise ApiError(409, "explain_disabled",
                       "Heatmaps are switched off on this server (DERMAL_EXPLAIN=0); "
                       "omit 'explain' to get labels without a heatmap.")
    cam_method = request.POST.get("cam_method", request.GET.get("cam_method")) or "gradcam"
    if cam_method == "scorecam" and not c["scorecam"]:
        raise ApiError(409, "scorecam_disabled",
                       "Score-CAM runs one forward per channel of the CAM layer (minutes per request on a real "
                       "network); it is off on this server (DERMAL_SCORECAM=0).")
    cam_class = request.POST.get("cam_class", request.GET.get("cam_class")) or None
    faithfulness = bool(_flag(request, "faithfulness"))
    eigen_smooth = bool(_flag(request, "eigen_smooth"))
    aug_smooth = bool(_flag(request, "aug_smooth"))
    model = _model()
    try:
        # The model's own inference threads run it; only the overlay is sent,
        # so no float map at the photo's size is asked for.
        result = model.predict(data, top_k=top_k, explain=explain, cam_method=cam_method, cam_class=cam_class,
                               faithfulness=faithfulness, eigen_smooth=eigen_smooth, aug_smooth=aug_smooth)
    except dermal.DermalError as error:
        raise _library_error(error)
    if services.model_error():
        services.note_model_error(None)
    explanation = result.explanations[0] if result.explanations else None
    return JsonResponse({
        "top": [{"label": s.label, "index": s.index, "probability": s.probability} for s in result.top],
        "probabilities": result.probabilities,
        "explanation": explanation and {
            "label": explanation.label,
            "cam_method": explanation.cam_method,
            "flat": explanation.flat,
            "overlay": base64.b64encode(explanation.overlay).decode("ascii"),
            "overlay_type": "image/jpeg",
            **({"faithfulness": explanation.faithfulness and {
                "cam_mult_image_change": explanation.faithfulness.cam_mult_image_change,
                "road": {str(percent): change for percent, change in explanation.faithfulness.road.items()},
            }} if faithfulness else {}),
        },
        "notice": NOTICE,
    })


@api("GET")
def health(request):
    """Whether the model is loaded, whether heatmaps are on, what the load's numerics probe found
    (docs/numerics-probe.md) and the library version; never loads the model."""
    c = services.config()
    model = services.existing_model()
    body = {
        "status": "ok",
        "model": os.path.basename(c["model"]),
        "model_loaded": bool(model is not None and model.loaded),
        "probe_result": model.probe_result if model is not None else "none",
        "preload": c["preload"],
        "explain": c["explain"],
        "version": dermal.library_version(),
    }
    if services.model_error():
        body.update(status="error", error="model_unavailable", message=services.model_error())
        return JsonResponse(body, status=503)
    return JsonResponse(body)


@api("GET")
def memory(request):
    """The process's current and peak resident set, and the loaded weights' size (0 when not loaded)."""
    status = dermal.memory_status()
    model = services.existing_model()
    loaded = bool(model is not None and model.loaded)
    return JsonResponse({
        "current_rss_bytes": status.current_rss_bytes,
        "peak_rss_bytes": status.peak_rss_bytes,
        "weight_bytes": model.weight_bytes if loaded else 0,
        "model_loaded": loaded,
    })


def bad_request(request, exception):
    return _error(400, "bad_request", "The request could not be understood.")


def not_found(request, exception):
    return _error(404, "not_found", f"Nothing at {request.path}; try /, /api/predict, /health or /memory.")


def server_error(request):
    return _error(500, "internal", "The server failed unexpectedly; the error is in its log.")
