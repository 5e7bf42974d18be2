"""A model file with input.resample gets, through the library (libdermal_c.so
from $DERMAL_BUILD_DIR via the Python package), the probabilities the app's
own PIL code gets: PIL resizes a 1024x768 photo (Image.resize, torchvision
Resize + CenterCrop on the PIL image, or ImageOps.fit), numpy scales and
normalises it in float32, torch runs the same network."""
import io

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image, ImageOps
from torch import nn

from dermal.convert import modelfile
import lesions
from make_resample_fixtures import FILTERS

LABELS = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
WIDTH, HEIGHT, SHORTER = 56, 40, 64  # not the photo's 4:3, so fit cuts a fractional box
STAGES = ["features.0", "features.1", "features.2", "head"]
TOLERANCE = 1e-6


class DemoLike(nn.Module):
    """conv backbone -> global average pool -> linear, as the demo model."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()),
            nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU()),
            nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.ReLU()),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, len(LABELS)))

    def forward(self, x):
        return self.head(self.features(x))


@pytest.fixture(scope="module")
def network():
    torch.manual_seed(5)
    model = DemoLike().train()
    with torch.no_grad():  # non-trivial BatchNorm statistics, then scores that are not uniform
        for _ in range(3):
            model(torch.randn(4, 3, HEIGHT, WIDTH))
        model.head[2].weight.mul_(20)
    return model.eval()


@pytest.fixture(scope="module")
def photo():
    _, _, image, _ = next(lesions.generate(seed=77, count=1, width=1024, height=768))
    return image


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    return tmp_path_factory.mktemp("resample")


def model_file(network, directory, resize, resample):
    path = directory / f"{resize}-{resample}.pt"
    if not path.exists():
        description = modelfile.make_description(
            "demo-like", LABELS, WIDTH, HEIGHT, STAGES, "features.2", resize=resize,
            resize_shorter_to=SHORTER if resize == "center_crop" else None, resample=resample)
        modelfile.save(network, description, path)
    return path


def app_probabilities(network, photo, resize, resample):
    """What the app's PIL + numpy + torch code computes."""
    if resize == "stretch":
        resized = photo.resize((WIDTH, HEIGHT), FILTERS[resample])
    elif resize == "center_crop":
        mode = T.InterpolationMode(resample)
        resized = T.CenterCrop((HEIGHT, WIDTH))(T.Resize(SHORTER, interpolation=mode)(photo))
    else:
        resized = ImageOps.fit(photo, (WIDTH, HEIGHT), FILTERS[resample])
    pixels = np.asarray(resized, dtype=np.float32) * np.float32(1.0 / 255.0)
    pixels = (pixels - np.array(modelfile.IMAGENET_MEAN, np.float32)) / np.array(modelfile.IMAGENET_STD,
                                                                                    np.float32)
    with torch.no_grad():
        return torch.softmax(network(torch.from_numpy(pixels).permute(2, 0, 1)[None]), 1)[0].numpy()


def library_probabilities(dermal, path, encoded):
    with dermal.Model(str(path), explain=False) as model:
        result = model.predict(encoded, top_k=len(LABELS), explain=False)
    return np.array([result.probabilities[label] for label in LABELS])


def encoded(photo, fmt):
    buffer = io.BytesIO()
    photo.save(buffer, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


@pytest.mark.parametrize("resize", ["stretch", "center_crop", "fit"])
@pytest.mark.parametrize("resample", sorted(FILTERS))
def test_library_probabilities_equal_the_apps(dermal, network, photo, model_files, resize, resample):
    expected = app_probabilities(network, photo, resize, resample)
    assert expected.max() - expected.min() > 0.05, "the scores should not be uniform"
    for fmt in ("PNG", "JPEG"):
        data = encoded(photo, fmt)
        app = app_probabilities(network, Image.open(io.BytesIO(data)).convert("RGB"), resize, resample)
        got = library_probabilities(dermal, model_file(network, model_files, resize, resample), data)
        assert np.abs(got - app).max() <= TOLERANCE, (fmt, got, app)


def test_float_bilinear_would_not_pass(dermal, network, photo, tmp_path):
    """The same file without resample (the torchvision-style float bilinear)
    misses the app's probabilities by more than the tolerance: the test above
    can tell one resize from the other."""
    expected = app_probabilities(network, photo, "stretch", "bilinear")
    description = modelfile.make_description("demo-like", LABELS, WIDTH, HEIGHT, STAGES, "features.2")
    path = tmp_path / "float.pt"
    modelfile.save(network, description, path)
    got = library_probabilities(dermal, path, encoded(photo, "PNG"))
    assert np.abs(got - expected).max() > 10 * TOLERANCE


def test_fit_heatmap_lies_on_the_fitted_box(dermal, network, photo, tmp_path):
    """ImageOps.fit of the 1024x768 photo to 56x40 uses rows 18.3..749.7: the
    heatmap is zero above and below them and not zero within."""
    description = modelfile.make_description("demo-like", LABELS, WIDTH, HEIGHT, STAGES, "features.2",
                                                resize="fit", resample="lanczos")
    path = tmp_path / "fit.pt"
    modelfile.save(network, description, path)
    with dermal.Model(str(path)) as model:
        heatmap = model.predict(encoded(photo, "PNG"), overlay=False, full_heatmap=True).explanations[0].full_heatmap
    assert heatmap.shape == (768, 1024)
    rows = np.flatnonzero(heatmap.max(axis=1) > 0)
    assert rows.min() >= 18 and rows.max() <= 750, (rows.min(), rows.max())
    assert rows.min() <= 40 and rows.max() >= 730, (rows.min(), rows.max())
