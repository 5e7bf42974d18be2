#!/usr/bin/python3
"""Grad-CAM the way a Python app does it today, in one fresh process: an
eager model with the dermal file's weights, forward and backward hooks on
the CAM layer, autograd over the whole forward pass, then the heatmap
upsampled, coloured over the photo and encoded as JPEG.

    /usr/bin/python3 benchmarks/python_torch_gradcam.py MODEL PHOTO [--threads N] [--repeats N]

The eager model is torchvision's (rebuilt as dermal.convert.torchvision arranges
it) when the description names a torchvision architecture, else the
TorchScript module as loaded, unfrozen, run stage by stage.
"""
import io
import time

import bench_common as common


def eager_model(path, description):
    """(model, hookable): the network with the file's weights, parameters
    requiring grad as after training; hookable is False for TorchScript."""
    import torch
    from dermal.convert import torchvision as exporter
    scripted = torch.jit.load(path)
    arch = description["name"]
    if arch not in exporter.ARCHITECTURES:
        for parameter in scripted.parameters():
            parameter.requires_grad_(True)
        return scripted.eval(), False
    model, _ = exporter.chain_of(arch, exporter.build_torchvision(arch, len(description["labels"])))
    model.load_state_dict(scripted.state_dict())
    del scripted
    return model.eval(), True


def gradcam(model, hookable, description, x):
    """(logits, Grad-CAM map at the CAM layer's resolution) for the top class."""
    import torch
    from dermal.convert import modelfile
    saved = {}
    if hookable:
        layer = modelfile.submodule(model, description["cam_layer"])
        forward = layer.register_forward_hook(lambda module, inputs, output: saved.update(activation=output))
        backward = layer.register_full_backward_hook(lambda module, gin, gout: saved.update(gradient=gout[0]))
        try:
            logits = model(x)
            model.zero_grad()
            logits[0, int(logits.argmax())].backward()
        finally:
            forward.remove()
            backward.remove()
    else:
        stages = description["stages"]
        split = stages.index(description["cam_layer"]) + 1
        activation = modelfile.run_stages(model, stages[:split], x)
        activation.retain_grad()
        logits = modelfile.run_stages(model, stages[split:], activation)
        model.zero_grad()
        logits[0, int(logits.argmax())].backward()
        saved = {"activation": activation, "gradient": activation.grad}
    activation, gradient = saved["activation"].detach()[0], saved["gradient"][0]
    weights = gradient.mean(dim=(1, 2), keepdim=True)
    return logits.detach(), torch.relu((weights * activation).sum(0))


def overlay_jpeg(photo, cam):
    """The map stretched over the photo, jet-coloured, blended at 0.45, as JPEG bytes."""
    import numpy as np
    import torch
    from PIL import Image
    full = torch.nn.functional.interpolate(cam[None, None], size=(photo.height, photo.width),
                                           mode="bilinear", align_corners=False)[0, 0].numpy()
    span = full.max() - full.min()
    full = (full - full.min()) / span if span > 0 else np.zeros_like(full)
    four = 4.0 * full[..., None]
    jet = np.clip(1.5 - np.abs(four - np.array([3.0, 2.0, 1.0])), 0, 1) * 255
    blended = 0.55 * np.asarray(photo, dtype=np.float32) + 0.45 * jet
    out = io.BytesIO()
    Image.fromarray(np.rint(blended).astype(np.uint8)).save(out, format="JPEG", quality=90)
    return out.getvalue()


def main():
    args, torch, baseline, jpeg, description = common.torch_start(__doc__)

    started = time.perf_counter()
    model, hookable = eager_model(args.model, description)
    load_ms = (time.perf_counter() - started) * 1e3
    load_peak = common.memory()[1]
    settled = common.after_load()

    def end_to_end():
        photo, x = common.preprocess(jpeg, description)
        logits, cam = gradcam(model, hookable, description, x)
        return logits, overlay_jpeg(photo, cam)

    first = common.Stage()
    logits, _ = first.run(end_to_end)
    common.first_result()
    photo, x = common.preprocess(jpeg, description)
    for _ in range(args.warmup):
        end_to_end()
    stages = {"end_to_end_gradcam": common.Stage(), "gradcam": common.Stage()}
    for _ in range(args.repeats):
        stages["end_to_end_gradcam"].run(end_to_end)
        stages["gradcam"].run(lambda: gradcam(model, hookable, description, x))
    common.report({
        "baseline_rss_mb": baseline, "load_ms": load_ms, "load_peak_mb": load_peak, **settled,
        "first_request_ms": first.milliseconds[0], "first_request_peak_mb": first.peak,
        "stages": {name: stage.json() for name, stage in stages.items()},
        "process_peak_mb": common.process_peak(), "rss_end_mb": common.memory()[0],
        "eager": "torchvision" if hookable else "torchscript", "threads": args.threads,
        "top1": description["labels"][int(logits.argmax())],
    })


if __name__ == "__main__":
    main()
