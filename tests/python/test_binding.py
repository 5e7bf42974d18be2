"""The Python binding (capi/python) over libdermal_c.so from the build in
$DERMAL_BUILD_DIR, on the tiny test model: results equal to the C++ CLI's,
each failure as its exception class, threads, closing, torch in the same
process, the ABI check and an offline pip install."""
import json
import os
import random
import shutil
import subprocess
import sys
import threading

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PACKAGE_DIR = os.path.join(ROOT, "capi", "python")
BUILD_DIR = os.environ.get("DERMAL_BUILD_DIR", "")
LIBRARY = os.path.join(BUILD_DIR, "capi", "libdermal_c.so")
MODELS = os.path.join(BUILD_DIR, "tests", "models")
TINY = os.path.join(MODELS, "tiny.pt")
PHOTO = os.path.join(MODELS, "tiny_input.png")


@pytest.fixture(scope="session")
def dermal():
    """The dermal package bound to the build's library; fails (never skips) without a build."""
    if not BUILD_DIR:
        pytest.fail("DERMAL_BUILD_DIR is not set; run bash tools/test.sh or set it to the CMake build directory",
                    pytrace=False)
    for path in (LIBRARY, TINY):
        if not os.path.isfile(path):
            pytest.fail(f"{path} is missing; build first: cmake -S . -B build && cmake --build build -j2",
                        pytrace=False)
    os.environ["DERMAL_LIBRARY"] = LIBRARY
    sys.path.insert(0, PACKAGE_DIR)
    import dermal as package
    return package


@pytest.fixture(scope="session")
def photo():
    with open(PHOTO, "rb") as file:
        return file.read()


@pytest.fixture(scope="session")
def model(dermal):
    with dermal.Model(TINY) as shared:
        yield shared


def random_photos(directory, count=3):
    """Noise photos of assorted sizes as PNG and JPEG files."""
    from PIL import Image
    generator = random.Random(5)
    paths = []
    for i in range(count):
        width, height = generator.randint(20, 90), generator.randint(20, 90)
        pixels = bytes(generator.randrange(256) for _ in range(width * height * 3))
        path = os.path.join(directory, f"noise_{i}.{'png' if i % 2 else 'jpg'}")
        Image.frombytes("RGB", (width, height), pixels).save(path)
        paths.append(path)
    return paths


def test_results_equal_the_cli(dermal, tmp_path):
    images = [PHOTO] + random_photos(str(tmp_path))
    cli = os.path.join(BUILD_DIR, "examples", "dermal-classify")
    output = subprocess.run([cli, "--json", "--top-k", "5", "--model", TINY] + images,
                            check=True, capture_output=True, text=True).stdout
    expected = {entry["image"]: entry["top"] for entry in json.loads(output)}
    # The CLI loads without Grad-CAM when no heatmap is asked for: the same optimised network.
    with dermal.Model(TINY, gradcam=False) as model:
        for path in images:
            with open(path, "rb") as file:
                result = model.predict(file.read(), top_k=5)
            assert [score.label for score in result.top] == [score["label"] for score in expected[path]]
            for score, cli_score in zip(result.top, expected[path]):
                assert score.index == cli_score["index"]
                assert score.probability == pytest.approx(cli_score["probability"], abs=1e-6)
                assert result.probabilities[score.label] == score.probability
            assert result.heatmap is None and result.overlay is None and result.cam_label is None


def test_prediction_with_gradcam(dermal, model, photo):
    result = model.predict(photo, top_k=2, overlay_format="png")
    assert len(result.top) == 2 and result.top[0].probability >= result.top[1].probability
    assert set(result.probabilities) == set(model.labels) == {"akiec", "bcc", "mel", "nv", "vasc"}
    assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert result.cam_label == result.top[0].label and result.cam_method == "gradcam" and result.flat is False
    assert result.heatmap.shape == (32, 40) and str(result.heatmap.dtype) == "float32"
    assert 0 <= result.heatmap.min() and result.heatmap.max() <= 1
    assert result.heatmap_raw.shape[1] < 40
    assert result.overlay.startswith(b"\x89PNG")
    assert model.predict(photo, cam="eigencam", cam_class="mel").cam_label == "mel"
    assert model.predict(photo).overlay.startswith(b"\xff\xd8")


def test_without_the_full_heatmap_the_overlay_is_the_same(model, photo):
    with_map, without_map = (model.predict(photo, full_heatmap=full) for full in (True, False))
    assert with_map.heatmap.shape == (32, 40) and without_map.heatmap is None
    assert without_map.heatmap_raw.tolist() == with_map.heatmap_raw.tolist()
    assert without_map.overlay == with_map.overlay and len(without_map.overlay) > 0


def test_heatmaps_are_lists_of_rows_without_numpy(dermal, model, photo, monkeypatch):
    monkeypatch.setattr(dermal, "numpy", None)
    result = model.predict(photo)
    assert len(result.heatmap) == 32 and all(len(row) == 40 for row in result.heatmap)
    assert all(isinstance(value, float) for row in result.heatmap_raw for value in row)


@pytest.mark.parametrize("case", [
    "corrupt image", "empty bytes", "missing model", "wrong model", "unknown cam", "unknown colormap",
    "unknown class", "bad alpha", "bad top_k", "gradcam disabled", "unknown layer", "too many pixels",
])
def test_each_failure_raises_its_exception(dermal, model, photo, case):
    expected, words, call = {
        "corrupt image": (dermal.InvalidImage, "corrupt",
                          lambda: model.predict(b"\xff\xd8\xff" + b"\0" * 100)),
        "empty bytes": (dermal.InvalidImage, "empty", lambda: model.predict(b"")),
        "missing model": (dermal.FileError, "missing.pt", lambda: dermal.Model(os.path.join(MODELS, "missing.pt"))),
        "wrong model": (dermal.InvalidModel, "not a zip file",
                        lambda: dermal.Model(os.path.join(MODELS, "not_a_model.pt"))),
        "unknown cam": (dermal.InvalidArgument, "gradcam+++", lambda: model.predict(photo, cam="gradcam+++")),
        "unknown colormap": (dermal.InvalidArgument, "rainbow", lambda: model.predict(photo, colormap="rainbow")),
        "unknown class": (dermal.UnknownClass, "melanoma", lambda: model.predict(photo, cam_class="melanoma")),
        "bad alpha": (dermal.InvalidArgument, "alpha", lambda: model.predict(photo, alpha=1.5)),
        "bad top_k": (dermal.InvalidArgument, "top_k", lambda: model.predict(photo, top_k=0)),
        "gradcam disabled": (dermal.GradcamDisabled, "switched off",
                             lambda: dermal.Model(TINY, gradcam=False).predict(photo, gradcam=True)),
        "unknown layer": (dermal.UnknownLayer, "features.9", lambda: dermal.Model(TINY, cam_layer="features.9")),
        "too many pixels": (dermal.ImageTooLarge, "100", lambda: dermal.Model(TINY, max_pixels=100).predict(photo)),
    }[case]
    with pytest.raises(expected, match=r"(?i)" + words.replace("+", r"\+")) as caught:
        call()
    assert isinstance(caught.value, dermal.DermalError)
    assert caught.value.code == expected.code
    assert caught.value.status_name and str(caught.value)


def test_status_names_and_codes(dermal):
    error = dermal.InvalidImage("x")
    assert (error.code, error.status_name) == (3, "invalid_image")
    assert (dermal.Busy.code, dermal.ModelNotLoaded("x").status_name) == (13, "model_not_loaded")
    assert dermal.FileError("x").status_name == "io"


def test_eight_threads_sharing_a_model_match_sequential_calls(dermal, model, photo, tmp_path):
    photos = [photo] + [open(path, "rb").read() for path in random_photos(str(tmp_path), 2)]

    def summary(result):
        return result.top, result.probabilities, result.heatmap.tolist(), result.overlay

    expected = [summary(model.predict(p)) for p in photos]
    mismatches, failures = [], []

    def work(worker):
        try:
            for call in range(50):
                which = (worker + call) % len(photos)
                if summary(model.predict(photos[which])) != expected[which]:
                    mismatches.append((worker, call))
        except Exception as error:  # reported below, not lost in the thread
            failures.append(error)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == [] and mismatches == []


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


def test_memory_status_and_version(dermal):
    status = dermal.memory_status()
    assert 0 < status.current_rss_bytes <= status.peak_rss_bytes
    assert dermal.version() == "0.1.0"
    assert dermal.ABI_VERSION == 1


def test_a_library_with_another_abi_version_is_refused(dermal, monkeypatch):
    monkeypatch.setattr(dermal._native, "ABI_VERSION", 999)
    with pytest.raises(ImportError, match="has ABI version 1, but this dermal package needs 999"):
        dermal._native.open_library(LIBRARY)


def test_a_wrong_library_override_is_a_clear_import_error(dermal, monkeypatch):
    monkeypatch.setenv("DERMAL_LIBRARY", "/nonexistent/libdermal_c.so")
    with pytest.raises(ImportError, match="DERMAL_LIBRARY names '/nonexistent/libdermal_c.so'"):
        dermal._native._library_path()


def run_python(code, env_changes):
    env = dict(os.environ, **env_changes)
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                          env=env, cwd=ROOT).stdout.strip()


@pytest.mark.parametrize("torch_first", [True, False])
def test_works_with_torch_in_the_same_process(dermal, model, photo, torch_first):
    imports = "import torch, dermal" if torch_first else "import dermal, torch"
    code = (f"{imports}\n"
            f"m = dermal.Model({TINY!r})\n"
            f"r = m.predict(open({PHOTO!r}, 'rb').read())\n"
            "print(r.top[0].label, repr(r.top[0].probability), torch.ones(2).sum().item())\n")
    output = run_python(code, {"PYTHONPATH": PACKAGE_DIR, "DERMAL_LIBRARY": LIBRARY})
    top = model.predict(photo).top[0]
    assert output == f"{top.label} {top.probability!r} 2.0"


def test_offline_pip_install_bundles_the_library(dermal, tmp_path):
    source = tmp_path / "source"  # a copy: setuptools writes build/ and egg-info beside the sources
    shutil.copytree(PACKAGE_DIR, source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-build-isolation",
                    "--target", str(target), str(source)],
                   check=True, capture_output=True, env=dict(os.environ, DERMAL_LIBRARY=LIBRARY))
    assert (target / "dermal" / "libdermal_c.so").is_file()
    code = ("import dermal, dermal._native as native\n"
            f"print(native._library_path()); print(dermal.Model({TINY!r}).labels[0])\n")
    env = {key: value for key, value in os.environ.items() if key != "DERMAL_LIBRARY"}
    output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                            env=dict(env, PYTHONPATH=str(target)), cwd=str(tmp_path)).stdout.split()
    assert output == [str(target / "dermal" / "libdermal_c.so"), "akiec"]


def test_max_concurrent_turns_away_callers_that_cannot_wait(dermal, photo):
    with dermal.Model(TINY, max_concurrent=1, queue_timeout=0) as limited:
        outcomes = []

        def call():
            for _ in range(40):
                try:
                    limited.predict(photo, gradcam=True)
                    outcomes.append("done")
                except dermal.Busy as error:
                    assert "inference slot" in str(error)
                    outcomes.append("busy")

        threads = [threading.Thread(target=call) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(outcomes) == 160
    assert "done" in outcomes and "busy" in outcomes


def test_each_of_the_top_classes_can_be_explained(dermal, model, photo):
    result = model.predict(photo, gradcam=True, cam_top_k=3, overlay=False)
    assert [e.label for e in result.explanations] == [s.label for s in result.top]
    assert all(e.overlay is None for e in result.explanations)
    assert result.cam_label == result.top[0].label and result.overlay is None
    small = model.predict(photo, gradcam=True, overlay_format="jpeg", jpeg_quality=10).overlay
    large = model.predict(photo, gradcam=True, overlay_format="jpeg", jpeg_quality=100).overlay
    assert small[:3] == b"\xff\xd8\xff" and len(small) < len(large)
    with pytest.raises(dermal.InvalidArgument, match="jpeg_quality"):
        model.predict(photo, gradcam=True, jpeg_quality=0)


def test_predict_rgb_equals_predict_on_the_decoded_photo(dermal, model, photo):
    from PIL import Image
    import io
    picture = Image.open(io.BytesIO(photo)).convert("RGB")
    from_pixels = model.predict_rgb(picture.tobytes(), picture.width, picture.height, top_k=5)
    from_bytes = model.predict(photo, top_k=5)
    assert from_pixels.probabilities == from_bytes.probabilities
    with pytest.raises(dermal.InvalidArgument, match="needs 3840 bytes, got 10"):
        model.predict_rgb(b"\x00" * 10, picture.width, picture.height)
