"""python3 -m dermal.convert torchvision --precision bf16: the file reloads with the same
description and stages, computes the stages before the CAM layer in bfloat16
and the rest in float32, its stages still compose to forward, dermal loads it,
the top-1 agreement it records is the one the two files give, and a file
below --min-agreement is refused and not written."""
import os
import subprocess

import pytest
import torch
from torchvision.transforms import functional as TF

import lesions
from dermal.convert import modelfile

import convert_command

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..")
CLASSIFY = os.path.join(os.environ.get("DERMAL_BUILD_DIR", os.path.join(ROOT, "build")), "examples", "dermal-classify")
LABELS = "akiec,bcc,bkl,df,mel,nv,vasc"
SIZE = 160
CAM_LAYER = "features.7"


AGREEMENT_SEED = 2024  # as dermal.convert.torchvision


def export(precision, out, *extra):
    return convert_command.run(
        "torchvision", "--arch", "efficientnet_v2_s", "--seed", "0", "--labels", LABELS,
        "--size", SIZE, "--threads", "1", "--precision", precision, "--out", out, *extra, timeout=300)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """{"fp32": path, "bf16": path}: the same seeded network in both precisions
    (bf16 written whatever its agreement). Not where ONEDNN_MAX_CPU_ISA holds
    oneDNN below bfloat16 (as on Debian 13 here): the exporter refuses there,
    as test_bf16_export_is_refused_under_a_onednn_cap_below_it checks."""
    if not modelfile.onednn_allows_bfloat16():
        pytest.skip(f"ONEDNN_MAX_CPU_ISA={os.environ['ONEDNN_MAX_CPU_ISA']} holds oneDNN below bfloat16")
    out = tmp_path_factory.mktemp("precision")
    paths = {precision: str(out / f"{precision}.pt") for precision in ("fp32", "bf16")}
    for precision, extra in (("fp32", []), ("bf16", ["--min-agreement", "0"])):
        result = export(precision, paths[precision], *extra)
        assert result.returncode == 0, result.stderr
    return paths


def test_bf16_file_keeps_description_and_stages(exports):
    bf16 = modelfile.load_description(exports["bf16"])
    precision = bf16.pop("precision")
    assert bf16 == modelfile.load_description(exports["fp32"])
    assert precision["reduced"] == "bfloat16" and precision["before"] == CAM_LAYER
    assert precision["top1_agreement"]["images"] == 200
    assert os.path.getsize(exports["bf16"]) < 0.6 * os.path.getsize(exports["fp32"])


def test_bf16_only_before_the_cam_layer_and_stages_compose(exports):
    description = modelfile.load_description(exports["bf16"])
    model = torch.jit.load(exports["bf16"])
    stages = description["stages"]
    split = stages.index(CAM_LAYER)
    for i, name in enumerate(stages):
        dtypes = {p.dtype for p in modelfile.submodule(model, name).parameters()}
        assert dtypes == ({torch.bfloat16} if i < split else {torch.float32}), name
    x = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        activation = modelfile.run_stages(model, stages[:split + 1], x)
        assert activation.dtype == torch.float32
        assert torch.equal(model(x), modelfile.run_stages(model, stages, x))


def test_recorded_agreement_is_what_the_two_files_give(exports):
    recorded = modelfile.load_description(exports["bf16"])["precision"]["top1_agreement"]
    photos = lesions.generate(AGREEMENT_SEED, recorded["images"], SIZE, SIZE)
    images = torch.stack([TF.to_tensor(image.convert("RGB")) for _, _, image, _ in photos])
    mean = torch.tensor(modelfile.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(modelfile.IMAGENET_STD).view(1, 3, 1, 1)
    models = {p: torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.load(path).eval()))
              for p, path in exports.items()}
    with torch.inference_mode():
        top = {p: torch.cat([m((images[i:i + 8] - mean) / std).argmax(1) for i in range(0, len(images), 8)])
               for p, m in models.items()}
    assert int((top["bf16"] == top["fp32"]).sum()) == recorded["agreeing"]


def test_below_min_agreement_is_refused_and_not_written(exports, tmp_path):
    recorded = modelfile.load_description(exports["bf16"])["precision"]["top1_agreement"]
    assert recorded["agreeing"] < recorded["images"], "this seeded network's bf16 export is not exact"
    out = tmp_path / "refused.pt"
    just_above = (recorded["agreeing"] + 1) / recorded["images"]
    result = export("bf16", str(out), "--min-agreement", str(just_above))
    assert result.returncode == 2
    assert f"agrees with float32 on {recorded['agreeing']}/{recorded['images']}" in result.stderr
    assert "nothing written" in result.stderr
    assert not out.exists()


def test_dermal_loads_bf16_only_where_the_cpu_computes_it_natively(exports, tmp_path):
    """Loaded and explained on a CPU with avx512_bf16 or amx_bf16 that oneDNN
    may use; refused elsewhere, with a message saying why, and no overlay
    written. Under a oneDNN ISA cap below bfloat16 it is refused too."""
    assert os.path.exists(CLASSIFY), f"{CLASSIFY} is not built"
    photo = tmp_path / "photo.jpg"
    next(iter(lesions.generate(5, 1, 200, 150)))[2].save(photo, quality=90)

    def classify(overlay, **environment):
        return subprocess.run([CLASSIFY, "--model", exports["bf16"], "--heatmap", str(overlay), str(photo)],
                              capture_output=True, text=True, timeout=120, env={**os.environ, **environment})

    overlay = tmp_path / "overlay.jpg"
    result = classify(overlay)
    if not modelfile.native_bfloat16():
        assert result.returncode != 0
        assert "this CPU has no native bfloat16" in result.stderr
        assert not overlay.exists()
        return
    if modelfile.onednn_allows_bfloat16():
        assert result.returncode == 0, result.stderr
        assert overlay.stat().st_size > 0
    capped = tmp_path / "capped.jpg"
    result = classify(capped, ONEDNN_MAX_CPU_ISA="AVX2")
    assert result.returncode != 0
    assert "ONEDNN_MAX_CPU_ISA=AVX2 keeps oneDNN from this CPU's bfloat16 instructions" in result.stderr
    assert not capped.exists()
    result = classify(capped, DNNL_MAX_CPU_ISA="AVX2")  # oneDNN's older name for the same cap
    assert result.returncode != 0
    assert "DNNL_MAX_CPU_ISA=AVX2 keeps oneDNN from this CPU's bfloat16 instructions" in result.stderr
    assert not capped.exists()


def test_bf16_export_is_refused_under_a_onednn_cap_below_it(tmp_path):
    out = tmp_path / "capped.pt"
    result = convert_command.run(
        "torchvision", "--arch", "efficientnet_v2_s", "--seed", "0", "--labels", LABELS,
        "--size", "32", "--precision", "bf16", "--out", out, timeout=120,
        env={**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert result.returncode == 2
    assert "--precision bf16: ONEDNN_MAX_CPU_ISA=AVX2 keeps oneDNN from bfloat16 instructions" in result.stderr
    assert "nothing written" in result.stderr
    assert not out.exists()


def test_native_bfloat16_reads_the_flags_line(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    for text, expected in (("flags\t\t: fpu avx512f avx512_bf16\n", "avx512_bf16"),
                           ("flags\t\t: fpu amx_bf16 avx512_bf16\n", "avx512_bf16 amx_bf16"),
                           ("flags\t\t: fpu avx512f avx512_bf16x\nbugs\t\t: avx512_bf16\n", ""),
                           ("", "")):
        cpuinfo.write_text(text)
        assert modelfile.native_bfloat16(str(cpuinfo)) == expected
    assert modelfile.native_bfloat16(str(tmp_path / "absent")) == ""


def test_the_onednn_isa_cap_is_read_as_onednn_reads_it():
    assert modelfile.onednn_isa_cap({}) == ("", "")
    assert modelfile.onednn_isa_cap({"ONEDNN_MAX_CPU_ISA": "", "DNNL_MAX_CPU_ISA": ""}) == ("", "")
    assert modelfile.onednn_isa_cap({"DNNL_MAX_CPU_ISA": "AVX2"}) == ("DNNL_MAX_CPU_ISA", "AVX2")
    assert modelfile.onednn_isa_cap({"ONEDNN_MAX_CPU_ISA": "", "DNNL_MAX_CPU_ISA": "AVX2"}) == \
        ("DNNL_MAX_CPU_ISA", "AVX2")
    assert modelfile.onednn_isa_cap({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16", "DNNL_MAX_CPU_ISA": "AVX2"}) == \
        ("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")


def test_onednn_isa_caps_below_bfloat16_rule_it_out():
    assert modelfile.onednn_allows_bfloat16("")
    assert modelfile.onednn_allows_bfloat16("AVX512_CORE_BF16")
    assert modelfile.onednn_allows_bfloat16("avx512_core_amx")
    assert not modelfile.onednn_allows_bfloat16("avx2")
    assert not modelfile.onednn_allows_bfloat16("AVX512_CORE")
