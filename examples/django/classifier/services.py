"""The process's one dermal model.

It is created once per process from settings.DERMAL, on first use (or by
start() when DERMAL_PRELOAD is on), under a lock so concurrent first requests
share one instance. Under gunicorn with preload_app (gunicorn.conf.py) the
master creates it before forking and every worker uses that instance, its
weights shared copy-on-write (the library supports fork() after loading).
Predictions run on the model's own DERMAL_MAX_CONCURRENT inference threads
(each process starts its own), not on gunicorn's request threads: a request
waits up to DERMAL_QUEUE_TIMEOUT_MS for one of them, then predict() raises
dermal.Busy.
"""
import logging
import os
import threading
import time

import dermal
from django.conf import settings

log = logging.getLogger("classifier")

_lock = threading.Lock()
_model = None
_model_error = None


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
                _model = dermal.Model(c["model"], preload=c["preload"], threads=c["threads"], explain=c["explain"],
                                      optimise=c["optimise"],
                                      max_pixels=c["max_pixels"], max_concurrent=c["max_concurrent"],
                                      queue_timeout_ms=c["queue_timeout_ms"], tune_allocator=c["tune_allocator"],
                                      release_memory_after_predict=c["release_memory_after_predict"])
            except dermal.DermalError as error:
                _model_error = f"{error.status_name}: {error}"
                raise
            _model_error = None
            log.info("dermal model %s opened by process %d in %.2f s (loaded: %s, explain: %s, %d inference threads)",
                     c["model"], os.getpid(), time.monotonic() - started, _model.loaded, c["explain"],
                     c["max_concurrent"])
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


def reset():
    """Closes the model (after its predictions in flight) and forgets it, so the next use reads settings.DERMAL again."""
    global _model, _model_error
    with _lock:
        if _model is not None:
            _model.close()
        _model, _model_error = None, None
