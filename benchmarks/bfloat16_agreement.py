#!/usr/bin/python3
"""bfloat16 against float32 on a trained dermal model file: its stages before
the CAM layer cast to bfloat16 (as `python3 -m dermal.convert torchvision --precision bf16`
makes them), every stage frozen as the library freezes it, on held-out
generated lesion photos.

    /usr/bin/python3 benchmarks/bfloat16_agreement.py MODEL [--images 300]

Prints one JSON object: on how many photos the two rank the same class first,
each one's accuracy against the photos' classes (when the model's labels are
tools/lesions.py's, as the demo model's are), and the largest difference of
a probability. Numbers, not timings: it may run beside other work.
"""
import argparse
import json
import os
import sys

import torch
from PIL import Image
from torchvision.transforms import functional as TF

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
import lesions  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "capi", "python"))
from dermal.convert import modelfile  # noqa: E402  (imports the package: set DERMAL_LIBRARY)

HELDOUT_SEED = 424242  # tools/train_demo.py's: never trained on


def prepared_stages(path, bfloat16_before_cam):
    """The model's stages, each frozen (and optimised where the library
    optimises), those before the CAM layer in bfloat16 if asked."""
    description = modelfile.load_description(path)
    module = torch.jit.load(path).eval()
    split = description["stages"].index(description["cam_layer"])
    optimise = modelfile.runs_onednn_rewrite(torch.__version__)
    stages = []
    for i, name in enumerate(description["stages"]):
        stage = modelfile.submodule(module, name)
        reduced = bfloat16_before_cam and i < split
        if reduced:
            stage = stage.to(torch.bfloat16)
        stage = torch.jit.freeze(stage)
        if optimise and name not in description.get("frozen_only", []):
            stage = torch.jit.optimize_for_inference(stage)
        stages.append((stage, reduced))
    return stages


def probabilities(stages, x):
    with torch.inference_mode(), torch.jit.optimized_execution(
            modelfile.runs_onednn_rewrite(torch.__version__)):
        for stage, reduced in stages:
            x = stage(x.to(torch.bfloat16)).to(torch.float32) if reduced else stage(x)
    return torch.softmax(x, 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--images", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    description = modelfile.load_description(args.model)
    spec = description["input"]
    mean = torch.tensor(spec["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(spec["std"]).view(1, 3, 1, 1)
    photos = list(lesions.generate(HELDOUT_SEED, args.images, 256, 256))
    size = (spec["width"], spec["height"])
    x = torch.stack([TF.pil_to_tensor(image.resize(size, Image.BILINEAR)) for _, _, image, _ in photos])
    x = (x.float() * spec["scale"] - mean) / std
    float32 = probabilities(prepared_stages(args.model, False), x)
    bfloat16 = probabilities(prepared_stages(args.model, True), x)
    report = {"model": os.path.basename(args.model), "torch": torch.__version__,
              "native_bfloat16": modelfile.native_bfloat16(), "images": args.images,
              "top1_agreeing": int((float32.argmax(1) == bfloat16.argmax(1)).sum()),
              "max_abs_probability_difference": float((float32 - bfloat16).abs().max())}
    if description["labels"] == lesions.CLASSES:
        truth = torch.tensor([lesions.CLASSES.index(name) for _, name, _, _ in photos])
        report["accuracy_float32"] = float((float32.argmax(1) == truth).float().mean())
        report["accuracy_bfloat16"] = float((bfloat16.argmax(1) == truth).float().mean())
    print(json.dumps(report))


if __name__ == "__main__":
    main()
