"""Deterministic generator of dermoscopy-like skin-lesion photos with masks.

Every image shows skin (tone, uneven lighting, texture, optionally hairs,
ruler marks or the dark vignette of a dermoscope) and one lesion of a class
that follows the ABCD rule:

  melanoma  asymmetric, irregular notched border, several colours
            (browns, black, blue-grey, sometimes whitish regression);
  nevus     round or oval, smooth border, uniform brown;
  vascular  red or purple lobules separated by pale septa.

Image `index` of seed `seed` depends only on (seed, index, width, height):
randomness comes from numpy.random.default_rng([seed, index]) and drawing
from PIL, never from a global generator.

CLI: tools/lesions.py --seed S --count N --out DIR [--width W --height H]
[--format png|jpg] writes DIR/<index:04d>_<class>.<ext>, the mask
DIR/<index:04d>_<class>_mask.png and DIR/labels.csv (file,label,mask).
"""
import argparse
import csv
import math
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASSES = ["melanoma", "nevus", "vascular"]

# Lesion diameter as a fraction of the shorter image side.
MIN_SIZE, MAX_SIZE = 0.08, 0.35


def class_of(seed, index):
    """The class of image `index`: every aligned block of three images holds
    each class once, in an order drawn from the seed."""
    order = np.random.default_rng([seed, index // 3, 7]).permutation(len(CLASSES))
    return CLASSES[order[index % 3]]


def _smooth_noise(rng, h, w, cells):
    """Zero-mean, unit-ish smooth noise of shape (h, w); features span about
    max(h, w) / cells pixels."""
    cells = max(2.0, cells)
    ch = max(2, int(round(cells * h / max(h, w))) + 1)
    cw = max(2, int(round(cells * w / max(h, w))) + 1)
    small = rng.standard_normal((ch, cw)).astype(np.float32)
    return np.asarray(Image.fromarray(small, mode="F").resize((w, h), Image.BICUBIC))


def _skin(rng, h, w, xx, yy):
    """Skin colour field (h, w, 3) in 0..255 before lighting."""
    light = np.array([238.0, 204.0, 186.0])
    dark = np.array([165.0, 112.0, 82.0])
    tone = light + (dark - light) * rng.uniform(0.0, 1.0)
    tone *= rng.uniform(0.93, 1.07, size=3)          # pinkish / yellowish casts
    blotch = _smooth_noise(rng, h, w, rng.uniform(3, 8))[..., None]
    redness = np.array([0.0, -1.0, -0.8]) * rng.uniform(0, 10)
    return tone + blotch * redness


def _lighting(rng, h, w, xx, yy):
    """Multiplicative illumination and texture (h, w), around 1."""
    ang = rng.uniform(0, 2 * math.pi)
    ramp = ((xx / w - 0.5) * math.cos(ang) + (yy / h - 0.5) * math.sin(ang))
    rr = np.hypot(xx / w - rng.uniform(0.3, 0.7), yy / h - rng.uniform(0.3, 0.7))
    light = (1.0 + rng.uniform(0.0, 0.35) * ramp - rng.uniform(0.0, 0.3) * rr ** 2
             + rng.uniform(0.0, 0.06) * _smooth_noise(rng, h, w, 4))
    texture = (rng.uniform(0.01, 0.04) * _smooth_noise(rng, h, w, max(h, w) / 6)
               + rng.uniform(0.01, 0.03) * _smooth_noise(rng, h, w, max(h, w) / 2.5))
    return light * (1.0 + texture)


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _local(xx, yy, cx, cy, angle, sx, sy):
    """Rotated, scaled coordinates around the lesion centre."""
    c, s = math.cos(angle), math.sin(angle)
    u = ((xx - cx) * c + (yy - cy) * s) / sx
    v = (-(xx - cx) * s + (yy - cy) * c) / sy
    return u, v


def _nevus(rng, xx, yy, cx, cy, r0):
    """Alpha (h, w) and colour (h, w, 3): oval, smooth edge, uniform brown."""
    aspect = rng.uniform(0.7, 1.0)
    u, v = _local(xx, yy, cx, cy, rng.uniform(0, math.pi), 1.0, aspect)
    d, th = np.hypot(u, v), np.arctan2(v, u)
    r = r0 / math.sqrt(aspect) * (1 + 0.03 * np.cos(2 * th + rng.uniform(0, 6.3))
                                  + 0.02 * np.cos(3 * th + rng.uniform(0, 6.3)))
    edge = 0.5 + rng.uniform(0.02, 0.08) * r0
    alpha = np.clip((r - d) / edge + 0.5, 0.0, 1.0)
    brown = np.array([150.0, 95.0, 62.0]) + (np.array([78.0, 48.0, 32.0])
                                             - np.array([150.0, 95.0, 62.0])) * rng.uniform()
    shade = 1.0 + rng.uniform(-0.08, 0.08) * np.clip(1 - d / r, 0, 1)
    colour = brown * shade[..., None]
    return alpha, colour


def _melanoma(rng, h, w, xx, yy, cx, cy, r0):
    """Alpha and colour: asymmetric notched outline, several colour zones."""
    aspect = rng.uniform(0.65, 1.0)
    u, v = _local(xx, yy, cx, cy, rng.uniform(0, 2 * math.pi), 1.0, aspect)
    d, th = np.hypot(u, v), np.arctan2(v, u)
    shape = np.ones_like(th)
    for k in range(1, 9):
        amp = rng.uniform(0.08, 0.2) if k <= 2 else rng.uniform(0.0, 0.12) / math.sqrt(k - 1)
        shape += amp * np.cos(k * th + rng.uniform(0, 2 * math.pi))
    for k in range(11, 20, 2):
        shape += rng.uniform(0.01, 0.035) * np.cos(k * th + rng.uniform(0, 2 * math.pi))
    for _ in range(rng.integers(2, 6)):                # notches
        dth = np.angle(np.exp(1j * (th - rng.uniform(-math.pi, math.pi))))
        shape -= rng.uniform(0.15, 0.35) * np.exp(-(dth / rng.uniform(0.08, 0.22)) ** 2)
    shape = np.clip(shape, 0.3, None)
    r = r0 / math.sqrt(aspect) * shape / float(np.sqrt(np.mean(shape ** 2)))
    edge = 0.5 + rng.uniform(0.0, 0.04) * r0
    alpha = np.clip((r - d) / edge + 0.5, 0.0, 1.0)

    # Colour zones: smooth noise at lesion scale, pushed to opposite sides.
    cells = max(h, w) / max(3.0, 0.6 * r0)
    psi = rng.uniform(0, 2 * math.pi)
    g = (u * math.cos(psi) + v * math.sin(psi)) / r0
    colour = np.empty(alpha.shape + (3,), np.float32)
    colour[:] = np.array([125.0, 80.0, 55.0]) * rng.uniform(0.85, 1.15)
    zones = [(np.array([35.0, 25.0, 28.0]), 0.9 * g, rng.uniform(0.2, 0.7)),       # black
             (np.array([105.0, 112.0, 130.0]), -0.9 * g, rng.uniform(0.3, 0.8)),    # blue-grey
             (np.array([170.0, 120.0, 85.0]), 0.0 * g, rng.uniform(0.4, 1.0)),     # tan
             (np.array([205.0, 185.0, 180.0]), 0.0 * g,
              rng.uniform(1.0, 1.4) if rng.random() < 0.3 else 9.0)]               # regression
    for tint, bias, thr in zones:
        field = _smooth_noise(rng, h, w, cells) + bias
        weight = _sigmoid((field - thr) * 6.0)[..., None]
        colour = colour * (1 - weight) + tint * weight
    colour *= 1.0 + 0.06 * _smooth_noise(rng, h, w, max(h, w) / max(2.0, 0.15 * r0))[..., None]
    return alpha, colour


def _vascular(rng, xx, yy, cx, cy, r0):
    """Alpha and colour: cluster of red/purple lobules with pale septa."""
    n = int(rng.integers(3, 9))
    centres, radii = [(0.0, 0.0)], [rng.uniform(0.4, 0.6)]
    for _ in range(n - 1):
        a, dist = rng.uniform(0, 2 * math.pi), rng.uniform(0.25, 0.6)
        centres.append((dist * math.cos(a), dist * math.sin(a)))
        radii.append(rng.uniform(0.25, 0.5))
    extent = max(math.hypot(*c) + rr for c, rr in zip(centres, radii))
    scale = r0 / extent
    rot = rng.uniform(0, 2 * math.pi)
    u, v = _local(xx, yy, cx, cy, rot, 1.0, 1.0)
    red, purple = np.array([200.0, 45.0, 55.0]), np.array([115.0, 35.0, 95.0])
    depth, inside_px, tints = [], [], []                # depth = (r_i - d_i) / r_i
    for (px, py), rr in zip(centres, radii):
        rad = rr * scale
        inside_px.append(rad - np.hypot(u - px * scale, v - py * scale))
        depth.append(inside_px[-1] / rad)
        tints.append((red + (purple - red) * rng.uniform(0, 1)) * rng.uniform(0.75, 1.05))
    depth = np.stack(depth)
    order = np.argsort(-depth, axis=0)
    best = np.take_along_axis(depth, order[:1], 0)[0]
    second = np.take_along_axis(depth, order[1:2], 0)[0]
    colour = np.stack(tints)[order[0]]                  # (h, w, 3)
    colour *= (0.85 + 0.25 * np.clip(best, 0, 1))[..., None]
    septum = np.exp(-((best - second) / 0.07) ** 2) * (second > -0.1)
    colour = colour + (np.array([225.0, 175.0, 170.0]) - colour) * (0.6 * septum)[..., None]
    edge_px = 0.5 + 0.03 * r0
    alpha = np.clip(np.max(inside_px, axis=0) / edge_px + 0.5, 0.0, 1.0)
    return alpha, colour


def _hairs(rng, h, w, short):
    """Coverage (h, w) in 0..1 of a few curved dark hairs."""
    layer = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(layer)
    for _ in range(rng.integers(1, 13)):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        ang = rng.uniform(0, 2 * math.pi)
        step = short / 40.0
        points = [(x, y)]
        for _ in range(int(rng.uniform(0.2, 0.8) * short / step)):
            ang += rng.normal(0, 0.12)
            x, y = x + step * math.cos(ang), y + step * math.sin(ang)
            points.append((x, y))
        width = max(1, int(round(short / 256 * rng.uniform(0.8, 2.2))))
        draw.line(points, fill=int(rng.uniform(150, 255)), width=width, joint="curve")
    return np.asarray(layer, np.float32) / 255.0


def _ruler(rng, h, w, short):
    """Coverage (h, w) of ruler tick marks along one image edge."""
    layer = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(layer)
    side = int(rng.integers(4))
    length = w if side < 2 else h
    off = rng.uniform(0.02, 0.06) * short
    spacing = short * rng.uniform(0.025, 0.04)
    lw = max(1, int(round(short / 256)))
    tick = short * 0.03
    for i in range(int(length / spacing) + 1):
        t = i * spacing
        tl = tick * (2 if i % 5 == 0 else 1)
        if side == 0:
            seg = [(t, off), (t, off + tl)]
        elif side == 1:
            seg = [(t, h - off), (t, h - off - tl)]
        elif side == 2:
            seg = [(off, t), (off + tl, t)]
        else:
            seg = [(w - off, t), (w - off - tl, t)]
        draw.line(seg, fill=255, width=lw)
    return np.asarray(layer, np.float32) / 255.0


def render(rng, class_name, width=256, height=256):
    """One photo of a lesion of `class_name`: (PIL RGB image, PIL L mask with
    255 on the lesion, 0 elsewhere). Uses only `rng` for randomness."""
    if class_name not in CLASSES:
        raise ValueError(f"unknown class {class_name!r}; expected one of {CLASSES}")
    h, w = height, width
    short = min(h, w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    vignette = rng.random() < 0.25
    v_radius = rng.uniform(0.85, 1.1)                    # in half-diagonal units

    r0 = rng.uniform(MIN_SIZE, MAX_SIZE) * short / 2
    margin = 1.2 * r0 + 2
    for _ in range(50):                                  # keep lesion inside the field
        cx, cy = rng.uniform(margin, w - margin), rng.uniform(margin, h - margin)
        rv = math.hypot((cx - w / 2) / (w / 2), (cy - h / 2) / (h / 2))
        if not vignette or rv + 2 * margin / short < v_radius - 0.1:
            break
    else:
        cx, cy = w / 2, h / 2

    skin = _skin(rng, h, w, xx, yy)
    if class_name == "nevus":
        alpha, colour = _nevus(rng, xx, yy, cx, cy, r0)
    elif class_name == "melanoma":
        alpha, colour = _melanoma(rng, h, w, xx, yy, cx, cy, r0)
    else:
        alpha, colour = _vascular(rng, xx, yy, cx, cy, r0)
    mask = alpha > 0.5
    a = (alpha * rng.uniform(0.8, 1.0))[..., None]
    img = (skin * (1 - a) + colour * a) * _lighting(rng, h, w, xx, yy)[..., None]

    if rng.random() < 0.45:
        hair = _hairs(rng, h, w, short)[..., None]
        img = img * (1 - hair) + rng.uniform(20, 70) * hair
    if rng.random() < 0.2:
        ticks = _ruler(rng, h, w, short)[..., None]
        img = img * (1 - ticks) + rng.uniform(10, 50) * ticks
    if vignette:
        rr = np.hypot((xx - w / 2) / (w / 2), (yy - h / 2) / (h / 2))
        dark = np.clip((rr - v_radius) / rng.uniform(0.05, 0.2) + 0.5, 0, 1)
        img *= (1 - 0.95 * dark)[..., None]
    img += rng.normal(0, rng.uniform(1.0, 4.0), size=img.shape)
    photo = Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8), "RGB")
    photo = photo.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0) * short / 256))
    return photo, Image.fromarray(mask.astype(np.uint8) * 255, "L")


def generate(seed, count, width=256, height=256):
    """Yields (index, class_name, PIL RGB image, PIL L mask) for index in
    0..count-1; identical for identical arguments."""
    for index in range(count):
        name = class_of(seed, index)
        image, mask = render(np.random.default_rng([seed, index]), name, width, height)
        yield index, name, image, mask


def write(seed, count, out, width=256, height=256, fmt="png"):
    """Writes the images, masks and labels.csv to `out`; returns the rows."""
    os.makedirs(out, exist_ok=True)
    ext = "jpg" if fmt in ("jpg", "jpeg") else "png"
    rows = []
    for index, name, image, mask in generate(seed, count, width, height):
        stem = f"{index:04d}_{name}"
        if ext == "jpg":
            image.save(os.path.join(out, f"{stem}.jpg"), quality=92)
        else:
            image.save(os.path.join(out, f"{stem}.png"))
        mask.save(os.path.join(out, f"{stem}_mask.png"))
        rows.append((f"{stem}.{ext}", name, f"{stem}_mask.png"))
    with open(os.path.join(out, "labels.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "label", "mask"])
        writer.writerows(rows)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--format", choices=["png", "jpg"], default="png")
    args = parser.parse_args(argv)
    write(args.seed, args.count, args.out, args.width, args.height, args.format)


if __name__ == "__main__":
    main()
