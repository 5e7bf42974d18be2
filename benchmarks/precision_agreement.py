#!/usr/bin/python3
"""Top-1 agreement of a reduced-precision export with its float32 original on
generated lesion photos (tools/lesions.py, a seed used neither for BatchNorm
calibration nor elsewhere), both frozen and optimised as dermal runs them.
Prints one JSON object.

    /usr/bin/python3 benchmarks/precision_agreement.py FP32_MODEL REDUCED_MODEL [--count 200]
"""
import argparse
import json

import bench_common as common

SEED = 2024
BATCH = 8


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reference")
    parser.add_argument("reduced")
    parser.add_argument("--count", type=int, default=200)
    args = parser.parse_args()
    import torch
    from torchvision.transforms import functional as TF
    import lesions

    spec = common.description_of(args.reference)["input"]
    models = [torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.load(path).eval()))
              for path in (args.reference, args.reduced)]
    tops, largest_difference = [[], []], 0.0
    photos = lesions.generate(SEED, args.count, spec["width"], spec["height"])
    batch = []
    for done, (_, _, image, _) in enumerate(photos, 1):
        batch.append(TF.normalize(TF.to_tensor(image.convert("RGB")), spec["mean"], spec["std"]))
        if len(batch) == BATCH or done == args.count:
            with torch.inference_mode():
                probabilities = [torch.softmax(model(torch.stack(batch)), 1) for model in models]
            for top, p in zip(tops, probabilities):
                top += p.argmax(1).tolist()
            largest_difference = max(largest_difference, float((probabilities[0] - probabilities[1]).abs().max()))
            batch = []
    agreeing = sum(a == b for a, b in zip(*tops))
    print(json.dumps({"images": args.count, "seed": SEED, "agreeing": agreeing,
                      "agreement": agreeing / args.count,
                      "largest_probability_difference": largest_difference}))


if __name__ == "__main__":
    main()
