"""python3 -m dermal.convert torchvision: exported files reload, describe themselves, and their
stages compose to forward; checkpoints load exactly or are refused cleanly."""
import os
import subprocess

import pytest
import torch
from torch import nn
import torchvision

from dermal.convert import modelfile

import convert_command

LABELS = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
SIZE = 64


def run_export(*args):
    return convert_command.run("torchvision", "--labels", ",".join(LABELS), "--size", SIZE, *args, timeout=120)


def export_ok(*args):
    result = run_export(*args)
    assert result.returncode == 0, result.stderr
    return result


def assert_refused(result, *phrases):
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr


# arch → (extra CLI arguments, expected stages, expected cam layer)
CASES = {
    "efficientnet_v2_s": ([], [f"features.{i}" for i in range(8)] + ["head"], "features.7"),
    "resnet50": (["--cam-layer", "layer3", "--resize", "center_crop"],
                 ["stem", "layer1", "layer2", "layer3", "layer4", "head"], "layer3"),
    "mobilenet_v3_large": (["--cam-layer", "features.12"],
                           [f"features.{i}" for i in range(17)] + ["head"], "features.12"),
    "densenet121": ([], ["features." + n for n in (
        "conv0", "norm0", "relu0", "pool0", "denseblock1", "transition1", "denseblock2",
        "transition2", "denseblock3", "transition3", "denseblock4", "norm5")] + ["head"],
        "features.norm5"),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """arch → path of a file exported with --seed 0 (cached for the module)."""
    out = tmp_path_factory.mktemp("exported")
    cache = {}

    def get(arch):
        if arch not in cache:
            path = out / f"{arch}.pt"
            result = export_ok("--arch", arch, "--seed", "0", "--out", str(path),
                               *CASES[arch][0])
            assert "parameters" in result.stdout and "MB" in result.stdout
            cache[arch] = path
        return cache[arch]
    return get


@pytest.mark.parametrize("arch", sorted(CASES))
def test_export_reloads_with_description_and_stage_chain(exported, arch):
    path = exported(arch)
    _, stages, cam_layer = CASES[arch]
    description = modelfile.load_description(path)
    assert description["dermal_format"] == modelfile.FORMAT_VERSION
    assert description["name"] == arch
    assert description["labels"] == LABELS
    assert description["stages"] == stages
    assert description["cam_layer"] == cam_layer
    assert description["exported_by"] == {"torch": torch.__version__}
    spec = description["input"]
    assert (spec["width"], spec["height"]) == (SIZE, SIZE)
    assert spec["mean"] == modelfile.IMAGENET_MEAN
    assert spec["std"] == modelfile.IMAGENET_STD
    assert spec["resize"] == ("center_crop" if arch == "resnet50" else "stretch")
    assert spec["resample"] == "bilinear"  # PIL's, the default of new exports

    module = torch.jit.load(str(path))
    x = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        whole = module(x)
        staged = modelfile.run_stages(module, stages, x)
    assert whole.shape == (2, len(LABELS))
    torch.testing.assert_close(staged, whole, rtol=1e-4, atol=1e-5)


def test_seeded_efficientnet_is_calibrated(exported):
    """Without BatchNorm recalibration the CAM layer's output has std ~1e-6."""
    path = exported("efficientnet_v2_s")
    module = torch.jit.load(str(path))
    stages = modelfile.load_description(path)["stages"]
    mean = torch.tensor(modelfile.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(modelfile.IMAGENET_STD).view(1, 3, 1, 1)
    x = (torch.rand(2, 3, 8, 8).repeat_interleave(SIZE // 8, 2)
         .repeat_interleave(SIZE // 8, 3) - mean) / std
    with torch.no_grad():
        activation = modelfile.run_stages(module, stages[:-1], x)
    assert activation.std() > 1e-2


def user_model(arch, classes, seed):
    """A torchvision model as a user fine-tunes it, with non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    net = getattr(torchvision.models, arch)(weights=None)
    if arch == "resnet50":
        net.fc = nn.Linear(net.fc.in_features, classes)
    elif arch == "densenet121":
        net.classifier = nn.Linear(net.classifier.in_features, classes)
    else:
        net.classifier[-1] = nn.Linear(net.classifier[-1].in_features, classes)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def test_checkpoint_round_trip(tmp_path):
    net = user_model("mobilenet_v3_large", len(LABELS), seed=123)
    checkpoint = tmp_path / "trained.pth"
    # as saved from a DataParallel model inside a training checkpoint dict
    torch.save({"epoch": 3, "model_state_dict":
                {"module." + k: v for k, v in net.state_dict().items()}}, checkpoint)
    out = tmp_path / "model.pt"
    export_ok("--arch", "mobilenet_v3_large", "--checkpoint", str(checkpoint),
              "--out", str(out))

    module = torch.jit.load(str(out))
    x = torch.rand(3, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = net(x)
        assert expected.std() > 1e-3
        torch.testing.assert_close(module(x), expected, rtol=1e-4, atol=1e-5)


def test_checkpoint_with_1000_class_head_is_refused(tmp_path):
    checkpoint = tmp_path / "imagenet.pth"
    torch.save(user_model("resnet50", 1000, seed=0).state_dict(), checkpoint)
    result = run_export("--arch", "resnet50", "--checkpoint", str(checkpoint),
                        "--out", str(tmp_path / "model.pt"))
    assert_refused(result, "fc.weight", "(1000, 2048)", "(7, 2048)")
    assert not (tmp_path / "model.pt").exists()


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    checkpoint = tmp_path / "mobilenet.pth"
    torch.save(user_model("mobilenet_v3_large", len(LABELS), seed=0).state_dict(), checkpoint)
    result = run_export("--arch", "efficientnet_v2_s", "--checkpoint", str(checkpoint),
                        "--out", str(tmp_path / "model.pt"))
    assert_refused(result, "missing keys", "unexpected keys", "--arch mobilenet_v3_large")


def test_unknown_cam_layer_is_refused(tmp_path):
    result = run_export("--arch", "mobilenet_v3_large", "--seed", "0",
                        "--cam-layer", "features.99", "--out", str(tmp_path / "model.pt"))
    assert_refused(result, "features.99", "features.16", "head")


@pytest.mark.parametrize("arch", sorted(CASES))
def test_the_library_gives_python_torchs_probabilities(exported, arch, tmp_path):
    """The C++ library (through dermal-classify) on a photo at the input size,
    against Python torch on the same input tensor: within 1e-4."""
    import json
    import lesions
    from PIL import Image
    build = os.environ.get("DERMAL_BUILD_DIR")
    assert build, "DERMAL_BUILD_DIR must name the CMake build directory (bash tools/test.sh sets it)"
    _, _, photo, _ = next(lesions.generate(seed=31, count=1, width=SIZE, height=SIZE))
    photo_path = tmp_path / "photo.png"
    photo.save(photo_path)

    path = exported(arch)
    pixels = torch.from_numpy(__import__("numpy").asarray(Image.open(photo_path), dtype="float32") / 255.0)
    mean = torch.tensor(modelfile.IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(modelfile.IMAGENET_STD)[:, None, None]
    x = ((pixels.permute(2, 0, 1) - mean) / std)[None]
    with torch.no_grad():
        expected = torch.softmax(torch.jit.load(str(path))(x), 1)[0].tolist()

    result = subprocess.run([os.path.join(build, "examples", "dermal-classify"), "--json", "--top-k", str(len(LABELS)),
                             "--model", str(path), str(photo_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    scores = {entry["label"]: entry["probability"] for entry in json.loads(result.stdout)[0]["top"]}
    assert sorted(scores) == sorted(LABELS)
    for index, label in enumerate(LABELS):
        assert abs(scores[label] - expected[index]) <= 1e-4, (label, scores[label], expected[index])
    assert max(expected) - min(expected) > 1e-3, "calibrated weights should not give uniform scores"
