"""Trains the demo model on generated lesion photos and writes the example data.

  /usr/bin/python3 tools/train_demo.py [--seed 1] [--out examples/data]

(about 4 minutes on 2 idle cores) writes OUT/demo-model.pt (a dermal model file, see modelfile.py) and
OUT/samples/: two 640x480 JPEG photos per class (<class>_<n>.jpg) with their
masks (<class>_<n>_mask.png), drawn from SAMPLE_SEED and chosen among those
the saved model classifies correctly with probability > 0.9. Then, as
`--evaluate` alone does, it prints the saved model's accuracy on 300
HELDOUT_SEED images and how often its CAM maximum lies inside the lesion.

Training uses lesion seed S, validation seed S + 1; HELDOUT_SEED and
SAMPLE_SEED are never trained on. The network's last `features` stage has
stride 8 (16x16 at 128 input) and feeds a global-average-pool + linear head,
so its class activation maps localise the lesion; training adds a loss on
the masks that puts the true class's CAM maximum inside the lesion.
"""
import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

import lesions
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "capi", "python"))
from dermal.convert import modelfile  # noqa: E402  (imports the package: set DERMAL_LIBRARY)

CLASSES = lesions.CLASSES
SIZE = 128
HELDOUT_SEED = 424242
SAMPLE_SEED = 9001
# Generated sizes during training, cycled by image index: mostly the default
# square, some 4:3 photos that the stretch resize distorts like the samples.
TRAIN_SIZES = [(256, 256), (256, 256), (320, 240), (256, 256)]
# Weight of the loss that pulls the true class's CAM maximum onto the lesion.
POINTING_WEIGHT = 0.1
MEAN = torch.tensor(modelfile.IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(modelfile.IMAGENET_STD).view(1, 3, 1, 1)


def _block(cin, cout, stride):
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True)]


class DemoNet(nn.Module):
    """forward(x) = head(features(x)); features has 5 stages, total stride 8."""

    def __init__(self, num_classes=len(CLASSES)):
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(*_block(3, 16, 2)),                          # 1/2
            nn.Sequential(*_block(16, 32, 2), *_block(32, 32, 1)),     # 1/4
            nn.Sequential(*_block(32, 64, 2), *_block(64, 64, 1)),     # 1/8
            nn.Sequential(*_block(64, 96, 1), *_block(96, 96, 1)),
            nn.Sequential(*_block(96, 128, 1)))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(128, num_classes))

    def forward(self, x):
        return self.head(self.features(x))


def stage_names(model):
    return [f"features.{i}" for i in range(len(model.features))] + ["head"]


def to_uint8(image):
    """The library's resize: stretch to SIZE x SIZE with PIL bilinear; (3, H, W) uint8."""
    small = image.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)
    return torch.from_numpy(np.asarray(small).copy()).permute(2, 0, 1)


def normalize(batch_uint8):
    """(N, 3, H, W) uint8 -> float input: x / 255, then (x - mean) / std."""
    return (batch_uint8.float() / 255.0 - MEAN) / STD


def preprocess(image):
    """A PIL image as the (1, 3, SIZE, SIZE) float input of the model."""
    return normalize(to_uint8(image)[None])


def make_set(seed, count, sizes=((256, 256),)):
    """Images of lesion seed `seed`, preprocessed to uint8, their labels and masks."""
    xs, ys, masks = [], [], []
    for i in range(count):
        w, h = sizes[i % len(sizes)]
        name = lesions.class_of(seed, i)
        image, mask = lesions.render(np.random.default_rng([seed, i]), name, w, h)
        xs.append(to_uint8(image))
        ys.append(CLASSES.index(name))
        masks.append(np.asarray(mask) > 0)
    return torch.stack(xs), torch.tensor(ys), masks


def augment(batch, cover, gen):
    """The same random flip and rotation by a multiple of 90 degrees applied
    to each image and its lesion cover."""
    xs, cs = [], []
    for x, c in zip(batch, cover):
        k, flip = torch.randint(0, 4, (2,), generator=gen).tolist()
        x, c = torch.rot90(x, k, (1, 2)), torch.rot90(c, k, (0, 1))
        if flip % 2:
            x, c = torch.flip(x, (2,)), torch.flip(c, (1,))
        xs.append(x)
        cs.append(c)
    return torch.stack(xs), torch.stack(cs)


def lesion_cover(masks, cells=SIZE // 8):
    """(N, cells, cells): fraction of each CAM cell covered by the lesion."""
    out = []
    for mask in masks:
        m = Image.fromarray(mask.astype(np.uint8) * 255).resize((SIZE, SIZE), Image.BILINEAR)
        m = torch.from_numpy(np.asarray(m, np.float32) / 255.0)[None, None]
        out.append(F.adaptive_avg_pool2d(m, cells)[0, 0])
    return torch.stack(out)


def pointing_loss(cam, cover):
    """Small when the CAM's maximum lies on cells mostly covered by the lesion
    (or, for lesions smaller than a cell, on the most covered cell):
    logsumexp over all cells minus logsumexp over those cells."""
    cam, cover = cam.flatten(1), cover.flatten(1)
    inside = (cover >= 0.5) | (cover >= cover.max(1, keepdim=True).values)
    return (torch.logsumexp(cam, 1)
            - torch.logsumexp(cam.masked_fill(~inside, float("-inf")), 1)).mean()


def predict(model, x_uint8, batch=100):
    """Softmax probabilities of `model` for uint8 inputs."""
    with torch.no_grad():
        return torch.cat([F.softmax(model(normalize(x_uint8[i:i + batch])), 1)
                          for i in range(0, len(x_uint8), batch)])


def cam_hits(model, x_uint8, masks):
    """Per image: does the maximum of the predicted class's CAM,
    ReLU(sum_k w_ck A_k) upsampled bilinearly to the mask, lie in the mask?"""
    weight = modelfile.submodule(model, "head.2").weight
    hits = []
    with torch.no_grad():
        for x, mask in zip(x_uint8, masks):
            acts = model.features(normalize(x[None]))
            c = int(model.head(acts).argmax())
            cam = F.relu(torch.einsum("k,nkhw->nhw", weight[c], acts))[None]
            cam = F.interpolate(cam, size=mask.shape, mode="bilinear", align_corners=False)
            y, x_ = divmod(int(cam.flatten().argmax()), mask.shape[1])
            hits.append(bool(mask[y, x_]))
    return hits


def train(seed, count, epochs, log=print):
    """A DemoNet trained on `count` images of lesion seed `seed` (validated
    on 600 of seed + 1); deterministic for a given seed and thread count."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.time()
    x, y, masks = make_set(seed, count, TRAIN_SIZES)
    cover = lesion_cover(masks)
    xv, yv, _ = make_set(seed + 1, 600)
    log(f"generated {count} + 600 images in {time.time() - t0:.0f} s")
    model = DemoNet()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    batch = 64
    steps = epochs * ((count + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps,
                                                pct_start=0.2)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(count, generator=gen)
        total = 0.0
        for i in range(0, count, batch):
            idx = order[i:i + batch]
            xb, cb = augment(x[idx], cover[idx], gen)
            acts = model.features(normalize(xb))
            logits = model.head(acts)
            cam = torch.einsum("nk,nkhw->nhw", model.head[2].weight[y[idx]], acts)
            loss = F.cross_entropy(logits, y[idx]) + POINTING_WEIGHT * pointing_loss(cam, cb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss) * len(idx)
        model.eval()
        acc = float((predict(model, xv).argmax(1) == yv).float().mean())
        log(f"epoch {epoch + 1}/{epochs}: loss {total / count:.4f}, "
            f"validation accuracy {acc:.4f}, {time.time() - t0:.0f} s")
    return model


def write_samples(model, out_dir, per_class=2):
    """Writes per_class 640x480 samples of each class whose lesion covers at
    least 2% of the photo and that the model, reading the written JPEG,
    classifies correctly with probability > 0.9 with its CAM maximum inside
    the lesion; raises RuntimeError if 500 candidates do not suffice."""
    os.makedirs(out_dir, exist_ok=True)
    found = {name: 0 for name in CLASSES}
    index = 0
    while min(found.values()) < per_class:
        if index >= 500:
            raise RuntimeError(f"too few confident samples among 500: {found}")
        name = lesions.class_of(SAMPLE_SEED, index)
        image, mask = lesions.render(np.random.default_rng([SAMPLE_SEED, index]),
                                     name, 640, 480)
        index += 1
        if found[name] >= per_class or np.asarray(mask).mean() < 0.02 * 255:
            continue
        stem = os.path.join(out_dir, f"{name}_{found[name] + 1}")
        image.save(stem + ".jpg", quality=90)
        x = to_uint8(Image.open(stem + ".jpg"))[None]
        prob = predict(model, x)[0]
        if (int(prob.argmax()) == CLASSES.index(name) and float(prob.max()) > 0.9
                and cam_hits(model, x, [np.asarray(mask) > 0])[0]):
            mask.save(stem + "_mask.png")
            found[name] += 1
        else:
            os.remove(stem + ".jpg")


def evaluate(path, count=300, cam_count=200):
    """Prints the saved model's accuracy on `count` HELDOUT_SEED images and the
    fraction of the first `cam_count` whose CAM maximum lies in the lesion."""
    model = torch.jit.load(path)
    x, y, masks = make_set(HELDOUT_SEED, count)
    acc = float((predict(model, x).argmax(1) == y).float().mean())
    hits = cam_hits(model, x[:cam_count], masks[:cam_count])
    print(f"held-out (seed {HELDOUT_SEED}) accuracy on {count}: {acc:.4f}; "
          f"CAM maximum inside the mask on {cam_count}: {np.mean(hits):.3f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description="Train the dermal demo model.")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="examples/data")
    parser.add_argument("--count", type=int, default=4200)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--evaluate", action="store_true",
                        help="only evaluate OUT/demo-model.pt on held-out images")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    path = os.path.join(args.out, "demo-model.pt")
    if not args.evaluate:
        t0 = time.time()
        model = train(args.seed, args.count, args.epochs)
        stages = stage_names(model)
        description = modelfile.make_description(
            name="dermal-demo", labels=CLASSES, width=SIZE, height=SIZE,
            stages=stages, cam_layer=stages[-2])
        os.makedirs(args.out, exist_ok=True)
        modelfile.save(model, description, path)
        print(f"saved {path} ({os.path.getsize(path)} bytes), "
              f"training took {time.time() - t0:.0f} s")
        write_samples(torch.jit.load(path), os.path.join(args.out, "samples"))
    evaluate(path)


if __name__ == "__main__":
    main()
