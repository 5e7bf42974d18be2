"""Helpers shared by the Python benchmark programs: peak resident set,
medians, options, the model's description and torchvision-style
preprocessing. Each program prints "first-result" once its first result
exists (for the runner's cold-start timing), then one JSON object."""
import argparse
import io
import json
import os
import statistics
import sys
import time
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The package (for dermal.convert), unless it is installed; importing it loads
# the C library that DERMAL_LIBRARY names.
sys.path.append(os.path.join(ROOT, "capi", "python"))

_process_peak = 0


def memory():
    """(current, peak) resident set of this process in MB (VmRSS, VmHWM)."""
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024 / 1e6
    return values["VmRSS"], values["VmHWM"]


def resident():
    """{"rss_anon_mb", "rss_file_mb"}: the resident set as a container's memory
    limit counts it, anonymous (heap, weights) and file-backed (libraries)."""
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("RssAnon", "RssFile"):
                values[f"rss_{key[3:].lower()}_mb"] = int(rest.split()[0]) * 1024 / 1e6
    return values


def after_load():
    """The settled memory after loading, for the report: VmRSS, RssAnon, RssFile."""
    resident_now = resident()
    return {"rss_after_load_mb": memory()[0], "rss_anon_after_load_mb": resident_now["rss_anon_mb"],
            "rss_file_after_load_mb": resident_now["rss_file_mb"]}


def reset_peak():
    """Restarts VmHWM from the current resident set; process_peak() still
    returns the whole run's peak."""
    global _process_peak
    _process_peak = max(_process_peak, memory()[1])
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def process_peak():
    """The highest VmHWM of the whole run, across resets."""
    return max(_process_peak, memory()[1])


class Stage:
    """Latencies (ms), the CPU time all of the process's threads spent (ms:
    on a busy machine less disturbed than latency) and the highest resident
    set while a stage ran."""

    def __init__(self):
        self.milliseconds = []
        self.cpu_milliseconds = []
        self.peak = 0.0

    def run(self, function):
        """Runs function() once, timed, with VmHWM reset just before; returns its result."""
        reset_peak()
        start, cpu_start = time.perf_counter(), time.process_time()
        result = function()
        self.milliseconds.append((time.perf_counter() - start) * 1e3)
        self.cpu_milliseconds.append((time.process_time() - cpu_start) * 1e3)
        self.peak = max(self.peak, memory()[1])
        return result

    def json(self):
        return {"median_ms": statistics.median(self.milliseconds),
                "median_cpu_ms": statistics.median(self.cpu_milliseconds),
                "runs": len(self.milliseconds), "peak_mb": self.peak}


def parse_args(description, dermal_options=False):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("model")
    parser.add_argument("photo")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    if dermal_options:  # dermal.Model's, for python_dermal.py
        parser.add_argument("--release-memory-after-predict", type=int, choices=(0, 1), default=1)
    return parser.parse_args()


def first_result():
    print("first-result", flush=True)


def report(values):
    print(json.dumps(values), flush=True)


def torch_start(docstring):
    """For the Python torch programs: the options, torch set to their thread
    count, the resident set once torch is imported, the photo's bytes and the
    model's description."""
    args = parse_args(docstring.split("\n\n")[0])
    import torch
    torch.set_num_threads(args.threads)
    baseline = memory()[0]
    with open(args.photo, "rb") as photo:
        jpeg = photo.read()
    return args, torch, baseline, jpeg, description_of(args.model)


def description_of(path):
    """The model file's dermal.json, as a dict: read from the archive as a zip
    file, so that a measured process imports neither dermal nor the model."""
    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith("/extra/dermal.json"))
        return json.loads(archive.read(name))


def preprocess(jpeg, description):
    """(PIL photo, 1x3xHxW float tensor) as a torchvision app prepares it."""
    import torch
    from PIL import Image, ImageOps
    from torchvision.transforms import functional as TF
    photo = ImageOps.exif_transpose(Image.open(io.BytesIO(jpeg))).convert("RGB")
    spec = description["input"]
    size = (spec["height"], spec["width"])
    if spec["resize"] == "center_crop":
        image = TF.center_crop(TF.resize(photo, spec["resize_shorter_to"]), size)
    else:
        image = TF.resize(photo, size)
    x = TF.normalize(TF.to_tensor(image), spec["mean"], spec["std"])
    return photo, x.unsqueeze(0).to(torch.float32)
