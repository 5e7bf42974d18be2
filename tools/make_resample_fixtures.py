"""Writes generated photos and what Pillow makes of them, for the C++ test
that dermal resizes byte for byte as PIL does.

  /usr/bin/python3 tools/make_resample_fixtures.py OUT_DIR

For each of PHOTOS generated photos of odd sizes (random RGB, smooth
gradients, hard-edged blocks; 1x1 to 1023x767) and each of the three resize
policies, one output size is drawn (shrinking and enlarging alike); each of
the six filters then resizes the photo as an app would:
  stretch      image.resize((width, height), filter)
  center_crop  torchvision Resize(shorter, filter) then CenterCrop((height, width))
  fit          PIL.ImageOps.fit(image, (width, height), filter)
OUT_DIR gets photos.bin (the photos' RGB bytes, one after another),
expected.bin (the outputs' RGB bytes) and cases.txt, which describes both.
"""
import sys
from pathlib import Path

import numpy as np
import torchvision.transforms as T
from PIL import Image, ImageOps

PHOTOS = 200
FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
TORCHVISION = {
    "nearest": T.InterpolationMode.NEAREST,
    "bilinear": T.InterpolationMode.BILINEAR,
    "bicubic": T.InterpolationMode.BICUBIC,
    "lanczos": T.InterpolationMode.LANCZOS,
    "box": T.InterpolationMode.BOX,
    "hamming": T.InterpolationMode.HAMMING,
}
# Sizes every run includes; the rest are drawn.
FIXED_SIZES = [(1, 1), (1, 7), (9, 1), (2, 2), (3, 517), (517, 3), (641, 479), (1023, 767), (767, 1023), (300, 300)]


def photo(random, width, height, kind):
    if kind == "noise":
        return random.integers(0, 256, (height, width, 3), dtype=np.uint8)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    if kind == "gradient":
        phase = random.uniform(0, 2 * np.pi, 3)
        period = random.uniform(3, 60, 3)
        channels = [127.5 + 127.5 * np.sin((x * np.cos(p) + y * np.sin(p)) / q + p) for p, q in zip(phase, period)]
        return np.clip(np.rint(np.stack(channels, axis=-1)), 0, 255).astype(np.uint8)
    block = int(random.integers(1, 9))  # hard edges: blocks of random colours
    colours = random.integers(0, 256, ((height + block - 1) // block, (width + block - 1) // block, 3), dtype=np.uint8)
    return np.repeat(np.repeat(colours, block, axis=0), block, axis=1)[:height, :width]


def drawn_size(random, side):
    """An output side from side/6 to 3*side (log-uniform), 1 to 160."""
    return int(np.clip(round(side * np.exp(random.uniform(np.log(1 / 6), np.log(3)))), 1, 160))


def main(out):
    out.mkdir(parents=True, exist_ok=True)
    random = np.random.default_rng(20261129)
    lines = [f"photos {PHOTOS}"]
    photos, expected = [], []
    photo_offset = expected_offset = 0
    for index in range(PHOTOS):
        if index < len(FIXED_SIZES):
            width, height = FIXED_SIZES[index]
        else:
            width, height = (int(v) for v in random.integers(1, 260, 2))
        pixels = photo(random, width, height, ["noise", "gradient", "blocks"][index % 3])
        photos.append(pixels.tobytes())
        lines.append(f"photo {index} {width} {height} {photo_offset}")
        photo_offset += pixels.nbytes
        image = Image.fromarray(pixels, "RGB")
        for mode in ("stretch", "center_crop", "fit"):
            out_width, out_height = drawn_size(random, width), drawn_size(random, height)
            shorter = 0
            if mode == "center_crop":
                # The shorter side's new length: no less than the crop, and
                # small enough that the longer side stays within 4096.
                limit = max(1, 4096 * min(width, height) // max(width, height))
                out_width, out_height = min(out_width, limit), min(out_height, limit)
                shorter = int(random.integers(max(out_width, out_height), limit + 1))
            for name, resample in FILTERS.items():
                if mode == "stretch":
                    result = image.resize((out_width, out_height), resample)
                elif mode == "center_crop":
                    resized = T.Resize(shorter, interpolation=TORCHVISION[name])(image)
                    result = T.CenterCrop((out_height, out_width))(resized)
                else:
                    result = ImageOps.fit(image, (out_width, out_height), resample)
                data = np.asarray(result, dtype=np.uint8)
                assert data.shape == (out_height, out_width, 3), (mode, name, data.shape)
                expected.append(data.tobytes())
                lines.append(f"case {index} {mode} {name} {out_width} {out_height} {shorter} {expected_offset}")
                expected_offset += data.nbytes
    (out / "photos.bin").write_bytes(b"".join(photos))
    (out / "expected.bin").write_bytes(b"".join(expected))
    (out / "cases.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
