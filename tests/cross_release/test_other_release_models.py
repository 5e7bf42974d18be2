"""Model files made on the other Debian release (tools/make_release_models.py
there) load here and predict what they predicted there: probabilities within
1e-5, the same explained class, Grad-CAM maps within 1e-4.

    DERMAL_BUILD_DIR=build DERMAL_OTHER_RELEASE_MODELS=DIR /usr/bin/python3 -m pytest tests/cross_release

Not part of tools/test.sh (it needs the other release's files); tools/debian13.sh
runs it in both directions. Missing inputs fail, never skip."""
import json
import os
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SAMPLES = os.path.join(ROOT, "examples", "data", "samples")
OTHER = os.environ.get("DERMAL_OTHER_RELEASE_MODELS", "")
BUILD = os.environ.get("DERMAL_BUILD_DIR", "")

PROBABILITY_TOLERANCE = 1e-5
# Maps are normalised to [0, 1]. On torch 1.13 alone, dermal's two ways of
# running a stage (optimised, frozen only) give maps within 1.3e-5 of each
# other for these files (probabilities 5e-7); across releases they differed
# by at most 6.4e-6 (2026-11-30). The tolerance leaves room for other CPUs.
HEATMAP_TOLERANCE = 1e-4


def manifest():
    path = os.path.join(OTHER, "predictions.json")
    if not OTHER or not os.path.isfile(path):
        pytest.fail(f"DERMAL_OTHER_RELEASE_MODELS must name a directory made by tools/make_release_models.py "
                    f"(no {path!r})", pytrace=False)
    with open(path) as f:
        return json.load(f)


MANIFEST = manifest()


@pytest.fixture(scope="module")
def dermal():
    library = os.path.join(BUILD, "capi", "libdermal_c.so")
    if not os.path.isfile(library):
        pytest.fail(f"DERMAL_BUILD_DIR must name a build with {library!r}", pytrace=False)
    os.environ["DERMAL_LIBRARY"] = library
    sys.path.insert(0, os.path.join(ROOT, "capi", "python"))
    import dermal as package
    return package


def test_the_files_come_from_another_torch():
    import torch
    assert MANIFEST["torch"] != torch.__version__, "both sides ran the same torch: nothing crosses a release"


@pytest.mark.parametrize("name", sorted(MANIFEST["models"]))
def test_a_file_from_the_other_release_predicts_the_same(dermal, name):
    expected = MANIFEST["models"][name]["predictions"]
    assert len(expected) >= 6
    spread = 0.0
    with dermal.Model(os.path.join(OTHER, name)) as model:
        for photo, there in sorted(expected.items()):
            with open(os.path.join(SAMPLES, photo), "rb") as f:
                here = model.predict(f.read(), top_k=len(model.labels))
            probabilities = [here.probabilities[label] for label in model.labels]
            difference = max(abs(a - b) for a, b in zip(probabilities, there["probabilities"]))
            assert difference <= PROBABILITY_TOLERANCE, (photo, probabilities, there["probabilities"])
            assert here.explanations[0].label == there["cam_label"], photo
            rows_here, rows_there = here.explanations[0].heatmap.tolist(), there["heatmap"]
            assert [len(row) for row in rows_here] == [len(row) for row in rows_there], photo
            heatmap_difference = max(abs(a - b) for r, s in zip(rows_here, rows_there) for a, b in zip(r, s))
            assert heatmap_difference <= HEATMAP_TOLERANCE, (photo, heatmap_difference)
            spread = max(spread, max(probabilities) - min(probabilities))
    # Scores that barely differ between classes would pass whatever the model computes.
    assert spread > 1e-3, f"{name}: near-uniform scores on every photo, the comparison proves nothing"
