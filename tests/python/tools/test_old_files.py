"""Model files from before today's format, plainly: a description without
input.resample loads with one warning on stderr naming the file and the
command that exports it again; a TorchScript file without a dermal
description, or a description without dermal_format, is refused with a
message naming the command that makes a dermal model file."""
import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from dermal.convert import modelfile

import convert_command

LABELS = ["a", "b"]
STAGES = ["features", "head"]
WARNING = "dermal: warning: "
MAKE_ONE = "python3 -m dermal.convert torchvision (or keras)"


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(4, len(LABELS)))

    def forward(self, x):
        return self.head(self.features(x))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """name -> path: with and without resample; a TorchScript file without a
    description; a description without dermal_format."""
    directory = tmp_path_factory.mktemp("old")
    torch.manual_seed(0)
    network = Small()
    paths = {}
    for name, resample in (("with_resample", "bilinear"), ("without_resample", None)):
        paths[name] = directory / f"{name}.pt"
        description = modelfile.make_description("small", LABELS, 16, 16, STAGES, "features", resample=resample)
        modelfile.save(network, description, paths[name])
    scripted = torch.jit.script(network.eval())
    paths["no_description"] = directory / "no_description.pt"
    torch.jit.save(scripted, str(paths["no_description"]))
    unversioned = modelfile.make_description("small", LABELS, 16, 16, STAGES, "features", resample="bilinear")
    del unversioned["dermal_format"]
    paths["no_format"] = directory / "no_format.pt"
    torch.jit.save(scripted, str(paths["no_format"]),
                   _extra_files={modelfile.DESCRIPTION_FILE: json.dumps(unversioned)})
    return paths


def load_and_predict(path):
    """(stdout, stderr) of a process that loads `path` through the package and predicts a photo."""
    code = ("import sys, numpy, dermal\n"
            "model = dermal.Model(sys.argv[1])\n"
            "model.predict(numpy.zeros((20, 30, 3), numpy.uint8))\n"
            "print('predicted')\n")
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=convert_command.PACKAGE_DIR))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "predicted"
    return result.stderr


def resample_warnings(stderr):
    """The lines warning of a missing input.resample (a machine whose oneDNN
    ops crash adds a warning of its own, numerics-probe.md)."""
    return [line for line in stderr.splitlines() if line.startswith(WARNING) and "input.resample" in line]


def test_a_file_without_resample_warns_once_naming_it_and_the_command(files):
    stderr = load_and_predict(files["without_resample"])
    warnings = resample_warnings(stderr)
    print("\n".join(warnings))
    assert len(warnings) == 1, stderr
    assert f'"{files["without_resample"]}" has no input.resample' in warnings[0]
    assert "export it again with python3 -m dermal.convert torchvision (or keras) --resample FILTER" in warnings[0]


def test_a_file_with_resample_loads_without_a_warning(files):
    assert resample_warnings(load_and_predict(files["with_resample"])) == []


@pytest.mark.parametrize("name, words", [
    ("no_description", "has no dermal.json description; make one with " + MAKE_ONE),
    ("no_format", 'it has no "dermal_format": not a file written by a dermal converter; make one with ' + MAKE_ONE),
])
def test_a_file_without_a_dermal_description_is_refused_naming_the_command(dermal, files, name, words):
    with pytest.raises(dermal.InvalidModel) as refusal:
        dermal.Model(str(files[name]))
    print(refusal.value)
    assert words in str(refusal.value)
