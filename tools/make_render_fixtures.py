"""Writes tests/fixtures/resize_heatmap.txt: PyTorch's bilinear resize, the
reference that dermal's resize_heatmap must match.

Run with the system Python, which has torch:
    /usr/bin/python3 tools/make_render_fixtures.py
"""
import pathlib

import torch
import torch.nn.functional as F

FIXTURE = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "resize_heatmap.txt"

# (input height, input width), (output height, output width)
CASES = [((3, 4), (7, 9)),   # upsampling, as a CAM is resized to its photo
         ((7, 9), (3, 4))]   # downsampling, plain bilinear sampling


def rows_text(matrix):
    """One line per row; 9 significant digits round-trip a float32."""
    return [" ".join(f"{value:.9g}" for value in row) for row in matrix.tolist()]


def main():
    generator = torch.Generator().manual_seed(2024)
    lines = [
        "# torch.nn.functional.interpolate(x, size, mode=\"bilinear\", align_corners=False)",
        f"# torch {torch.__version__}; written by tools/make_render_fixtures.py",
        "# Per case: \"in_height in_width out_height out_width\", the input rows, the output rows.",
    ]
    for (in_height, in_width), (out_height, out_width) in CASES:
        x = torch.rand(1, 1, in_height, in_width, generator=generator)
        y = F.interpolate(x, size=(out_height, out_width), mode="bilinear", align_corners=False)
        lines.append(f"{in_height} {in_width} {out_height} {out_width}")
        lines += rows_text(x[0, 0])
        lines += rows_text(y[0, 0])
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text("\n".join(lines) + "\n")
    print(f"wrote {FIXTURE}")


if __name__ == "__main__":
    main()
