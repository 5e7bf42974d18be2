"""Screens an archive of skin-lesion photos with a dermal model on Dask.

    /usr/bin/python3 -m dermal.screen FOLDER --out results.csv [--model PATH]
        [--scheduler ADDRESS] [--workers N] [--top-k K] [--batch-size B] [--overlays DIR]

Each Dask worker process loads the model once (ModelPlugin); photos go to the
workers in batches, one task each, and every photo's row is appended to the
CSV as soon as its batch completes. Started again on the same CSV, a run skips
the photos already in it, so every photo is written exactly once. A photo that
cannot be read or that the library refuses becomes a row with its status; it
never fails the run. The scores are a model's output, not a diagnosis.

Columns of the CSV (K = --top-k):
  file                        the photo's path, as listed (the key a restart resumes by)
  status                      "ok", or the library's status name (invalid_image,
                              unsupported_image, image_too_large, io, ...), or
                              "task_failed" when the task screening the photo
                              failed on its own (e.g. its worker died on it)
  label_1, probability_1 ...  the K best classes, best first (empty unless ok)
  label_K, probability_K
  heatmap_flat                "true" when the Grad-CAM map of the best class had
                              no contrast (all zeros), else "false"
  overlay                     the overlay written with --overlays, else empty
  error_message               what was wrong, empty when ok

Needs Dask's distributed scheduler (Debian: python3-distributed); the rest of
the dermal package does not.
"""
import argparse
import collections
import contextlib
import csv
import io
import os
import sys
import time
import uuid

try:
    import distributed
except ImportError as error:
    raise ImportError("dermal.screen needs Dask's distributed scheduler: apt-get install python3-distributed") from error

from . import DermalError, Model

# The bundled demo model, found only when the package runs from a source tree.
DEMO_MODEL = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                           "..", "..", "..", "examples", "data", "demo-model.pt"))
TASK_FAILED = "task_failed"

Summary = collections.namedtuple("Summary", "screened failed skipped seconds")


class ScreenError(Exception):
    """A run that cannot start: a missing input, a results file with other columns, colliding overlay names."""


def columns(top_k):
    """The CSV header for top_k classes."""
    ranked = [name for rank in range(1, top_k + 1) for name in (f"label_{rank}", f"probability_{rank}")]
    return ["file", "status", *ranked, "heatmap_flat", "overlay", "error_message"]


class ModelPlugin(distributed.WorkerPlugin):
    """Loads the model once in each worker process (also in workers that join
    or are restarted later); teardown frees it."""

    def __init__(self, model_path):
        self.model_path = model_path
        self.model = None

    def setup(self, worker):
        self.model = Model(self.model_path, threads=1)

    def teardown(self, worker):
        if self.model is not None:
            self.model.close()


def screen_batch(plugin_name, photos, top_k, overlays):
    """The rows (dicts keyed by column) of photos, a list of (path, overlay name),
    screened with this worker's model."""
    model = distributed.get_worker().plugins[plugin_name].model
    return [_screen_photo(model, path, overlay_name, top_k, overlays) for path, overlay_name in photos]


def _screen_photo(model, path, overlay_name, top_k, overlays):
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as error:
        return _failed_row(path, "io", f"cannot read {path}: {error.strerror}")
    try:
        result = model.predict(data, top_k=top_k, overlay=overlays is not None, full_heatmap=False)
    except DermalError as error:
        return _failed_row(path, error.status_name, str(error))
    row = {"file": path, "status": "ok", "heatmap_flat": "true" if result.explanations[0].flat else "false"}
    for rank, score in enumerate(result.top, start=1):
        row[f"label_{rank}"], row[f"probability_{rank}"] = score.label, score.probability
    if overlays is not None:
        row["overlay"] = os.path.join(overlays, overlay_name)
        try:
            _write_atomically(row["overlay"], result.explanations[0].overlay)
        except OSError as error:
            return _failed_row(path, "io", f"cannot write the overlay {row['overlay']}: {error.strerror}")
    return row


def _failed_row(path, status, message):
    return {"file": path, "status": status, "error_message": message}


def _write_atomically(path, data):
    """Writes path whole or not at all; a task redone after its worker was
    killed mid-write overwrites the same temporary file, leaving none behind."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    temporary = path + ".tmp"
    with open(temporary, "wb") as file:
        file.write(data)
    os.replace(temporary, path)


def list_photos(paths, skip=()):
    """(path, overlay name) for every file named in paths, each once: a folder
    gives the files under it (recursively, in name order, hidden ones
    skipped), a file itself. The overlay name is the path relative to its
    folder (the file name for a file) + ".gradcam.jpg". Files and folders in
    skip (the CSV, the overlay folder) are left out."""
    skipped = {os.path.realpath(path) for path in skip if path}
    photos, seen, overlay_names = [], set(), {}

    def add(path, relative):
        path = os.path.normpath(path)
        if path in seen or os.path.realpath(path) in skipped:
            return
        overlay_name = relative + ".gradcam.jpg"
        if overlay_name in overlay_names:
            raise ScreenError(f"{path} and {overlay_names[overlay_name]} would write the same overlay {overlay_name}; "
                              "screen them in separate runs")
        seen.add(path)
        overlay_names[overlay_name] = path
        photos.append((path, overlay_name))

    for top in paths:
        if os.path.isdir(top):
            for folder, subfolders, files in os.walk(top):
                subfolders[:] = sorted(name for name in subfolders
                                       if not name.startswith(".")
                                       and os.path.realpath(os.path.join(folder, name)) not in skipped)
                for name in sorted(files):
                    if not name.startswith("."):
                        path = os.path.join(folder, name)
                        add(path, os.path.relpath(path, top))
        elif os.path.exists(top):
            add(top, os.path.basename(top))
        else:
            raise ScreenError(f"{top}: no such file or folder")
    return photos


def screened_files(out, header):
    """The files already in the CSV out (none if it does not exist). A last row
    cut short by an interrupted run is dropped from the file, so that its photo
    is screened again. Raises ScreenError if out has another header."""
    if not os.path.exists(out) or os.path.getsize(out) == 0:
        return set()
    with open(out, newline="") as file:
        text = file.read()
    reader = csv.reader(io.StringIO(text), strict=True)
    rows = []
    try:
        for row in reader:
            rows.append(row)
    except csv.Error:  # the file ends inside a quoted field
        rows.append(None)
    if rows[0] != header:
        raise ScreenError(f"{out} has the columns {','.join(rows[0] or [])}, but this run writes {','.join(header)} "
                          "(another --top-k?); resume with the same options or choose another --out")
    complete = rows[1:]
    if complete and (not text.endswith("\n") or complete[-1] is None or len(complete[-1]) != len(header)):
        complete.pop()
        _rewrite(out, header, complete)
    for number, row in enumerate(complete, start=2):
        if row is None or len(row) != len(header):
            raise ScreenError(f"{out}, row {number}: {len(row or [])} fields instead of {len(header)}")
    return {row[0] for row in complete}


def _rewrite(out, header, rows):
    temporary = out + ".tmp"
    with open(temporary, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(temporary, out)


class _Progress:
    """A progress bar on stderr: redrawn in place on a terminal, else a line per tenth of the work."""

    def __init__(self, total, enabled):
        self.total, self.enabled = total, enabled
        self.done = self.failed = 0
        self.start = self.drawn = time.monotonic()
        self.terminal = sys.stderr.isatty()
        self.tenths = 0

    def advance(self, rows):
        self.done += len(rows)
        self.failed += sum(row["status"] != "ok" for row in rows)
        if not self.enabled:
            return
        now, tenths = time.monotonic(), self.done * 10 // max(self.total, 1)
        if self.terminal and now - self.drawn < 0.2 and self.done < self.total:
            return
        if not self.terminal and tenths == self.tenths:
            return
        self.drawn, self.tenths = now, tenths
        rate = self.done / max(now - self.start, 1e-9)
        filled = 30 * self.done // max(self.total, 1)
        line = (f"[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} photos, {self.failed} with an error, "
                f"{rate:.1f}/s, {(self.total - self.done) / max(rate, 1e-9):.0f} s left")
        if self.terminal:
            sys.stderr.write(f"\r{line}\033[K" + ("\n" if self.done == self.total else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


def screen(client, paths, out, model_path, top_k=3, batch_size=16, overlays=None, progress=True):
    """Screens the photos in paths (folders and files, see list_photos) on the
    Dask cluster of client, appending a row per photo to the CSV out; photos
    already in out are skipped. model_path and overlays (a folder for the
    overlays, None for none) are paths as the workers see them, as are the
    photos. Returns a Summary; raises ScreenError before any work when the run
    cannot start, DermalError when a worker cannot load the model."""
    if top_k < 1 or batch_size < 1:
        raise ScreenError(f"top_k and batch_size must be at least 1, not {top_k} and {batch_size}")
    header = columns(top_k)
    photos = list_photos(paths, skip=(out, overlays))
    done = screened_files(out, header)
    todo = [photo for photo in photos if photo[0] not in done]
    plugin_name = f"dermal-screen-model-{uuid.uuid4().hex}"  # runs sharing a cluster keep their own models
    client.register_worker_plugin(ModelPlugin(model_path), name=plugin_name)
    bar = _Progress(len(todo), progress)
    in_flight = {}  # key -> (future, its photos)

    def submit(batch):
        future = client.submit(screen_batch, plugin_name, batch, top_k, overlays, pure=False)
        in_flight[future.key] = future, batch
        return future

    try:
        with open(out, "a", newline="") as file:
            writer = csv.DictWriter(file, header, restval="")
            if file.tell() == 0:
                writer.writeheader()
            pending = distributed.as_completed([submit(todo[i:i + batch_size])
                                                for i in range(0, len(todo), batch_size)])
            for future in pending:
                batch = in_flight.pop(future.key)[1]
                try:
                    rows = future.result()
                except Exception as error:  # the task itself failed: retry its photos one by one
                    if len(batch) > 1:
                        for photo in batch:
                            pending.add(submit([photo]))
                        continue
                    rows = [_failed_row(batch[0][0], TASK_FAILED, f"{type(error).__name__}: {error}")]
                future.release()
                writer.writerows(rows)
                file.flush()
                bar.advance(rows)
    finally:
        with contextlib.suppress(Exception):  # the cluster may be gone already
            client.cancel([future for future, _ in in_flight.values()])
            client.unregister_worker_plugin(plugin_name)
    return Summary(bar.done, bar.failed, len(photos) - len(todo), time.monotonic() - bar.start)


def main(argv=None):
    """The command line; returns the exit status (0 also when some photos were refused)."""
    parser = argparse.ArgumentParser(
        prog="python3 -m dermal.screen",
        description="Screens photos of skin lesions with a dermal model on Dask and writes one CSV row per photo.",
        epilog="The scores are a model's output, not a diagnosis.")
    parser.add_argument("paths", nargs="+", metavar="FOLDER", help="a folder (screened recursively) or a photo")
    parser.add_argument("--out", required=True, help="the results CSV; an existing one is resumed")
    parser.add_argument("--model", help="dermal model file (default: the bundled demo model, in a source tree)")
    parser.add_argument("--scheduler", metavar="ADDRESS", help="a running Dask scheduler (default: a local cluster)")
    parser.add_argument("--workers", type=int, help="worker processes of the local cluster (default: one per core)")
    parser.add_argument("--top-k", type=int, default=3, help="classes per photo (default 3)")
    parser.add_argument("--batch-size", type=int, default=16, help="photos per task (default 16)")
    parser.add_argument("--overlays", metavar="DIR", help="write each photo's Grad-CAM overlay under DIR")
    args = parser.parse_args(argv)
    if args.scheduler and args.workers is not None:
        parser.error("--workers applies to the local cluster only; start workers with the scheduler")
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be at least 1, not {args.workers}")
    for path in args.paths:  # before any cluster starts
        if not os.path.exists(path):
            parser.error(f"{path}: no such file or folder")
    model_path = args.model
    if model_path is None:
        if not os.path.isfile(DEMO_MODEL):
            parser.error(f"--model is needed: the bundled demo model is not at {DEMO_MODEL} (not a source tree)")
        model_path = DEMO_MODEL
    if not args.scheduler:
        model_path = os.path.abspath(model_path)

    with contextlib.ExitStack() as stack:
        try:
            if args.scheduler:
                client = stack.enter_context(distributed.Client(args.scheduler))
            else:
                workers = args.workers or len(os.sched_getaffinity(0))
                cluster = stack.enter_context(distributed.LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None))
                client = stack.enter_context(distributed.Client(cluster))
            summary = screen(client, args.paths, args.out, model_path, args.top_k, args.batch_size, args.overlays)
        except ScreenError as error:
            print(f"dermal.screen: {error}", file=sys.stderr)
            return 2
        except DermalError as error:
            print(f"dermal.screen: a worker cannot load the model: {error.status_name}: {error}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(f"\ndermal.screen: interrupted; the rows in {args.out} are kept, run again to resume",
                  file=sys.stderr)
            return 130
    print(f"screened {summary.screened} photos in {summary.seconds:.1f} s "
          f"({summary.screened / max(summary.seconds, 1e-9):.1f} photos/s), {summary.failed} with an error; "
          f"{summary.skipped} already in {args.out} (model scores, not a diagnosis)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    # Run the module imported under its own name, so that Dask pickles its functions by reference.
    from dermal import screen as _screen
    sys.exit(_screen.main())
