"""Writes the bad-input image corpus for the C++ tests: what strangers upload.

Each file is made with PIL or by hand, byte by byte, into
tests/fixtures/bad_inputs/, and expected.txt lists, one per line,
`file status [WIDTHxHEIGHT]`: the dermal status name decode_image must
answer with, and for a valid picture the size it must decode to.

  /usr/bin/python3 tools/make_bad_inputs.py
"""
import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "bad_inputs"


def photo(width, height, seed=0):
    """A smooth gradient plus noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255.0 / max(width, 1), y * 255.0 / max(height, 1), np.full(x.shape, 90.0)], -1)
    return Image.fromarray(np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype(np.uint8), "RGB")


def encoded(image, fmt, **options):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width, height, rows, bit_depth=8, colour_type=2, interlace=0, idat=None):
    """A PNG from already filtered scanline bytes (or a given IDAT payload)."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, interlace)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) +
            png_chunk(b"IDAT", idat if idat is not None else zlib.compress(rows)) + png_chunk(b"IEND", b""))


def rgb16_png():
    """A valid 16-bit-per-channel RGB PNG (PIL cannot write one)."""
    values = np.random.default_rng(3).integers(0, 65536, size=(3, 4, 3), dtype=np.uint16)
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in values)
    return png(4, 3, rows, bit_depth=16)


def interlaced_png(width=11, height=9):
    """A valid Adam7-interlaced RGB PNG: each pass's pixels, rows filtered with type 0."""
    pixels = np.asarray(photo(width, height, seed=4))
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    data = b""
    for x0, y0, dx, dy in passes:
        part = pixels[y0::dy, x0::dx]
        if part.size:
            data += b"".join(b"\x00" + row.tobytes() for row in part)
    return png(width, height, data, interlace=1)


def bad_zlib_png():
    """Valid chunks and CRCs, but IDAT's deflate stream is corrupt."""
    stream = bytearray(zlib.compress(b"\x00" * 4 * 13))
    stream[2] = 0xFF  # an invalid deflate block type right after the zlib header
    stream[3:7] = b"\xde\xad\xbe\xef"
    return png(4, 4, b"", idat=bytes(stream))


def replace_sof(jpeg, new_marker=None, body=None):
    """A JPEG with its baseline frame header (SOF0) changed: another marker, or another body."""
    at = jpeg.index(b"\xff\xc0")
    length = struct.unpack(">H", jpeg[at + 2:at + 4])[0]
    marker = jpeg[at:at + 2] if new_marker is None else bytes([0xFF, new_marker])
    if body is None:
        return jpeg[:at] + marker + jpeg[at + 2:]
    return jpeg[:at] + marker + struct.pack(">H", len(body) + 2) + body + jpeg[at + 2 + length:]


def with_segment(jpeg, marker, payload):
    """Inserts a marker segment right after SOI."""
    return jpeg[:2] + bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def tiff_ifd(entries, big_endian=True, count=None):
    """A TIFF-structured EXIF block with one IFD of (tag, type, count, value) entries."""
    order = ">" if big_endian else "<"
    head = (b"MM" if big_endian else b"II") + struct.pack(order + "HI", 42, 8)
    body = struct.pack(order + "H", len(entries) if count is None else count)
    for tag, kind, number, value in entries:
        body += struct.pack(order + "HHI", tag, kind, number) + struct.pack(order + "I", value)
    return head + body + struct.pack(order + "I", 0)


def bmp(width, height, compression=0, pixel_bytes=b""):
    """A BITMAPINFOHEADER BMP, 24 bits per pixel, with the given pixel bytes."""
    header = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, compression, len(pixel_bytes), 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + len(pixel_bytes), 0, 0, 54) + header + pixel_bytes


def os2_bmp(width, height, pixel_bytes=b""):
    """An OS/2 1.x BMP (12-byte header, 16-bit sizes), 24 bits per pixel."""
    header = struct.pack("<IHHHH", 12, width, height, 1, 24)
    return b"BM" + struct.pack("<IHHI", 14 + 12 + len(pixel_bytes), 0, 0, 26) + header + pixel_bytes


def cases():
    """(file name, bytes, expected status, decoded size or None)."""
    jpeg = encoded(photo(24, 16), "JPEG", quality=90)
    png_rgb = encoded(photo(24, 16), "PNG")
    sof = jpeg.index(b"\xff\xc0") + 4  # the frame header's body
    sof_body = jpeg[sof:sof + struct.unpack(">H", jpeg[sof - 2:sof])[0] - 2]
    return [
        # Not images at all.
        ("empty.jpg", b"", "invalid_image", None),
        ("plain_text.jpg", b"Dear doctor, please have a look at the mole on my arm.\n", "invalid_image", None),
        ("wrong_magic.jpg", b"\x00\x00" + jpeg[2:], "invalid_image", None),
        ("html_error_page.png", b"<!DOCTYPE html><html><body>404 Not Found</body></html>", "invalid_image", None),
        # Cut short.
        ("truncated_jpeg_at_20.jpg", jpeg[:20], "invalid_image", None),
        ("truncated_jpeg_in_scan.jpg", jpeg[:len(jpeg) // 2], "invalid_image", None),
        ("truncated_jpeg_no_eoi.jpg", jpeg[:-2], "invalid_image", None),
        ("truncated_png_at_12.png", png_rgb[:12], "invalid_image", None),
        ("truncated_png_in_idat.png", png_rgb[:len(png_rgb) // 2], "invalid_image", None),
        ("truncated_png_no_iend.png", png_rgb[:-12], "invalid_image", None),
        ("truncated_bmp_rows.bmp", encoded(photo(8, 8), "BMP")[:-40], "invalid_image", None),
        ("truncated_os2.bmp", os2_bmp(64, 64, b"\x80" * 90), "invalid_image", None),
        # Sizes: empty, tiny (valid), declared far too large.
        ("zero_by_zero.png", png(0, 0, b""), "invalid_image", None),
        ("zero_height.jpg", replace_sof(jpeg, body=sof_body[:1] + b"\x00\x00" + sof_body[3:]), "invalid_image", None),
        ("zero_by_zero.bmp", bmp(0, 0), "invalid_image", None),
        ("one_pixel.png", encoded(photo(1, 1), "PNG"), "ok", (1, 1)),
        ("one_pixel.jpg", encoded(photo(1, 1), "JPEG"), "ok", (1, 1)),
        ("one_pixel.bmp", encoded(photo(1, 1), "BMP"), "ok", (1, 1)),
        ("huge_declared.png", png(100000, 100000, b"\x00" * 64), "image_too_large", None),
        ("width_2_to_32_minus_1.png", png(0xFFFFFFFF, 1, b"\x00" * 64), "image_too_large", None),
        ("huge_declared.jpg", replace_sof(jpeg, body=sof_body[:1] + b"\xff\xff\xff\xff" + sof_body[5:]),
         "image_too_large", None),
        ("huge_declared_os2.bmp", os2_bmp(65535, 65535), "invalid_image", None),
        ("huge_declared_rows_missing.bmp", bmp(30000, 30000, pixel_bytes=b"\x00" * 64), "invalid_image", None),
        # Valid flavours that must decode.
        ("rgb16.png", rgb16_png(), "ok", (4, 3)),
        ("gray16.png", encoded(Image.fromarray(np.arange(35, dtype=np.uint16).reshape(5, 7) * 1800, "I;16"), "PNG"),
         "ok", (7, 5)),
        ("progressive.jpg", encoded(photo(19, 13), "JPEG", quality=85, progressive=True), "ok", (19, 13)),
        ("interlaced.png", interlaced_png(), "ok", (11, 9)),
        ("grayscale.jpg", encoded(photo(10, 6).convert("L"), "JPEG"), "ok", (10, 6)),
        ("exif_corrupt.jpg", with_segment(jpeg, 0xE1, b"Exif\x00\x00MM\x00\x2a\xff\xff\xff\xf0garbage"), "ok", (24, 16)),
        ("exif_ifd_count_past_end.jpg",
         with_segment(jpeg, 0xE1, b"Exif\x00\x00" + tiff_ifd([(0x010F, 2, 4, 0)], count=65535)[:-4]),
         "ok", (24, 16)),
        ("exif_orientation_99.jpg", with_segment(jpeg, 0xE1, b"Exif\x00\x00" + tiff_ifd([(0x0112, 3, 1, 99 << 16)])),
         "ok", (24, 16)),
        ("exif_oversized.jpg",
         with_segment(jpeg, 0xE1, b"Exif\x00\x00" + tiff_ifd([(0x010E, 2, 65000, 26)] * 4) + b"\xab" * 65400),
         "ok", (24, 16)),
        ("exif_wrong_type.png", encoded(photo(5, 3), "PNG", exif=tiff_ifd([(0x0112, 4, 1, 6)], big_endian=False)),
         "ok", (5, 3)),
        # JPEG flavours and corruptions.
        ("cmyk.jpg", encoded(photo(12, 8).convert("CMYK"), "JPEG"), "unsupported_image", None),
        ("arithmetic.jpg", replace_sof(jpeg, 0xC9), "unsupported_image", None),
        ("lossless.jpg", replace_sof(jpeg, 0xC3), "unsupported_image", None),
        ("bogus_sof_too_short.jpg", replace_sof(jpeg, body=sof_body[:4]), "invalid_image", None),
        ("bogus_sof_no_components.jpg", replace_sof(jpeg, body=sof_body[:5] + b"\x00"), "invalid_image", None),
        ("bogus_sof_12_bit.jpg", replace_sof(jpeg, body=b"\x0c" + sof_body[1:]), "invalid_image", None),
        ("no_frame_header.jpg", jpeg[:sof - 4] + jpeg[sof - 2 + len(sof_body) + 2:], "invalid_image", None),
        # A small first frame header in front of a huge one: the size checked must be the size decoded.
        ("two_frame_headers.jpg",
         with_segment(jpeg, 0xC0, sof_body[:1] + struct.pack(">HH", 2, 2) + sof_body[5:]),
         "invalid_image", None),
        ("bad_huffman_table.jpg", with_segment(jpeg, 0xC4, b"\x00" + b"\xff" * 16 + b"\x00" * 300), "invalid_image", None),
        # PNG corruptions.
        ("bad_zlib_stream.png", bad_zlib_png(), "invalid_image", None),
        ("no_ihdr.png", b"\x89PNG\r\n\x1a\n" + png_chunk(b"IEND", b"") + b"\x00" * 20, "invalid_image", None),
        ("bad_colour_type.png", png(4, 4, b"\x00" * 52, colour_type=5), "invalid_image", None),
        # Formats dermal does not decode.
        ("animation.gif", encoded(photo(8, 8), "GIF"), "unsupported_image", None),
        ("photo.webp", encoded(photo(8, 8), "WEBP"), "unsupported_image", None),
        ("photo.tiff", encoded(photo(8, 8), "TIFF"), "unsupported_image", None),
        ("unknown_compression.bmp", bmp(8, 8, compression=0x8A32FA4D, pixel_bytes=b"\x00" * 200), "invalid_image", None),
        ("rle_compressed.bmp", bmp(8, 8, compression=1, pixel_bytes=b"\x00\x01"), "unsupported_image", None),
        ("photo.heic", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 32, "unsupported_image", None),
    ]


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.iterdir():
        old.unlink()
    lines = []
    for name, data, status, size in cases():
        (OUT / name).write_bytes(data)
        lines.append(f"{name} {status}" + (f" {size[0]}x{size[1]}" if size else ""))
    (OUT / "expected.txt").write_text("\n".join(lines) + "\n")
    total = sum(f.stat().st_size for f in OUT.iterdir())
    assert total < 300_000, total
    print(f"{len(lines)} bad inputs ({total} bytes) written to {OUT}")


if __name__ == "__main__":
    main()
