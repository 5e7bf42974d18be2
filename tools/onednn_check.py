"""Checks oneDNN's float32 convolutions on this machine, as LibTorch runs them:
F.conv2d on five shapes (the EfficientNet-like ones where a fault was seen,
1x24x32x32 24->24 3x3 among them) against unfold and a float64 matrix
product. Prints one line naming the largest difference and the ISA cap in
force; exits 0 when every shape agrees within 1e-4 of its output's scale,
1 when one does not, 2 when there is no Python torch to check with. Used by
tools/onednn-cap.sh.
    /usr/bin/python3 tools/onednn_check.py
"""
import os
import sys

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    print("no Python torch here: oneDNN's convolutions not checked")
    sys.exit(2)

SHAPES = [  # (in channels, out channels, kernel, stride, input size)
    (24, 24, 3, 1, 32), (3, 24, 3, 2, 300), (48, 64, 3, 2, 75), (64, 128, 1, 1, 38), (128, 128, 3, 1, 19)]
TOLERANCE = 1e-4  # of 1 + the output's largest magnitude; correct kernels differ by <= 4e-5 here


def largest_relative_difference():
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    for cin, cout, k, stride, size in SHAPES:
        x = torch.randn(1, cin, size, size, generator=generator)
        w = torch.randn(cout, cin, k, k, generator=generator) * 0.1
        b = torch.randn(cout, generator=generator)
        with torch.no_grad():
            y = F.conv2d(x, w, b, stride=stride, padding=k // 2)
            columns = F.unfold(x.double(), k, padding=k // 2, stride=stride)
            expected = (w.double().view(cout, -1) @ columns).view(y.shape) + b.double().view(1, -1, 1, 1)
        difference = float((y.double() - expected).abs().max()) / (1.0 + float(expected.abs().max()))
        worst = max(worst, difference if difference == difference else float("inf"))  # NaN counts as wrong
    return worst


def main():
    torch.set_num_threads(1)
    cap = next((f"{v}={os.environ[v]}" for v in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA") if os.environ.get(v)),
               "no ISA cap")
    worst = largest_relative_difference()
    right = worst <= TOLERANCE
    print(f"oneDNN float32 convolutions ({cap}, torch {torch.__version__}) "
          f"{'agree' if right else 'are WRONG'}: largest difference {worst:.2g} of the output's scale "
          f"(tolerance {TOLERANCE:g})")
    return 0 if right else 1


if __name__ == "__main__":
    sys.exit(main())
