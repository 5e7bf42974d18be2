"""Writes tests/fixtures/cam_cases.txt: reference CAMs for tests/test_cam.cpp.

Run with /usr/bin/python3 from anywhere. Each CAM variant is written here
straight from its paper's formula, in float64 from float32 inputs, without
using any of dermal's C++. The post-processing and the flatness rule are
those documented in src/heatmap/cam.hpp.

File format (whitespace-separated, one record a line, '#' lines are comments):
    case <name> <K> <H> <W>
    A <K*H*W floats, index (k, i, j) row-major>
    G <K*H*W floats>
    expect <method> <flat 0|1> <H*W floats, row-major>   (one line per method; an
        eigen method is left out of a case without an eigenvalue gap)
    end
and, for the score Finer-CAM explains (src/heatmap/cam.hpp, explained_score):
    score <name> <class> <N>
    logits <N floats>
    expect <value> <N floats: d value / d logits>
    end
"""
import math
import pathlib

import torch

XGRADCAM_EPS = 1e-7       # kXGradCamEpsilon
FEM_SIGMAS = 2.0          # kFemSigmas
FINER_COMPARISONS = 3     # kFinerComparisons
FINER_EPS = 1e-9          # kFinerEpsilon
FLAT_RELATIVE_EPS = 1e-6  # kFlatRelativeEpsilon
FLT_MIN = 1.1754943508222875e-38

METHODS = ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam",
           "gradcamelementwise", "eigengradcam", "finercam", "fem", "kpcacam"]
OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "cam_cases.txt"


def grad_cam(A, G):
    """Selvaraju et al.: w_k = mean_ij G_kij; map = sum_k w_k A_k."""
    K = A.shape[0]
    w = [G[k].mean() for k in range(K)]
    return sum(w[k] * A[k] for k in range(K))


def grad_cam_pp(A, G):
    """Chattopadhay et al., closed form with exp score:
    alpha = G^2 / (2 G^2 + sum_ij(A_k) G^3), 0 where the denominator is 0;
    w_k = sum_ij alpha * relu(G); map = sum_k w_k A_k."""
    K = A.shape[0]
    w = []
    for k in range(K):
        g2, g3 = G[k] ** 2, G[k] ** 3
        denom = 2 * g2 + A[k].sum() * g3
        alpha = torch.where(denom != 0, g2 / denom, torch.zeros_like(g2))
        w.append((alpha * torch.relu(G[k])).sum())
    return sum(w[k] * A[k] for k in range(K))


def xgrad_cam(A, G):
    """Fu et al.: w_k = sum_ij(A G) / (sum_ij A + eps); map = sum_k w_k A_k."""
    K = A.shape[0]
    w = [(A[k] * G[k]).sum() / (A[k].sum() + XGRADCAM_EPS) for k in range(K)]
    return sum(w[k] * A[k] for k in range(K))


def hires_cam(A, G):
    """Draelos & Carin: map = sum_k G_k * A_k (elementwise)."""
    return sum(G[k] * A[k] for k in range(A.shape[0]))


def layer_cam(A, G):
    """Jiang et al.: map = sum_k relu(G_k) * A_k."""
    return sum(torch.relu(G[k]) * A[k] for k in range(A.shape[0]))


def eigen_cam(A, G):
    """Muhammad & Yeasin: (H*W)xK, centred per channel, projected on the first
    right-singular vector. Sign: positive agreement with S - mean(S), S = sum_k A_k;
    on an exact tie, the largest-magnitude entry (first in row-major) positive."""
    K, H, W = A.shape
    if not torch.isfinite(A).all():
        return torch.full((H, W), math.nan, dtype=A.dtype)
    X = A.reshape(K, H * W).T
    X = X - X.mean(dim=0, keepdim=True)
    _, S_vals, Vh = torch.linalg.svd(X, full_matrices=False)
    p = X @ Vh[0]
    S = A.sum(dim=0).reshape(H * W)
    agreement = float((p * (S - S.mean())).sum())
    if agreement != 0:
        flip = agreement < 0
    else:
        flip = float(p[int(p.abs().argmax())]) < 0
    if flip:
        p = -p
    return p.reshape(H, W)


def grad_cam_elementwise(A, G):
    """pytorch-grad-cam's GradCAMElementWise: map = sum_k relu(G_k * A_k)."""
    return sum(torch.relu(G[k] * A[k]) for k in range(A.shape[0]))


def eigen_grad_cam(A, G):
    """pytorch-grad-cam's EigenGradCAM: EigenCAM of the elementwise product G * A
    (its sign rule taken against S = sum_k G_k A_k)."""
    return eigen_cam(G * A, None)


def fem(A, G):
    """Fuad et al. (FEM): w_k = fraction of positions where A_k > mean(A_k) + 2 std(A_k)
    (population std over positions); map = sum_k w_k A_k."""
    K = A.shape[0]
    w = []
    for k in range(K):
        mean = A[k].mean()
        std = ((A[k] - mean) ** 2).mean().sqrt()
        w.append((A[k] > mean + FEM_SIGMAS * std).to(A.dtype).mean())
    return sum(w[k] * A[k] for k in range(K))


def kpca_cam(A, G):
    """Karmani et al. (KPCA-CAM): kernel PCA, one component, of the (H*W)xK positions
    centred per channel, with scikit-learn's default sigmoid kernel
    k(x, y) = tanh(x.y / K + 1); the doubly centred kernel's leading eigenvector
    times sqrt(eigenvalue), its largest-magnitude entry positive (scikit-learn's
    svd_flip); all zeros when that eigenvalue is <= 1e-9 * (H*W). Always in float64."""
    K, H, W = A.shape
    if not torch.isfinite(A).all():
        return torch.full((H, W), math.nan, dtype=A.dtype)
    X = A.double().reshape(K, H * W).T
    X = X - X.mean(dim=0, keepdim=True)
    n = H * W
    kernel = torch.empty(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            kernel[i, j] = math.tanh(float(X[i] @ X[j]) / K + 1.0)
    one = torch.full((n, n), 1.0 / n, dtype=torch.float64)
    centred = kernel - one @ kernel - kernel @ one + one @ kernel @ one
    values, vectors = torch.linalg.eigh(centred)
    lam = float(values[-1])
    if not lam > 1e-9 * n:
        return torch.zeros(H, W, dtype=A.dtype)
    v = vectors[:, -1]
    if float(v[int(v.abs().argmax())]) < 0:
        v = -v
    return (v * math.sqrt(lam)).reshape(H, W).to(A.dtype)


def finer_score(logits, c):
    """Zhang et al. (Finer-CAM) as pytorch-grad-cam's FinerWeightedTarget with
    alpha = 1: sum_j p_j (y_c - y_j) / (sum_j p_j + 1e-9) over the 3 classes j != c
    with the nearest logits (ties: lower index), p = softmax(y)."""
    distance = [abs(float(logits[j]) - float(logits[c])) for j in range(len(logits))]
    others = sorted((j for j in range(len(logits)) if j != c), key=lambda j: (distance[j], j))[:FINER_COMPARISONS]
    if not others:
        return logits[c] * 0.0  # nothing to compare with: 0, with a zero gradient
    p = torch.softmax(logits, 0)
    numerator = sum((p[j] * (logits[c] - logits[j]) for j in others), torch.zeros((), dtype=logits.dtype))
    denominator = sum((p[j] for j in others), torch.zeros((), dtype=logits.dtype))
    return numerator / (denominator + FINER_EPS)


CAMS = {"gradcam": grad_cam, "gradcam++": grad_cam_pp, "xgradcam": xgrad_cam,
        "hirescam": hires_cam, "layercam": layer_cam, "eigencam": eigen_cam,
        "gradcamelementwise": grad_cam_elementwise, "eigengradcam": eigen_grad_cam,
        "finercam": grad_cam,  # Grad-CAM's weighting; its gradient is that of finer_score
        "fem": fem, "kpcacam": kpca_cam}


def smooth_terms(method, A, G):
    """The per-channel terms T_k whose sum is the method's map (None for methods
    that are not such a sum, or that ignore eigen_smooth in pytorch-grad-cam)."""
    if method in ("gradcam", "finercam"):
        w = G.mean(dim=(1, 2))
    elif method == "gradcam++":
        g2, g3 = G ** 2, G ** 3
        denom = 2 * g2 + A.sum(dim=(1, 2), keepdim=True) * g3
        w = (torch.where(denom != 0, g2 / denom, torch.zeros_like(g2)) * torch.relu(G)).sum(dim=(1, 2))
    elif method == "xgradcam":
        w = (A * G).sum(dim=(1, 2)) / (A.sum(dim=(1, 2)) + XGRADCAM_EPS)
    elif method == "hirescam":
        return G * A
    elif method == "layercam":
        return torch.relu(G) * A
    elif method == "gradcamelementwise":
        return torch.relu(G * A)
    else:
        return None
    return w[:, None, None] * A


def eigen_smoothed(method):
    """eigen_smooth: EigenCAM of the method's terms (its sign rule against their sum)."""
    return lambda A, G: eigen_cam(smooth_terms(method, A, G), None)


def normalize(m):
    """ReLU, min-max to [0, 1]; (zeros, True) when flat or not finite."""
    if not torch.isfinite(m).all():
        return torch.zeros_like(m), True
    m = torch.relu(m)
    hi, lo = float(m.max()), float(m.min())
    rng = hi - lo
    if not rng > FLAT_RELATIVE_EPS * hi or rng < FLT_MIN:
        return torch.zeros_like(m), True
    return (m - lo) / rng, False


def eigen_gap(method, A, G):
    """False when an eigen method's leading singular value is within 10 % of the
    next one (its map then hangs on rounding): such a case is left out for it."""
    if method not in ("eigencam", "eigengradcam") or not torch.isfinite(A * G).all():
        return True
    P = A if method == "eigencam" else A * G
    K, H, W = P.shape
    X = P.reshape(K, H * W).T
    s = torch.linalg.svdvals(X - X.mean(dim=0, keepdim=True))
    return bool(len(s) < 2 or s[1] == 0 or s[0] / s[1] > 1.1)


def check_well_conditioned(name, method, A, G, m64, flat):
    """The float32 C++ is compared within 1e-5: refuse cases whose answer moves
    more than 2e-6 between float32 and float64 or sits near the flat threshold."""
    m32, flat32 = normalize(CAMS[method](A.float(), G.float()).double())
    assert flat32 == flat, (name, method, "flatness differs in float32")
    if not flat:
        diff = float((m32 - m64).abs().max())
        assert diff < 2e-6, (name, method, diff)
    raw = torch.relu(CAMS[method](A, G))
    if torch.isfinite(raw).all() and float(raw.max()) > 0:
        ratio = float(raw.max() - raw.min()) / float(raw.max())
        assert ratio == 0 or ratio > 10 * FLAT_RELATIVE_EPS, (name, method, ratio)


def cases():
    gen = torch.Generator().manual_seed(20240611)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float32)

    A = torch.relu(randn(8, 5, 7))  # post-ReLU features, about half zero
    yield "relu_features", A, randn(8, 5, 7)
    # Strictly positive features sharing a spatial blob, as a lesion would give.
    ii, jj = torch.meshgrid(torch.arange(4.0), torch.arange(6.0), indexing="ij")
    blob = torch.exp(-((ii - 1.2) ** 2 + (jj - 3.6) ** 2) / 3)
    loadings = torch.rand(16, 1, 1, generator=gen) * 2
    yield "positive_features", torch.exp(0.5 * randn(16, 4, 6)) + loadings * blob, randn(16, 4, 6)
    yield "silu_features", torch.nn.functional.silu(randn(8, 5, 7)), 0.1 * randn(8, 5, 7)
    yield "constant_activation", torch.full((8, 5, 7), 0.5), randn(8, 5, 7)
    yield "negative_gradient", torch.relu(randn(8, 5, 7)) + 0.01, -randn(8, 5, 7).abs()
    A_nan = A.clone()
    A_nan[3, 2, 4] = math.nan
    yield "nan_activation", A_nan, randn(8, 5, 7)
    G_inf = randn(8, 5, 7)
    G_inf[1, 0, 0] = math.inf
    yield "inf_gradient", torch.relu(randn(8, 5, 7)) + 0.01, G_inf
    # Channel sum constant (exact in binary), so EigenCAM's sign falls to the tie rule.
    x = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 12, 16], dtype=torch.float32) / 8
    x = x[torch.randperm(12, generator=gen)].reshape(3, 4)
    yield "eigencam_sign_tie", torch.stack([x, 2 - x]), randn(2, 3, 4)
    # The gradient shares the blob too, so G * A has a leading component (EigenGrad-CAM).
    yield "lesion_gradient", torch.exp(0.5 * randn(16, 4, 6)) + loadings * blob, \
        0.2 * randn(16, 4, 6) + (loadings - 1) * blob


def score_cases():
    gen = torch.Generator().manual_seed(20261206)
    yield "seven_classes", 2, 2 * torch.randn(7, generator=gen)
    yield "seven_classes_top", 5, 2 * torch.randn(7, generator=gen)
    # Classes 1 and 3 equally far from class 2: the lower index is compared first.
    yield "tied_distances", 2, torch.tensor([0.0, 1.0, 1.5, 2.0, -3.0])
    yield "three_classes", 0, torch.tensor([0.5, -1.0, 2.0])
    yield "one_class", 0, torch.tensor([1.25])


def fmt(t, spec):
    return " ".join(spec % v for v in t.flatten().tolist())


def main():
    lines = [f"# Generated by tools/make_cam_fixtures.py; do not edit."]
    for name, A32, G32 in cases():
        K, H, W = A32.shape
        A, G = A32.double(), G32.double()
        lines.append(f"case {name} {K} {H} {W}")
        lines.append("A " + fmt(A32, "%.9g"))
        lines.append("G " + fmt(G32, "%.9g"))
        for method in METHODS:
            if not eigen_gap(method, A, G):
                assert method != "eigencam", (name, "eigenvalue gap")
                continue
            m, flat = normalize(CAMS[method](A, G))
            check_well_conditioned(name, method, A, G, m, flat)
            lines.append(f"expect {method} {int(flat)} " + fmt(m, "%.10g"))
        for method in METHODS:
            if smooth_terms(method, A, G) is None:
                continue
            name = method + "+eigen_smooth"
            CAMS[name] = eigen_smoothed(method)
            if not eigen_gap("eigengradcam", smooth_terms(method, A, G), torch.ones_like(A)):
                continue
            m, flat = normalize(CAMS[name](A, G))
            check_well_conditioned(name, name, A, G, m, flat)
            lines.append(f"expect {name} {int(flat)} " + fmt(m, "%.10g"))
        lines.append("end")
    for name, c, logits32 in score_cases():
        logits = logits32.double().requires_grad_(True)
        value = finer_score(logits, c)
        gradient, = torch.autograd.grad(value, logits)
        lines.append(f"score {name} {c} {len(logits32)}")
        lines.append("logits " + fmt(logits32, "%.9g"))
        lines.append(f"expect {float(value):.12g} " + fmt(gradient, "%.12g"))
        lines.append("end")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
