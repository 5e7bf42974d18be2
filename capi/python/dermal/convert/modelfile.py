"""The one writer of dermal model files, shared by every converter: a
TorchScript archive with its description in `dermal.json`.

A dermal model is a scripted module whose forward equals running its `stages`
one after another; each stage is a submodule named by a dotted path. The
library splits the network at `cam_layer` (one of the stages): the stages up
to it run without autograd, the rest with autograd for Grad-CAM.
"""
import json
import os
import tempfile

import torch

from . import probe

FORMAT_VERSION = 1
DESCRIPTION_FILE = "dermal.json"
TEMPORARY_PREFIX = ".dermal-convert-"  # a file being written, beside its destination

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def make_description(name, labels, width, height, stages, cam_layer,
                     resize="stretch", resize_shorter_to=None,
                     mean=IMAGENET_MEAN, std=IMAGENET_STD, scale=1.0 / 255.0,
                     output="softmax", resample=None):
    """Returns a description dict; raises ValueError naming what is wrong."""
    if resize not in ("stretch", "center_crop", "fit"):
        raise ValueError(f"resize must be 'stretch', 'center_crop' or 'fit', not {resize!r}")
    if output not in ("softmax", "sigmoid"):
        raise ValueError(f"output must be 'softmax' or 'sigmoid', not {output!r}")
    if cam_layer not in stages:
        raise ValueError(f"cam_layer {cam_layer!r} is not one of the stages {stages}")
    if len(set(labels)) != len(labels) or not labels:
        raise ValueError("labels must be a non-empty list of distinct names")
    input_spec = {"width": width, "height": height, "resize": resize,
                  "scale": scale, "mean": list(mean), "std": list(std)}
    if resize == "center_crop":
        input_spec["resize_shorter_to"] = resize_shorter_to or max(width, height)
    if resample is not None:
        input_spec["resample"] = resample
    return {"dermal_format": FORMAT_VERSION, "name": name, "labels": list(labels),
            "input": input_spec, "output": output,
            "stages": list(stages), "cam_layer": cam_layer}


def submodule(module, dotted_path):
    for part in dotted_path.split("."):
        module = getattr(module, part)
    return module


def run_stages(module, stages, x):
    """The forward of a dermal model, stage by stage (what the library does,
    with TorchScript's executor optimisations off under torch 2.x: its NNC
    fusion turns EfficientNetV2-S's output into NaN there)."""
    with torch.jit.optimized_execution(runs_onednn_rewrite(torch.__version__)):
        for name in stages:
            x = submodule(module, name)(x)
    return x


# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA, DNNL_MAX_CPU_ISA) below AVX512_CORE_BF16, as the library lists them.
ISA_CAPS_WITHOUT_BFLOAT16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_MIC",
                             "AVX512_MIC_4OPS", "AVX512_CORE", "AVX512_CORE_VNNI"}


def native_bfloat16(cpuinfo="/proc/cpuinfo"):
    """The flags, of avx512_bf16 and amx_bf16, that this CPU lists ("" for none,
    or where there is no such file): the library loads a bfloat16 file only
    where there is one, as elsewhere bfloat16 convolutions ran 1.8x slower
    than float32."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line.partition(":")[2].split()
                    return " ".join(flag for flag in ("avx512_bf16", "amx_bf16") if flag in flags)
    except FileNotFoundError:
        pass
    return ""


def onednn_isa_cap(environ=os.environ):
    """oneDNN's ISA cap as oneDNN reads it: (variable, value) of the first of
    ONEDNN_MAX_CPU_ISA and its older name DNNL_MAX_CPU_ISA that is set and not
    empty, ("", "") when neither is."""
    for variable in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        if environ.get(variable):
            return variable, environ[variable]
    return "", ""


def onednn_allows_bfloat16(max_cpu_isa=None):
    """Whether an ISA cap's value (this process's cap, by default) still lets
    oneDNN use bfloat16 instructions, as the library decides it."""
    if max_cpu_isa is None:
        max_cpu_isa = onednn_isa_cap()[1]
    return max_cpu_isa.upper() not in ISA_CAPS_WITHOUT_BFLOAT16


def runs_onednn_rewrite(torch_version):
    """Whether the Python tools run torch's optimize_for_inference (oneDNN's
    rewrite) and TorchScript's executor optimisations themselves: under torch
    1.x only. Under Debian 13's 2.6 the rewrite killed the process (SIGFPE in
    oneDNN's add) on the project's machine, and the executor's NNC fusion
    turned EfficientNetV2-S's output into NaN; there the library alone
    decides, checking oneDNN's ops in a child process and the file's probe
    at each load (docs/numerics-probe.md)."""
    return int(torch_version.split(".")[0]) < 2


def stages_wrongly_optimised(scripted, stages, x):
    """The stages whose torch.jit.optimize_for_inference form does not compute
    what their frozen form does on `x` (LibTorch 1.13's oneDNN rewrite is
    wrong for some layers, e.g. MobileNetV3's squeeze-excitation blocks).
    The library leaves these stages frozen only. Under a torch whose rewrite
    the tools do not run (see runs_onednn_rewrite) none is listed: the file's
    probe then makes the library fall back to the frozen graphs where the
    optimised ones disagree."""
    if not runs_onednn_rewrite(torch.__version__):
        return []
    wrong = []
    with torch.no_grad():
        for name in stages:
            expected = torch.jit.freeze(submodule(scripted, name))(x)
            actual = torch.jit.optimize_for_inference(torch.jit.freeze(submodule(scripted, name)))(x)
            tolerance = 1e-3 * (1.0 + float(expected.abs().max()))
            if (actual.shape != expected.shape or not bool(torch.isfinite(actual).all())
                    or float((actual - expected).abs().max()) > tolerance):
                wrong.append(name)
            x = expected
    return wrong


def save(module, description, path):
    """Scripts `module` (eval mode) and writes it with its description to
    `path`, whole or not at all: through a temporary file in the same
    directory, renamed over `path` only once it is complete.

    Checks that running the stages one by one equals the module's forward,
    and lists in the description's "frozen_only" the stages the library must
    not optimise for inference; raises ValueError naming what is wrong. The
    file carries a probe (dermal.convert.probe) that the library checks at load."""
    module = module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    spec = description["input"]
    x = torch.rand(1, 3, spec["height"], spec["width"])
    with torch.no_grad():
        whole = module(x)
        staged = run_stages(module, description["stages"], x)
    if whole.shape != (1, len(description["labels"])):
        raise ValueError(f"the network outputs {tuple(whole.shape)}, "
                         f"expected (1, {len(description['labels'])}) for the labels")
    if not torch.allclose(whole, staged, atol=1e-5, rtol=1e-4):
        raise ValueError("running the stages one by one does not equal forward")
    scripted = torch.jit.script(module)
    description = dict(description, frozen_only=stages_wrongly_optimised(scripted, description["stages"], x),
                       exported_by={"torch": torch.__version__})
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=TEMPORARY_PREFIX, suffix=".pt", dir=directory)
    os.close(handle)
    try:
        torch.jit.save(scripted, temporary, _extra_files={DESCRIPTION_FILE: json.dumps(description, indent=1),
                                                          **probe.make_probe(module, description)})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # as an ordinary new file, not mkstemp's 0600
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def load_description(path):
    """The description dict stored in the model file at `path`."""
    files = {DESCRIPTION_FILE: ""}
    torch.jit.load(str(path), _extra_files=files)
    return json.loads(files[DESCRIPTION_FILE])
