#!/usr/bin/python3
"""The best plain prediction Python torch offers without dermal, in one fresh
process: the dermal file loaded with torch.jit.load, frozen, optimised for
inference, run under inference_mode on the preprocessed photo. No Grad-CAM.

    /usr/bin/python3 benchmarks/python_torch_optimized.py MODEL PHOTO [--threads N] [--repeats N]
"""
import time

import bench_common as common


def main():
    args, torch, baseline, jpeg, description = common.torch_start(__doc__)

    started = time.perf_counter()
    model = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.load(args.model).eval()))
    load_ms = (time.perf_counter() - started) * 1e3
    load_peak = common.memory()[1]
    settled = common.after_load()

    def predict(x):
        with torch.inference_mode():
            return torch.softmax(model(x), 1)

    def end_to_end():
        return predict(common.preprocess(jpeg, description)[1])

    first = common.Stage()
    probabilities = first.run(end_to_end)
    common.first_result()
    x = common.preprocess(jpeg, description)[1]
    for _ in range(args.warmup):
        end_to_end()
    stages = {"end_to_end_predict": common.Stage(), "predict": common.Stage()}
    for _ in range(args.repeats):
        stages["end_to_end_predict"].run(end_to_end)
        stages["predict"].run(lambda: predict(x))
    common.report({
        "baseline_rss_mb": baseline, "load_ms": load_ms, "load_peak_mb": load_peak, **settled,
        "first_request_ms": first.milliseconds[0], "first_request_peak_mb": first.peak,
        "stages": {name: stage.json() for name, stage in stages.items()},
        "process_peak_mb": common.process_peak(), "rss_end_mb": common.memory()[0],
        "threads": args.threads, "top1": description["labels"][int(probabilities.argmax())],
    })


if __name__ == "__main__":
    main()
