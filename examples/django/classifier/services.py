"""The process's one dermal model, and the gate and threads that run inferences.

Model, gate and inference threads are created once per process from
settings.DERMAL, on first use (or by start() when DERMAL_PRELOAD is on), under
a lock so concurrent first requests share one instance.

Inferences run on DERMAL_MAX_CONCURRENT dedicated threads rather than on the
request threads: LibTorch and oneDNN keep per-thread scratch memory, so the
resident set then stays that of those few threads however many request
threads gunicorn has.
"""
import concurrent.futures
import contextlib
import logging
import threading
import time

import dermal
from django.conf import settings

log = logging.getLogger("classifier")

_lock = threading.Lock()
_model = None
_model_error = None
_gate = None
_executor = None


class QueueTimeout(Exception):
    """No inference slot became free within DERMAL_QUEUE_TIMEOUT seconds."""


def config():
    return settings.DERMAL


def model():
    """The process's model, created on the first call only; raises dermal.DermalError if it cannot be opened."""
    global _model, _model_error
    current = _model
    if current is not None:
        return current
    with _lock:
        if _model is None:
            c = config()
            started = time.monotonic()
            try:
                _model = dermal.Model(c["model"], preload=c["preload"], threads=c["threads"],
                                      gradcam=c["gradcam"], max_pixels=c["max_pixels"])
            except dermal.DermalError as error:
                _model_error = f"{error.status_name}: {error}"
                raise
            _model_error = None
            log.info("dermal model %s opened in %.2f s (loaded: %s, Grad-CAM: %s)",
                     c["model"], time.monotonic() - started, _model.loaded, c["gradcam"])
        return _model


def existing_model():
    """The model if it was created, else None; never creates or loads it."""
    return _model


def model_error():
    """Why the model last failed to open or load, or None once it has worked."""
    return _model_error


def note_model_error(message):
    """Records a load failure seen by a prediction (lazy loading), or clears it with None."""
    global _model_error
    _model_error = message


def start():
    """Creates (and so loads) the model now when DERMAL_PRELOAD is on."""
    if config()["preload"]:
        model()


def _the_gate():
    global _gate, _executor
    if _gate is None:
        with _lock:
            if _gate is None:
                slots = config()["max_concurrent"]
                _executor = concurrent.futures.ThreadPoolExecutor(slots, thread_name_prefix="dermal-inference")
                _gate = threading.BoundedSemaphore(slots)
    return _gate


@contextlib.contextmanager
def inference_slot():
    """Holds one of DERMAL_MAX_CONCURRENT slots for the block; raises QueueTimeout if none frees up in time."""
    gate = _the_gate()
    if not gate.acquire(timeout=config()["queue_timeout"]):
        raise QueueTimeout()
    try:
        yield
    finally:
        gate.release()


def run_inference(function, *args, **kwargs):
    """Calls function on an inference thread once a slot is free (else raises QueueTimeout); returns or raises what it does."""
    with inference_slot():
        return _executor.submit(function, *args, **kwargs).result()


def reset():
    """Closes the model and the inference threads and forgets them, so the next use reads settings.DERMAL again."""
    global _model, _model_error, _gate, _executor
    with _lock:
        if _executor is not None:
            _executor.shutdown(wait=True)
        if _model is not None:
            _model.close()
        _model, _model_error, _gate, _executor = None, None, None, None
