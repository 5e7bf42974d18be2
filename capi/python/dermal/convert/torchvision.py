"""Exports a torchvision classification network as a dermal model file.

    python3 -m dermal.convert torchvision --arch efficientnet_v2_s \
        --labels akiec,bcc,bkl,df,mel,nv,vasc --size 300 \
        (--checkpoint model.pth | --seed 0) --out model.pt \
        [--cam-layer features.6] [--resize stretch|center_crop|fit]
        [--resample nearest|bilinear|bicubic|lanczos|box|hamming] [--calibrate-bn N]
        [--precision fp32|bf16 [--min-agreement 0.99] [--agreement-images 200]]

The network is rearranged (not changed) into nested Sequentials whose children
keep torchvision's names, so that running the stages in order equals the
torchvision model's forward. The library resizes photos byte for byte as
PIL's Image.resize with --resample (default bilinear). Refusals (a checkpoint
that does not fit, an unknown CAM layer, bad labels) exit with status 2 and a
message, no traceback.

A reduced-precision export is written only if its top-1 class agrees with the
float32 network's on at least --min-agreement of --agreement-images generated
lesion photos; the figure is recorded in the description's "precision".
"""
import argparse
import collections
import copy
import importlib.util
import os
import sys
import time

import torch
import torchvision
from torch import nn
from torchvision.transforms import functional as TF

from . import Refusal, modelfile

CALIBRATION_BATCH = 8
AGREEMENT_SEED = 2024  # photos used neither for calibration nor elsewhere
DEFAULT_CALIBRATION_BATCHES = 4
# The generated lesion photos of a source checkout (this file is
# capi/python/dermal/convert/torchvision.py there); an installed package has none.
LESIONS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), *[os.pardir] * 4, "tools", "lesions.py")


def _named(*pairs):
    return nn.Sequential(collections.OrderedDict(pairs))


def _replace_last_linear(sequential, classes):
    last = len(sequential) - 1
    sequential[last] = nn.Linear(sequential[last].in_features, classes)


def _efficientnet_v2_s(classes):
    net = torchvision.models.efficientnet_v2_s(weights=None)
    _replace_last_linear(net.classifier, classes)
    return net


def _mobilenet_v3_large(classes):
    net = torchvision.models.mobilenet_v3_large(weights=None)
    _replace_last_linear(net.classifier, classes)
    return net


def _resnet50(classes):
    net = torchvision.models.resnet50(weights=None)
    net.fc = nn.Linear(net.fc.in_features, classes)
    return net


def _densenet121(classes):
    net = torchvision.models.densenet121(weights=None)
    net.classifier = nn.Linear(net.classifier.in_features, classes)
    return net


def _features_and_head(net):
    """features → avgpool → flatten → classifier (EfficientNet, MobileNetV3)."""
    head = _named(("avgpool", net.avgpool), ("flatten", nn.Flatten(1)),
                  ("classifier", net.classifier))
    return _named(("features", net.features), ("head", head))


def _resnet_chain(net):
    stem = _named(("conv1", net.conv1), ("bn1", net.bn1), ("relu", net.relu),
                  ("maxpool", net.maxpool))
    head = _named(("avgpool", net.avgpool), ("flatten", nn.Flatten(1)), ("fc", net.fc))
    return _named(("stem", stem), ("layer1", net.layer1), ("layer2", net.layer2),
                  ("layer3", net.layer3), ("layer4", net.layer4), ("head", head))


def _densenet_chain(net):
    # torchvision's forward applies relu in place after `features`; the head's
    # ReLU is not in place so that Grad-CAM at features.norm5 can take its
    # gradient. relu0 likewise, for a CAM layer at features.norm0.
    net.features.relu0.inplace = False
    head = _named(("relu", nn.ReLU(inplace=False)), ("avgpool", nn.AdaptiveAvgPool2d(1)),
                  ("flatten", nn.Flatten(1)), ("classifier", net.classifier))
    return _named(("features", net.features), ("head", head))


# arch → (torchvision model with `classes` outputs, chain builder,
#         top-level children whose own children are stages, default CAM layer)
ARCHITECTURES = {
    "efficientnet_v2_s": (_efficientnet_v2_s, _features_and_head, {"features"}, "features.7"),
    "resnet50": (_resnet50, _resnet_chain, set(), "layer4"),
    "mobilenet_v3_large": (_mobilenet_v3_large, _features_and_head, {"features"}, "features.16"),
    "densenet121": (_densenet121, _densenet_chain, {"features"}, "features.norm5"),
}


def build_torchvision(arch, classes):
    """The torchvision model as a user trains it: last Linear outputs `classes`."""
    return ARCHITECTURES[arch][0](classes)


def chain_of(arch, net):
    """(module, stages): a Sequential sharing `net`'s parameters whose forward
    equals `net`'s forward and equals running `stages` one after another."""
    _, make_chain, split, _ = ARCHITECTURES[arch]
    chain = make_chain(net)
    stages = []
    for name, child in chain.named_children():
        if name in split:
            stages += [f"{name}.{sub}" for sub, _ in child.named_children()]
        else:
            stages.append(name)
    return chain, stages


def _strip_prefix(state, prefix):
    if state and all(k.startswith(prefix) for k in state):
        return collections.OrderedDict((k[len(prefix):], v) for k, v in state.items())
    return state


def read_checkpoint(path):
    """The state_dict in `path`: plain, under 'state_dict', 'model_state_dict'
    or 'model' (torchvision's reference training scripts), or of a pickled
    module; a DataParallel 'module.' prefix is removed."""
    try:
        obj = torch.load(path, map_location="cpu")
    except Exception as e:  # any unreadable file is a refusal, not a crash
        raise Refusal(f"cannot read checkpoint {path}: {e}") from None
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise Refusal(f"checkpoint {path} holds no state_dict (a dict of tensors, "
                      "possibly under 'state_dict', 'model_state_dict' or 'model')")
    return _strip_prefix(obj, "module.")


def _examples(items, shown=4):
    listed = ", ".join(items[:shown])
    return listed + (f", ... ({len(items)} in all)" if len(items) > shown else "")


def mismatches(model_state, checkpoint_state):
    """(missing, unexpected, wrong shapes) as printable lists; all empty iff
    load_state_dict(strict=True) would accept the checkpoint."""
    missing = [k for k in model_state if k not in checkpoint_state]
    unexpected = [k for k in checkpoint_state if k not in model_state]
    shapes = [f"{k} is {tuple(checkpoint_state[k].shape)} in the checkpoint, "
              f"{tuple(v.shape)} in the model"
              for k, v in model_state.items()
              if k in checkpoint_state and checkpoint_state[k].shape != v.shape]
    return missing, unexpected, shapes


def _matching_architecture(state):
    """Name of another architecture whose parameter names all match `state`, or None."""
    for arch in ARCHITECTURES:
        if set(build_torchvision(arch, 1).state_dict()) == set(state):
            return arch
    return None


def load_checkpoint(net, arch, classes, path):
    """Loads `path` into `net` with strict=True, or raises a Refusal naming the
    first offending keys and shapes."""
    state = read_checkpoint(path)
    missing, unexpected, shapes = mismatches(net.state_dict(), state)
    if not (missing or unexpected or shapes):
        net.load_state_dict(state, strict=True)
        return
    lines = [f"checkpoint {path} does not fit {arch} with {classes} classes:"]
    if missing or unexpected:
        other = _matching_architecture(state)
        if other and other != arch:
            lines.append(f"  its keys are those of --arch {other}")
    if shapes:
        lines.append("  wrong shapes: " + "; ".join(shapes[:4])
                     + (f"; ... ({len(shapes)} in all)" if len(shapes) > 4 else ""))
    if missing:
        lines.append("  missing keys: " + _examples(missing))
    if unexpected:
        lines.append("  unexpected keys: " + _examples(unexpected))
    raise Refusal("\n".join(lines))


def _lesion_images(seed, count, size):
    spec = importlib.util.spec_from_file_location("lesions", LESIONS_FILE)
    lesions = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lesions)
    return torch.stack([TF.to_tensor(image.convert("RGB"))
                        for _, _, image, _ in lesions.generate(seed, count, size, size)])


def _smooth_noise_images(seed, count, size):
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, 8, 8, generator=generator)
    return nn.functional.interpolate(coarse, size=(size, size), mode="bicubic",
                                     align_corners=False).clamp(0, 1)


def calibration_images(seed, count, size):
    """(count×3×size×size tensor in [0, 1], source name): images from a
    checkout's tools/lesions.py if this package runs from one, else smooth
    random images."""
    if os.path.exists(LESIONS_FILE):
        return _lesion_images(seed, count, size), "tools/lesions.py"
    return _smooth_noise_images(seed, count, size), "smooth random images"


def calibrate_batchnorm(model, images, batch):
    """Replaces every BatchNorm's running statistics by their cumulative
    average over `images` (normalized inputs); other weights are untouched and
    the model is left in eval mode."""
    model.eval()
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    with torch.no_grad():
        for start in range(0, len(images), batch):
            model(images[start:start + batch])
    for m in norms:
        m.eval()


class Bfloat16Stage(nn.Module):
    """A stage whose weights and arithmetic are bfloat16: takes and returns
    float32, so that the stages around it, the CAM layer and the head are
    unaffected."""

    def __init__(self, stage):
        super().__init__()
        self.stage = stage.to(torch.bfloat16)

    def forward(self, x):
        return self.stage(x.to(torch.bfloat16)).to(torch.float32)


def to_bfloat16_before(model, stages, cam_layer):
    """Replaces each stage before `cam_layer` by its Bfloat16Stage, in place."""
    for name in stages[:stages.index(cam_layer)]:
        parent, _, child = name.rpartition(".")
        holder = modelfile.submodule(model, parent) if parent else model
        setattr(holder, child, Bfloat16Stage(getattr(holder, child)))


def top1_agreement(float32_model, reduced_model, count, size):
    """(agreeing, source): on how many of `count` generated photos the two
    networks, frozen (and optimised under torch 1.x, as the library does where
    the load's checks pass), rank the same class first."""
    images, source = calibration_images(AGREEMENT_SEED, count, size)
    optimised = [torch.jit.freeze(torch.jit.script(m.eval())) for m in (float32_model, reduced_model)]
    if modelfile.runs_onednn_rewrite(torch.__version__):
        optimised = [torch.jit.optimize_for_inference(m) for m in optimised]
    agreeing = 0
    with torch.inference_mode(), torch.jit.optimized_execution(modelfile.runs_onednn_rewrite(torch.__version__)):
        for start in range(0, count, CALIBRATION_BATCH):
            x = normalize(images[start:start + CALIBRATION_BATCH])
            first, second = (m(x).argmax(1) for m in optimised)
            agreeing += int((first == second).sum())
    return agreeing, source


def normalize(images):
    mean = torch.tensor(modelfile.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(modelfile.IMAGENET_STD).view(1, 3, 1, 1)
    return (images - mean) / std


PROG = "python3 -m dermal.convert torchvision"


def parse_args(argv):
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", required=True, choices=sorted(ARCHITECTURES))
    parser.add_argument("--labels", required=True,
                        help="comma-separated class names, in the order of the outputs")
    parser.add_argument("--size", required=True, type=int,
                        help="input width and height in pixels")
    weights = parser.add_mutually_exclusive_group(required=True)
    weights.add_argument("--checkpoint", help="state_dict file from training")
    weights.add_argument("--seed", type=int, help="seeded random weights")
    parser.add_argument("--out", required=True)
    parser.add_argument("--cam-layer", help="stage whose output Grad-CAM uses "
                        "(default: the last feature stage)")
    parser.add_argument("--resize", default="stretch", choices=["stretch", "center_crop", "fit"],
                        help="fit: PIL.ImageOps.fit, the centred box of the input's aspect ratio")
    parser.add_argument("--resample", default="bilinear",
                        choices=["nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"],
                        help="the PIL filter the app resizes photos with (default bilinear)")
    parser.add_argument("--calibrate-bn", type=int, metavar="N",
                        help=f"recalibrate BatchNorm statistics on N batches of "
                             f"{CALIBRATION_BATCH} images (default: "
                             f"{DEFAULT_CALIBRATION_BATCHES} with --seed, 0 with --checkpoint)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                        help="bf16: the stages before the CAM layer compute in bfloat16 "
                             "(half their weight bytes); the CAM layer and the head stay "
                             "float32. Written only if top-1 agrees with float32 well enough "
                             "(--min-agreement)")
    parser.add_argument("--min-agreement", type=float, default=0.99, metavar="FRACTION",
                        help="reduced precision: the least top-1 agreement with float32 on "
                             "generated photos for the file to be written (default 0.99; "
                             "0 writes it whatever the agreement, e.g. to measure it)")
    parser.add_argument("--agreement-images", type=int, default=200, metavar="N",
                        help="reduced precision: generated photos the agreement is measured on "
                             "(default 200)")
    parser.add_argument("--threads", type=int, help="intra-op threads (default: "
                        "torch's; more speed up calibration on an idle machine only)")
    args = parser.parse_args(argv)
    if args.size < 16:
        parser.error("--size must be at least 16")
    if args.calibrate_bn is not None and args.calibrate_bn < 0:
        parser.error("--calibrate-bn must not be negative")
    if not 0.0 <= args.min_agreement <= 1.0:
        parser.error("--min-agreement must be within 0..1")
    if args.agreement_images < 1:
        parser.error("--agreement-images must be at least 1")
    return args


def export(args):
    """Writes the model file described by `args`; returns a summary for the user."""
    started = time.monotonic()
    if args.precision == "bf16" and not modelfile.onednn_allows_bfloat16():
        raise Refusal(f"--precision bf16: {'='.join(modelfile.onednn_isa_cap())} keeps oneDNN from "
                      "bfloat16 instructions, so the agreement with float32 cannot be measured here (LibTorch 1.13 "
                      "then fails on bfloat16 convolutions, 2.6 emulates them very slowly); export in a process "
                      "without that setting; nothing written")
    labels = [label.strip() for label in args.labels.split(",")]
    if args.seed is not None:
        torch.manual_seed(args.seed)
    net = build_torchvision(args.arch, len(labels))
    if args.checkpoint:
        load_checkpoint(net, args.arch, len(labels), args.checkpoint)
    model, stages = chain_of(args.arch, net)
    cam_layer = args.cam_layer or ARCHITECTURES[args.arch][3]
    if cam_layer not in stages:
        raise Refusal(f"--cam-layer {cam_layer!r} is not a stage of {args.arch}; "
                      f"valid: {', '.join(stages)}")
    try:
        description = modelfile.make_description(
            args.arch, labels, args.size, args.size, stages, cam_layer, resize=args.resize,
            resample=args.resample)
    except ValueError as e:
        raise Refusal(str(e)) from None

    batches = args.calibrate_bn
    if batches is None:
        batches = DEFAULT_CALIBRATION_BATCHES if args.seed is not None else 0
    summary = []
    if batches:
        seed = args.seed if args.seed is not None else 0
        images, source = calibration_images(seed, batches * CALIBRATION_BATCH, args.size)
        calibrate_batchnorm(model, normalize(images), CALIBRATION_BATCH)
        summary.append(f"BatchNorm recalibrated on {len(images)} images ({source})")

    if args.precision == "bf16":
        float32_model = copy.deepcopy(model)
        to_bfloat16_before(model, stages, cam_layer)
        agreeing, source = top1_agreement(float32_model, model, args.agreement_images, args.size)
        del float32_model
        count = args.agreement_images
        finding = (f"stages before {cam_layer} in bfloat16: top-1 agrees with float32 on "
                   f"{agreeing}/{count} = {agreeing / count:.1%} of generated photos ({source})")
        if agreeing / count < args.min_agreement:
            raise Refusal(f"{finding}, below --min-agreement {args.min_agreement:.1%}; nothing written")
        summary.append(finding)
        native = modelfile.native_bfloat16()
        summary.append(f"this CPU computes bfloat16 natively ({native})" if native else
                       "this CPU has no native bfloat16 (neither avx512_bf16 nor amx_bf16): dermal refuses to "
                       "load the file here, as it would run slower than float32; it loads on CPUs that have one")
        description["precision"] = {"reduced": "bfloat16", "before": cam_layer,
                                    "top1_agreement": {"images": count, "agreeing": agreeing, "source": source}}
    modelfile.save(model, description, args.out)
    parameters = sum(p.numel() for p in model.parameters())
    summary.append(f"wrote {args.out}: {os.path.getsize(args.out) / 1e6:.1f} MB, "
                   f"{parameters:,} parameters, {len(stages)} stages, "
                   f"cam_layer {cam_layer}, {time.monotonic() - started:.1f} s")
    return "\n".join(summary)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        print(export(args))
    except Refusal as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
