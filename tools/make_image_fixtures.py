"""Writes the image-decoding and preprocessing fixtures for the C++ tests.

Expected values come from PIL and torch/torchvision, independently of the
library's code. Run with Debian's Python: /usr/bin/python3 tools/make_image_fixtures.py
"""
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageOps

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
IMAGES = OUT / "images"
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]

# The inverse of each EXIF orientation's correction: storing upright.transpose(STORE[k])
# with tag k must make a viewer show `upright` again.
STORE = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def write_floats(path, header, values):
    values = np.asarray(values, dtype=np.float64).ravel()
    with open(path, "w") as f:
        f.write(header + "\n")
        f.write(" ".join(f"{v:.7g}" for v in values) + "\n")


def test_photo(width, height, seed):
    """A smooth gradient plus noise, so both resize filters and noise matter."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255.0 / width, y * 255.0 / height, (x + y) * 127.0 / (width + height)], -1)
    pixels = np.clip(base + rng.normal(0, 40, base.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def torchvision_input(image, resize, size):
    """torchvision's float pipeline: ToTensor, Resize (antialiased bilinear), crop, Normalize."""
    t = TF.to_tensor(image)
    if resize == "stretch":
        t = TF.resize(t, [size[1], size[0]], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    else:
        t = TF.resize(t, resize, interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
        t = TF.center_crop(t, [size[1], size[0]])
    return TF.normalize(t, MEAN, STD)


def preprocessing_fixtures():
    photo = test_photo(37, 23, seed=1)
    photo.save(IMAGES / "photo_37x23.png")
    cases = [("shrink", "stretch", (16, 12)), ("enlarge", "stretch", (50, 40)),
             ("crop", 20, (16, 16)), ("crop_odd", 19, (16, 16))]
    for name, resize, size in cases:
        expected = torchvision_input(photo, resize, size)
        header = f"{size[0]} {size[1]} {resize if resize == 'stretch' else 'center_crop ' + str(resize)}"
        write_floats(OUT / f"preprocess_{name}.txt", header, expected.numpy())
    # PIL's uint8 resize, the way most training code feeds torchvision.
    pil = np.asarray(photo.resize((16, 12), Image.BILINEAR), dtype=np.float64).transpose(2, 0, 1)
    write_floats(OUT / "resize_pil_16x12.txt", "16 12", pil)


def orientation_fixtures():
    upright = test_photo(6, 4, seed=2)
    upright.save(IMAGES / "upright.png")
    for k, store in STORE.items():
        stored = upright if store is None else upright.transpose(store)
        exif = Image.Exif()
        exif[0x0112] = k
        stored.save(IMAGES / f"orientation_{k}.png", exif=exif.tobytes())
        shown = ImageOps.exif_transpose(Image.open(IMAGES / f"orientation_{k}.png")).convert("RGB")
        assert np.array_equal(np.asarray(shown), np.asarray(upright)), k
    # A phone-style JPEG (orientation 6) of a larger photo; JPEG is lossy, so
    # the expected picture is what PIL shows for the same file.
    big = test_photo(64, 48, seed=3).transpose(STORE[6])
    exif = Image.Exif()
    exif[0x0112] = 6
    big.save(IMAGES / "orientation_6.jpg", quality=95, exif=exif.tobytes())
    shown = ImageOps.exif_transpose(Image.open(IMAGES / "orientation_6.jpg")).convert("RGB")
    shown.save(IMAGES / "orientation_6_shown.png")


def pixel_layout_fixtures():
    photo = test_photo(9, 7, seed=4)
    photo.convert("L").save(IMAGES / "gray.png")
    la = photo.convert("LA")
    la.save(IMAGES / "gray_alpha.png")
    photo.convert("RGBA").save(IMAGES / "rgba.png")
    photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(IMAGES / "palette.png")
    photo.save(IMAGES / "rgb.bmp")
    photo.save(IMAGES / "rgb.jpg", quality=92)
    photo.save(IMAGES / "progressive.jpg", quality=92, progressive=True)
    for name in ["gray.png", "gray_alpha.png", "rgba.png", "palette.png", "rgb.bmp"]:
        Image.open(IMAGES / name).convert("RGB").save(IMAGES / f"expected_{Path(name).stem}_{Path(name).suffix[1:]}.png")
    # 16-bit grey: 8-bit value is the high byte.
    values = np.random.default_rng(5).integers(0, 65536, size=(5, 8), dtype=np.uint16)
    Image.fromarray(values, "I;16").save(IMAGES / "gray16.png")
    Image.fromarray((values >> 8).astype(np.uint8), "L").convert("RGB").save(IMAGES / "expected_gray16_png.png")


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def huge_declared_png():
    """A 100-byte PNG whose header declares 100000 x 100000 pixels."""
    header = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + \
        png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + png_chunk(b"IEND", b"")
    (IMAGES / "huge_declared.png").write_bytes(data)


def main():
    IMAGES.mkdir(parents=True, exist_ok=True)
    preprocessing_fixtures()
    orientation_fixtures()
    pixel_layout_fixtures()
    huge_declared_png()
    print(f"fixtures written to {OUT}")


if __name__ == "__main__":
    main()
