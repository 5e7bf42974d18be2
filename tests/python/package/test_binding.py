"""The Python binding (capi/python) over libdermal_c.so from the build in
$DERMAL_BUILD_DIR, on the tiny test model: results equal to the C++ CLI's and
to the PyTorch reference, every input kind, keyword-only options, each
failure as its exception class, cached labels and options, threads, Busy,
closing, torch in the same process, the ABI check and an offline pip install."""
import gc
import io
import json
import os
import pathlib
import random
import re
import shutil
import subprocess
import sys
import threading

import numpy
import pytest
from PIL import Image

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
PACKAGE_DIR = os.path.join(ROOT, "capi", "python")
BUILD_DIR = os.environ.get("DERMAL_BUILD_DIR", "")
LIBRARY = os.path.join(BUILD_DIR, "capi", "libdermal_c.so")
MODELS = os.path.join(BUILD_DIR, "tests", "models")
TINY = os.path.join(MODELS, "tiny.pt")
PHOTO = os.path.join(MODELS, "tiny_input.png")  # 40 x 32, the tiny model's own input size
LABELS = ("akiec", "bcc", "mel", "nv", "vasc")


@pytest.fixture(scope="session")
def photo():
    with open(PHOTO, "rb") as file:
        return file.read()


@pytest.fixture(scope="session")
def model(dermal):
    with dermal.Model(TINY) as shared:
        yield shared


class CallCounter:
    """Wraps one function of the C library and counts its calls."""

    def __init__(self, dermal, monkeypatch, name):
        self.calls = 0
        function = getattr(dermal.lib, name)

        def counted(*arguments):
            self.calls += 1
            return function(*arguments)

        monkeypatch.setattr(dermal.lib, name, counted)


def random_photos(directory, count=3):
    """Noise photos of assorted sizes as PNG and JPEG files."""
    generator = random.Random(5)
    paths = []
    for i in range(count):
        width, height = generator.randint(20, 90), generator.randint(20, 90)
        pixels = bytes(generator.randrange(256) for _ in range(width * height * 3))
        path = os.path.join(directory, f"noise_{i}.{'png' if i % 2 else 'jpg'}")
        Image.frombytes("RGB", (width, height), pixels).save(path)
        paths.append(path)
    return paths


# ---- results -------------------------------------------------------------------------------

def test_results_equal_the_cli(dermal, tmp_path):
    images = [PHOTO] + random_photos(str(tmp_path))
    cli = os.path.join(BUILD_DIR, "examples", "dermal-classify")
    output = subprocess.run([cli, "--json", "--top-k", "5", "--model", TINY] + images,
                            check=True, capture_output=True, text=True).stdout
    expected = {entry["image"]: entry["top"] for entry in json.loads(output)}
    # The CLI opens the model with explain off when no heatmap is asked for: the same optimised network.
    with dermal.Model(TINY, explain=False) as model:
        for path in images:
            result = model.predict(path, top_k=5)
            assert [score.label for score in result.top] == [score["label"] for score in expected[path]]
            for score, cli_score in zip(result.top, expected[path]):
                assert score.index == cli_score["index"]
                assert score.probability == pytest.approx(cli_score["probability"], abs=1e-6)
                assert result.probabilities[score.label] == score.probability
            assert result.explanations == []


def test_a_prediction_with_its_explanation(dermal, model, photo):
    result = model.predict(photo, top_k=2, overlay_format="png")
    assert len(result.top) == 2 and result.top[0].probability >= result.top[1].probability
    assert model.labels == LABELS and list(result.probabilities) == list(LABELS)
    assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    [explanation] = result.explanations
    assert (explanation.label, explanation.index) == result.top[0][:2]
    assert explanation.cam_method == "gradcam" and explanation.flat is False
    assert explanation.heatmap.shape == (16, 20) and explanation.heatmap.dtype == numpy.float32
    assert explanation.heatmap.flags.writeable and explanation.heatmap.flags.c_contiguous
    assert explanation.full_heatmap is None  # off unless asked
    assert explanation.overlay.startswith(b"\x89PNG")
    assert Image.open(io.BytesIO(explanation.overlay)).size == (40, 32)
    assert model.predict(photo).explanations[0].overlay.startswith(b"\xff\xd8")


def test_every_cam_method_equals_the_pytorch_reference(model, photo):
    """tiny_cams.txt: "method flat values..." computed by PyTorch from the published formulas (top class);
    "method+aug_smooth flat values..." the map at the input's size (the photo's: the full map)."""
    with open(os.path.join(MODELS, "tiny_cams.txt")) as file:
        lines = [line.split() for line in file if line.strip()]
    assert len(lines) == 18
    for name, flat, *values in lines:
        method, smoothed, _ = name.partition("+aug_smooth")
        aug_smooth = bool(smoothed)
        [explanation] = model.predict(photo, cam_method=method, overlay=False, full_heatmap=aug_smooth,
                                      aug_smooth=aug_smooth).explanations
        assert explanation.cam_method == method and explanation.flat == (flat == "1")
        got = explanation.full_heatmap if aug_smooth else explanation.heatmap
        numpy.testing.assert_allclose(got.ravel(), numpy.array(values, numpy.float32), atol=1e-4, err_msg=name)


def test_faithfulness_equals_the_pytorch_reference_and_is_absent_unless_asked(model, photo):
    """tiny_faithfulness.txt: "method cam_mult_image_change road10 road20 road50 road80" (top class),
    computed by PyTorch (ROAD's imputation as a dense solve). The tiny random model's
    probabilities move by ~1e-4, so the figures are compared within 2e-6."""
    with open(os.path.join(MODELS, "tiny_faithfulness.txt")) as file:
        lines = [line.split() for line in file if line.strip()]
    assert len(lines) >= 3
    for method, change, *road in lines:
        [plain] = model.predict(photo, cam_method=method, overlay=False).explanations
        assert plain.faithfulness is None
        [explanation] = model.predict(photo, cam_method=method, overlay=False, faithfulness=True).explanations
        f = explanation.faithfulness
        assert f is not None and sorted(f.road) == [10, 20, 50, 80]
        numpy.testing.assert_allclose([f.cam_mult_image_change] + [f.road[p] for p in (10, 20, 50, 80)],
                                      [float(change)] + [float(v) for v in road], atol=2e-6, rtol=0, err_msg=method)


def test_the_full_heatmap_is_the_stretched_map_renormalised_and_the_overlay_shows_it(dermal, model, photo):
    """The photo-sized map is the CAM map stretched bilinearly (PyTorch's
    align_corners=False) over the photo, then ReLU'd and min-max normalised
    to exactly [0, 1]; the overlay (alpha 1, lossless) colours that same map:
    the colormap's top colour where the map is 1, its bottom colour where it is 0."""
    import torch  # Debian python3-torch, installed by tools/setup.sh
    [explanation] = model.predict(photo, full_heatmap=True, overlay_format="png", overlay_alpha=1.0).explanations
    full = explanation.full_heatmap
    assert full.shape == (32, 40) and full.dtype == numpy.float32 and not explanation.flat
    assert full.min() == 0.0 and full.max() == 1.0
    stretched = torch.nn.functional.interpolate(torch.from_numpy(explanation.heatmap)[None, None], size=(32, 40),
                                                mode="bilinear", align_corners=False)[0, 0].clamp(min=0).numpy()
    expected = (stretched - stretched.min()) / (stretched.max() - stretched.min())
    numpy.testing.assert_allclose(full, expected, atol=1e-5)
    overlay = numpy.asarray(Image.open(io.BytesIO(explanation.overlay)).convert("RGB")).astype(int)
    red, blue = numpy.array([128, 0, 0]), numpy.array([0, 0, 128])  # jet at 1 and at 0
    assert numpy.abs(overlay[full == 1.0] - red).max() <= 1
    assert numpy.abs(overlay[full == 0.0] - blue).max() <= 1


def test_each_of_the_top_classes_can_be_explained(dermal, model, photo):
    result = model.predict(photo, cam_top_k=3, overlay=False)
    assert [e.label for e in result.explanations] == [s.label for s in result.top]
    assert all(e.overlay is None for e in result.explanations)
    [nevus] = model.predict(photo, cam_method="eigencam", cam_class="nv").explanations
    assert (nevus.label, nevus.index, nevus.cam_method) == ("nv", 3, "eigencam")
    small = model.predict(photo, jpeg_quality=10).explanations[0].overlay
    large = model.predict(photo, jpeg_quality=100).explanations[0].overlay
    assert small[:3] == b"\xff\xd8\xff" and len(small) < len(large)
    viridis = model.predict(photo, colormap="viridis").explanations[0].overlay
    assert viridis[:3] == b"\xff\xd8\xff" and viridis != model.predict(photo).explanations[0].overlay


# ---- inputs --------------------------------------------------------------------------------

def summary(result):
    return (result.top, result.probabilities,
            [(e.label, e.heatmap.tolist(), e.full_heatmap.tolist(), e.overlay) for e in result.explanations])


def test_every_input_kind_gives_the_same_result(dermal, model, photo):
    pixels = numpy.asarray(Image.open(PHOTO).convert("RGB"))
    padded = numpy.zeros((32, 48, 3), numpy.uint8)  # rows 144 bytes apart, 120 bytes of pixels each
    padded[:, :40] = pixels
    inputs = {
        "bytes": photo, "bytearray": bytearray(photo), "memoryview": memoryview(photo),
        "sliced memoryview": memoryview(b"xx" + photo)[2:], "str path": PHOTO, "pathlib path": pathlib.Path(PHOTO),
        "array": pixels, "padded rows": padded[:, :40], "Fortran-ordered array": numpy.asfortranarray(pixels),
        "PIL RGB": Image.open(PHOTO).convert("RGB"), "PIL RGBA": Image.open(PHOTO).convert("RGBA"),
    }
    options = dict(top_k=5, full_heatmap=True, overlay_format="png")
    expected = summary(model.predict(photo, **options))
    for kind, image in inputs.items():
        assert summary(model.predict(image, **options)) == expected, kind


def test_arrays_with_packed_pixel_rows_are_passed_without_a_copy(dermal, model, monkeypatch):
    seen = []
    original = dermal.lib.dermal_model_predict_rgb

    def spy(handle, address, width, height, row_stride, *rest):
        seen.append((address, width, height, row_stride))
        return original(handle, address, width, height, row_stride, *rest)

    monkeypatch.setattr(dermal.lib, "dermal_model_predict_rgb", spy)
    wide = numpy.zeros((32, 48, 3), numpy.uint8)
    packed, padded, strided = numpy.zeros((32, 40, 3), numpy.uint8), wide[:, :40], wide[:, ::2]
    for array in (packed, padded, strided):
        model.predict(array, explain=False)
    assert seen[0] == (packed.ctypes.data, 40, 32, 120)
    assert seen[1] == (padded.ctypes.data, 40, 32, 144)  # the caller's rows, padding skipped by row_stride
    assert seen[2][1:] == (24, 32, 72) and seen[2][0] != strided.ctypes.data  # pixels not adjacent: one copy


@pytest.mark.parametrize("image, words", [
    (numpy.zeros((32, 40, 3), numpy.float32), "uint8 array, not float32"),
    (numpy.zeros((32, 40), numpy.uint8), "(height, width, 3), not (32, 40)"),
    (numpy.zeros((32, 40, 4), numpy.uint8), "(height, width, 3), not (32, 40, 4)"),
    (numpy.zeros(100, numpy.uint8), "(height, width, 3), not (100,)"),
    (12, "not int"),
    ([[1, 2, 3]], "not list"),
])
def test_a_wrong_image_argument_is_named(dermal, model, image, words):
    with pytest.raises(dermal.InvalidArgument, match=re.escape(words)):
        model.predict(image)


def test_a_missing_photo_file_raises_file_error_naming_it(dermal, model, tmp_path):
    missing = tmp_path / "no-such-photo.jpg"
    with pytest.raises(dermal.FileError, match=re.escape(str(missing))):
        model.predict(missing)


def test_options_are_keyword_only(dermal, model, photo):
    with pytest.raises(TypeError, match="positional"):
        model.predict(photo, 5)
    with pytest.raises(TypeError, match="positional"):
        dermal.Model(TINY, False)
    with pytest.raises(TypeError, match="gradcam"):
        model.predict(photo, gradcam=True)  # the old name is not silently accepted


# ---- errors --------------------------------------------------------------------------------

def test_every_status_of_the_library_has_its_class(dermal):
    """Statuses 1.. up to the first the library calls "unknown"; class names follow the C names."""
    renamed = {"io": "FileError", "internal": "InternalError"}
    status = 1
    while (name := dermal.lib.dermal_status_name(status).decode()) != "unknown":
        class_name = renamed.get(name, "".join(word.capitalize() for word in name.split("_")))
        cls = getattr(dermal, class_name)
        assert issubclass(cls, dermal.DermalError) and class_name in dermal.__all__
        assert (cls.status, cls.status_name) == (status, name)
        error = dermal._translated(dermal._native.StatusError(status, "why"))
        assert type(error) is cls and (error.status, error.status_name, str(error)) == (status, name, "why")
        status += 1
    assert status == 15 and len(dermal.DermalError.__subclasses__()) == 14
    unknown = dermal._translated(dermal._native.StatusError(99, "new"))
    assert type(unknown) is dermal.DermalError and (unknown.status, unknown.status_name) == (99, "unknown")


@pytest.mark.parametrize("case", [
    "corrupt image", "empty bytes", "gif", "missing model", "wrong model", "unknown cam", "unknown colormap",
    "unknown format", "unknown class", "bad alpha", "bad top_k", "wrong option type", "explain disabled",
    "unknown layer", "too many pixels", "no unlimited concurrency", "negative queue timeout", "wrong probe",
])
def test_each_failure_raises_its_exception(dermal, model, photo, case):
    gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"
    expected, words, call = {
        "corrupt image": (dermal.InvalidImage, "corrupt", lambda: model.predict(b"\xff\xd8\xff" + b"\0" * 100)),
        "empty bytes": (dermal.InvalidImage, "empty", lambda: model.predict(b"")),
        "gif": (dermal.UnsupportedImage, "GIF", lambda: model.predict(gif)),
        "missing model": (dermal.FileError, "missing.pt", lambda: dermal.Model(os.path.join(MODELS, "missing.pt"))),
        "wrong model": (dermal.InvalidModel, "not a zip file",
                        lambda: dermal.Model(os.path.join(MODELS, "not_a_model.pt"))),
        "unknown cam": (dermal.InvalidArgument, "gradcam+++", lambda: model.predict(photo, cam_method="gradcam+++")),
        "unknown colormap": (dermal.InvalidArgument, "rainbow", lambda: model.predict(photo, colormap="rainbow")),
        "unknown format": (dermal.InvalidArgument, "webp", lambda: model.predict(photo, overlay_format="webp")),
        "unknown class": (dermal.UnknownClass, "melanoma", lambda: model.predict(photo, cam_class="melanoma")),
        "bad alpha": (dermal.InvalidArgument, "alpha", lambda: model.predict(photo, overlay_alpha=1.5)),
        "bad top_k": (dermal.InvalidArgument, "top_k", lambda: model.predict(photo, top_k=0)),
        "wrong option type": (dermal.InvalidArgument, "top_k='3'", lambda: model.predict(photo, top_k="3")),
        "explain disabled": (dermal.ExplainDisabled, "explain",
                             lambda: dermal.Model(TINY, explain=False).predict(photo, explain=True)),
        "unknown layer": (dermal.UnknownLayer, "features.9", lambda: dermal.Model(TINY, cam_layer="features.9")),
        "too many pixels": (dermal.ImageTooLarge, "100", lambda: dermal.Model(TINY, max_pixels=100).predict(photo)),
        "no unlimited concurrency": (dermal.InvalidArgument, "max_concurrent",
                                     lambda: dermal.Model(TINY, max_concurrent=0)),
        "negative queue timeout": (dermal.InvalidArgument, "queue_timeout_ms",
                                   lambda: dermal.Model(TINY, queue_timeout_ms=-1)),
        "wrong probe": (dermal.NumericsMismatch, "ONEDNN_MAX_CPU_ISA=AVX2",
                        lambda: dermal.Model(os.path.join(MODELS, "probe_wrong_logits.pt"))),
    }[case]
    with pytest.raises(expected, match=r"(?i)" + re.escape(words)) as caught:
        call()
    assert isinstance(caught.value, dermal.DermalError)
    assert caught.value.status == expected.status and caught.value.status_name


def test_the_probe_result_is_visible(dermal, agreed_probe_result):
    with dermal.Model(os.path.join(MODELS, "probe.pt")) as probed:
        assert probed.probe_result == agreed_probe_result
        probed.unload()
        assert probed.probe_result == "none"
    assert probed.probe_result == "none"  # closed


def test_optimise_off_serves_frozen_graphs_that_pass_the_probe_and_predict_alike(dermal, photo):
    path = os.path.join(MODELS, "probe.pt")
    with dermal.Model(path, optimise=False) as frozen, dermal.Model(path) as default:
        assert frozen.probe_result == "passed"
        a, b = frozen.predict(photo, overlay=False), default.predict(photo, overlay=False)
        assert a.top[0].label == b.top[0].label
        assert max(abs(a.probabilities[label] - b.probabilities[label]) for label in a.probabilities) < 1e-4


# ---- caching -------------------------------------------------------------------------------

def test_labels_are_read_once_and_outlive_unload(dermal, photo, monkeypatch):
    label_calls = CallCounter(dermal, monkeypatch, "dermal_model_label")
    with dermal.Model(TINY) as model:
        for _ in range(3):
            assert list(model.predict(photo).probabilities) == list(LABELS)
            assert model.labels == LABELS
        model.unload()
        assert model.labels == LABELS and not model.loaded  # no reload to read them
    assert label_calls.calls == len(LABELS)


def test_predict_options_are_built_once_per_distinct_set_and_all_freed(dermal, photo, monkeypatch):
    gc.collect()  # models left by earlier tests free their options when collected, not during this count
    created = CallCounter(dermal, monkeypatch, "dermal_predict_options_create")
    freed = CallCounter(dermal, monkeypatch, "dermal_predict_options_free")
    setters = CallCounter(dermal, monkeypatch, "dermal_predict_options_set_top_k")
    with dermal.Model(TINY) as model:
        for _ in range(5):
            model.predict(photo)
            model.predict(photo, top_k=2)
        assert (created.calls, setters.calls, freed.calls) == (2, 2, 0)
        for top_k in range(1, 31):  # 30 more distinct sets: the cache keeps 16, the rest live for one call
            model.predict(photo, top_k=top_k, explain=False)
            model.predict(photo, top_k=top_k, explain=False)
        kept = dermal._OPTIONS_CACHED
        assert created.calls == 2 + (kept - 2) + 2 * (30 - (kept - 2))
        assert freed.calls == created.calls - kept
        with pytest.raises(dermal.InvalidArgument):
            model.predict(photo, cam_method="nope")  # refused by its setter: built, freed, not kept
    assert freed.calls == created.calls


# ---- threads, Busy, closing ----------------------------------------------------------------

def test_eight_threads_sharing_a_model_match_sequential_calls(dermal, model, photo, tmp_path):
    photos = [photo] + [open(path, "rb").read() for path in random_photos(str(tmp_path), 2)]
    expected = [summary(model.predict(p, full_heatmap=True)) for p in photos]
    mismatches, failures = [], []

    def work(worker):
        try:
            for call in range(50):
                which = (worker + call) % len(photos)
                if summary(model.predict(photos[which], full_heatmap=True)) != expected[which]:
                    mismatches.append((worker, call))
        except Exception as error:  # reported below, not lost in the thread
            failures.append(error)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == [] and mismatches == []


def test_callers_the_inference_thread_cannot_take_in_time_get_busy(dermal, photo):
    outcomes = []
    with dermal.Model(TINY, max_concurrent=1, queue_timeout_ms=0) as limited:
        def call():
            for _ in range(40):
                try:
                    limited.predict(photo)
                    outcomes.append("done")
                except dermal.Busy as error:
                    assert error.status_name == "busy" and str(error)
                    outcomes.append("busy")

        threads = [threading.Thread(target=call) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(outcomes) == 160 and "done" in outcomes and "busy" in outcomes
    with dermal.Model(TINY, max_concurrent=1, queue_timeout_ms=60_000) as patient:
        outcomes.clear()
        threads = [threading.Thread(target=lambda: outcomes.append(patient.predict(photo))) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(outcomes) == 4  # with time to wait, every caller is served


def test_a_closed_model_raises_cleanly(dermal, photo):
    model = dermal.Model(TINY)
    model.close()
    model.close()
    for call in (lambda: model.predict(photo), model.load, model.unload, lambda: model.labels):
        with pytest.raises(dermal.ModelNotLoaded, match="closed"):
            call()
    assert model.loaded is False and model.weight_bytes == 0


def test_with_frees_the_model(dermal, photo):
    with dermal.Model(TINY) as model:
        assert model.loaded and model.weight_bytes > 0
        model.predict(photo)
    assert model.loaded is False and model._handle is None


def test_unload_then_predict_loads_again(dermal, photo):
    with dermal.Model(TINY, preload=False) as model:
        assert model.loaded is False and model.weight_bytes == 0
        model.load()
        assert model.loaded
        model.unload()
        model.unload()
        assert model.loaded is False
        assert model.predict(photo).top
        assert model.loaded


# ---- the package ---------------------------------------------------------------------------

def test_versions_and_memory_status(dermal):
    status = dermal.memory_status()
    assert 0 < status.current_rss_bytes <= status.peak_rss_bytes
    with open(os.path.join(ROOT, "CMakeLists.txt")) as file:
        cmake_version = re.search(r"project\(dermal VERSION ([0-9.]+)", file.read()).group(1)
    assert dermal.library_version() == cmake_version
    assert re.fullmatch(r"\d+\.\d+\.\d+", dermal.__version__)
    assert dermal.ABI_VERSION == 5


def test_a_library_with_another_abi_version_is_refused(dermal, monkeypatch):
    built = dermal._native.ABI_VERSION  # the version of the library the tests run on
    monkeypatch.setattr(dermal._native, "ABI_VERSION", 999)
    with pytest.raises(ImportError, match=f"has ABI version {built}, but this dermal package needs 999"):
        dermal._native.open_library(LIBRARY)


def test_a_wrong_library_override_is_a_clear_import_error(dermal, monkeypatch):
    monkeypatch.setenv("DERMAL_LIBRARY", "/nonexistent/libdermal_c.so")
    with pytest.raises(ImportError, match="DERMAL_LIBRARY names '/nonexistent/libdermal_c.so'"):
        dermal._native._library_path()


def run_python(code, env, cwd=ROOT):
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                          env=env, cwd=cwd).stdout.strip()


@pytest.mark.parametrize("torch_first", [True, False])
def test_works_with_torch_in_the_same_process(dermal, model, photo, torch_first):
    imports = "import torch, dermal" if torch_first else "import dermal, torch"
    code = (f"{imports}\n"
            f"m = dermal.Model({TINY!r})\n"
            f"r = m.predict({PHOTO!r})\n"
            "print(r.top[0].label, repr(r.top[0].probability), torch.ones(2).sum().item())\n")
    output = run_python(code, dict(os.environ, PYTHONPATH=PACKAGE_DIR, DERMAL_LIBRARY=LIBRARY))
    top = model.predict(photo).top[0]
    assert output == f"{top.label} {top.probability!r} 2.0"


def test_tune_allocator_is_accepted_and_changes_no_result(dermal):
    """In a process of its own: tune_allocator changes glibc settings for the whole process."""
    code = (f"import dermal\n"
            f"m = dermal.Model({TINY!r}, tune_allocator=True)\n"
            f"print(m.predict({PHOTO!r}).probabilities == dermal.Model({TINY!r}).predict({PHOTO!r}).probabilities)\n")
    assert run_python(code, dict(os.environ, PYTHONPATH=PACKAGE_DIR, DERMAL_LIBRARY=LIBRARY)) == "True"


def test_release_memory_after_predict_off_is_accepted_and_changes_no_result(dermal):
    kept = dermal.Model(TINY, release_memory_after_predict=False)
    assert kept.predict(PHOTO).probabilities == dermal.Model(TINY).predict(PHOTO).probabilities


def test_offline_pip_install_bundles_the_library_and_the_type_marker(dermal, tmp_path):
    source = tmp_path / "source"  # a copy: setuptools writes build/ and egg-info beside the sources
    shutil.copytree(PACKAGE_DIR, source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    target = tmp_path / "site"
    # --no-deps: pip does not look into the system site-packages for --target (numpy comes from Debian).
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-build-isolation",
                    "--no-deps", "--target", str(target), str(source)],
                   check=True, capture_output=True, env=dict(os.environ, DERMAL_LIBRARY=LIBRARY))
    assert (target / "dermal" / "libdermal_c.so").is_file() and (target / "dermal" / "py.typed").is_file()
    [metadata] = target.glob("dermal-*.dist-info/METADATA")
    assert f"\nVersion: {dermal.__version__}\n" in metadata.read_text()
    assert "\nRequires-Dist: numpy\n" in metadata.read_text()
    code = ("import dermal, dermal._native as native\n"
            f"print(native._library_path()); print(dermal.Model({TINY!r}).labels[0])\n")
    env = {key: value for key, value in os.environ.items() if key != "DERMAL_LIBRARY"}
    output = run_python(code, dict(env, PYTHONPATH=str(target)), cwd=str(tmp_path))
    assert output.split() == [str(target / "dermal" / "libdermal_c.so"), "akiec"]


@pytest.mark.parametrize("threads", [1, 2])
def test_children_of_fork_predict_as_the_parent(dermal, photo, threads):
    """A model loaded before os.fork() (gunicorn's preload_app): in a process of
    its own, so no other model's threads are in the picture. Before forking the
    parent predicts without Grad-CAM: LibTorch 2.x refuses every backward pass
    in a child forked after its parent ran one (tests/test_fork.cpp)."""
    code = (f"import os, sys, json, dermal\n"
            f"m = dermal.Model({TINY!r}, threads={threads}, max_concurrent=2)\n"
            f"photo = open({PHOTO!r}, 'rb').read()\n"
            f"def result():\n"
            f"    p = m.predict(photo)\n"
            f"    return [p.probabilities, p.explanations[0].heatmap.tolist()]\n"
            f"m.predict(photo, explain=False)\n"
            f"children = []\n"
            f"for _ in range(3):\n"
            f"    read, write = os.pipe()\n"
            f"    pid = os.fork()\n"
            f"    if pid == 0:\n"
            f"        os.close(read)\n"
            f"        os.write(write, json.dumps([result() for _ in range(2)][-1]).encode())\n"
            f"        os._exit(0)\n"
            f"    os.close(write)\n"
            f"    children.append((pid, read))\n"
            f"parent = result()\n"
            f"same = []\n"
            f"for pid, read in children:\n"
            f"    with os.fdopen(read) as pipe:\n"
            f"        text = pipe.read()\n"
            f"    _, status = os.waitpid(pid, 0)\n"
            f"    same.append(status == 0 and json.loads(text) == parent)\n"
            f"print(same, result() == parent)\n")
    output = run_python(code, dict(os.environ, PYTHONPATH=PACKAGE_DIR, DERMAL_LIBRARY=LIBRARY))
    assert output == "[True, True, True] True"
