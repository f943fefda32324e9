"""Geometry metrics: the invariants that must hold, and every formula against a direct numpy version."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis import activations, correlate, spectral
from methods import registry
from tests.helpers import build_tiny_model

RNG = np.random.default_rng(0)


def random_orthogonal(n: int, scale: float = 0.3) -> torch.Tensor:
    a = torch.tensor(RNG.normal(size=(n, n)) * scale)
    q = a - a.T
    eye = torch.eye(n, dtype=q.dtype)
    return torch.linalg.solve(eye + q, eye - q).float()  # exact Cayley: orthogonal


def test_oft_update_keeps_singular_values_and_retention_is_s_times_one_minus_cos():
    w0 = torch.tensor(RNG.normal(size=(16, 12))).float()
    rotation = random_orthogonal(12)
    svd = spectral.base_svd(w0)
    finetuned = w0 @ rotation  # OFT rotates the input space
    torch.testing.assert_close(torch.linalg.svdvals(finetuned), svd.s, atol=1e-4, rtol=1e-4)
    cos = torch.einsum("ki,ij,kj->k", svd.vh, rotation, svd.vh)  # v_i^T R v_i
    expected = svd.s * (1 - cos)
    retention, _ = spectral.profiles(svd, finetuned - w0)
    torch.testing.assert_close(retention, expected.abs(), atol=1e-4, rtol=1e-4)


def test_lora_rank_r_update_has_stable_rank_at_most_r():
    for r in (1, 2, 4):
        delta = torch.tensor(RNG.normal(size=(20, r)) @ RNG.normal(size=(r, 14))).float()
        assert spectral.stable_rank(delta) <= r + 1e-6


@pytest.mark.parametrize("spectrum", ["flat", "decaying", "rank 3"])
@pytest.mark.parametrize("shape", [(120, 80), (80, 120)])
def test_top_singular_values_and_stable_rank_match_a_full_svd(spectrum, shape):
    """Randomized where its residuals vouch for it (low rank, decaying), exact otherwise (flat): either way
    within 1e-3 of numpy's full SVD."""
    m, n = shape
    if spectrum == "flat":
        delta = RNG.normal(size=shape)
    elif spectrum == "decaying":
        delta = RNG.normal(size=(m, 40)) @ np.diag(np.logspace(0, -3, 40)) @ RNG.normal(size=(40, n))
    else:
        delta = RNG.normal(size=(m, 3)) @ RNG.normal(size=(3, n))
    expected = np.linalg.svd(delta, compute_uv=False)
    delta = torch.tensor(delta).float()
    got = spectral.top_singular_values(delta, 8)
    np.testing.assert_allclose(got.numpy(), expected[:8], rtol=1e-3, atol=1e-3 * expected[0])
    assert spectral.stable_rank(delta) == pytest.approx(float((expected ** 2).sum() / expected[0] ** 2), rel=2e-3)


def test_adaptation_profile_and_fluctuation_match_numpy():
    w0 = RNG.normal(size=(10, 8))
    delta = RNG.normal(size=(10, 8)) * 0.1
    svd = spectral.base_svd(torch.tensor(w0))
    _, _, vh = np.linalg.svd(w0, full_matrices=False)
    expected = np.linalg.norm(delta @ vh.T, axis=0)
    np.testing.assert_allclose(spectral.profiles(svd, torch.tensor(delta))[1].numpy(), expected, rtol=1e-5)
    p = RNG.normal(size=12)
    padded = np.pad(p, 2, mode="reflect")
    ma = np.convolve(padded, np.ones(5) / 5, mode="valid")
    assert spectral.fluctuation(torch.tensor(p)) == pytest.approx(np.abs(p - ma).mean(), rel=1e-6)


def test_intruder_dimensions_appear_only_for_new_directions():
    w0 = torch.tensor(RNG.normal(size=(12, 12))).float()
    svd = spectral.base_svd(w0)
    assert spectral.intruder_dimensions(svd, w0, top_k=5) == 0
    outsider = torch.tensor(RNG.normal(size=12)).float()
    outsider -= svd.u[:, :6] @ (svd.u[:, :6].T @ outsider)  # orthogonal to the strongest directions
    spike = 50 * torch.outer(outsider / outsider.norm(), torch.tensor(RNG.normal(size=12)).float())
    assert spectral.intruder_dimensions(svd, w0 + spike, top_k=5, eps=0.9) >= 1


def test_cka_and_procrustes_are_invariant_to_rotations_and_pca_distance_sees_them():
    x0 = torch.tensor(RNG.normal(size=(50, 8)))
    rotation = random_orthogonal(8).double()
    rotated = x0 @ rotation
    assert activations.procrustes_residual(x0, rotated) == pytest.approx(0.0, abs=1e-6)
    assert activations.linear_cka(x0, rotated) == pytest.approx(1.0, abs=1e-6)
    assert activations.linear_cka(x0, x0) == pytest.approx(1.0, abs=1e-12)
    # x0 R has right singular vectors R^T V: the principal subspace turns by R, and the distance says how far
    p0 = np.linalg.svd(_np_centre(x0.numpy()), full_matrices=False)[2][:3].T
    expected = np.sqrt(1 - np.linalg.norm(p0.T @ rotation.numpy().T @ p0) ** 2 / 3)
    assert expected > 0.05  # a rotation that really moves the subspace
    assert activations.pca_subspace_distance(x0, rotated, 3) == pytest.approx(expected, abs=1e-6)
    assert activations.pca_subspace_distance(x0, x0, 3) == pytest.approx(0.0, abs=1e-6)


def _np_centre(x):
    return x - x.mean(axis=0, keepdims=True)


def test_activation_formulas_match_numpy():
    x0, x1 = RNG.normal(size=(40, 6)), RNG.normal(size=(40, 6))
    t0, t1 = torch.tensor(x0), torch.tensor(x1)
    a, b = _np_centre(x0), _np_centre(x1)
    u, _, vh = np.linalg.svd(b.T @ a)
    assert activations.procrustes_residual(t0, t1) == pytest.approx(np.linalg.norm(b @ u @ vh - a) / np.linalg.norm(a))
    cka = np.linalg.norm(b.T @ a) ** 2 / (np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b))
    assert activations.linear_cka(t0, t1) == pytest.approx(cka)
    n0 = x0 / np.linalg.norm(x0, axis=1, keepdims=True)
    n1 = x1 / np.linalg.norm(x1, axis=1, keepdims=True)
    g0, g1 = n0 @ n0.T, n1 @ n1.T
    assert activations.gram_distortion(t0, t1) == pytest.approx(np.linalg.norm(g1 - g0) / np.linalg.norm(g0))
    p0 = np.linalg.svd(a, full_matrices=False)[2][:3].T
    p1 = np.linalg.svd(b, full_matrices=False)[2][:3].T
    assert activations.pca_subspace_distance(t0, t1, 3) == pytest.approx(np.sqrt(1 - np.linalg.norm(p0.T @ p1) ** 2 / 3))
    cos = (x0 * x1).sum(1) / np.linalg.norm(x0, axis=1) / np.linalg.norm(x1, axis=1)
    d = activations.drift(t0, t1)
    assert d["cosine_drift"] == pytest.approx(np.mean(1 - cos)) and d["angular_drift"] == pytest.approx(np.mean(np.arccos(cos)))
    w0, delta, h = RNG.normal(size=(5, 6)), RNG.normal(size=(5, 6)) * 0.1, RNG.normal(size=(40, 6))
    moved = np.mean(np.sum((h @ delta.T) ** 2, axis=1))
    got = activations.csd(torch.tensor(h), torch.tensor(w0), torch.tensor(delta))
    assert got["csd_abs"] == pytest.approx(moved)
    assert got["csd_rel"] == pytest.approx(moved / np.mean(np.sum((h @ w0.T) ** 2, axis=1)))
    assert got["csd_update_norm"] == pytest.approx(moved / (np.sum(delta ** 2) * np.mean(np.sum(h ** 2, axis=1))))


@pytest.mark.parametrize("method", ["lora", "pissa", "oft", "full"])
def test_deltas_equal_merged_minus_base(method):
    base = build_tiny_model(300)
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    model = registry.wrap(base, method, registry.get(method).tiny, "all-linear", seed=1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    from methods.interpolate import merged_state

    merged = merged_state(model)
    got = spectral.deltas(model, base_state)
    assert got
    for key, delta in got.items():
        torch.testing.assert_close(delta, merged[key].float() - base_state[key].float(), atol=1e-5, rtol=1e-5)


def test_vectorised_correlations_and_their_cis_equal_scipys_per_resample_ones():
    """The bootstrap scores all resamples at once; values and CIs must be what spearmanr/pearsonr called
    on each resample give (ties from resampling included)."""
    import numpy as np
    from scipy import stats

    rng = np.random.default_rng(4)
    x = rng.normal(size=9)
    y = x + rng.normal(size=9)
    x[3] = x[5]  # a tie
    assert correlate.spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)
    assert correlate.pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
    got = correlate.correlation(x, y, resamples=300, seed=2)
    for name, one in (("pearson", lambda a, b: stats.pearsonr(a, b)[0]), ("spearman", lambda a, b: stats.spearmanr(a, b)[0])):
        slow = stats.bootstrap((x, y), one, paired=True, vectorized=False, n_resamples=300, method="percentile",
                               random_state=np.random.default_rng(2)).confidence_interval
        assert got[f"{name}_ci"] == pytest.approx([slow.low, slow.high], abs=1e-12)


def test_correlations_and_best_predictor():
    rows = [{"a": float(i), "b": float(-i * i), "c": 1.0, "forgetting": float(i), "gain": float(i % 3)} for i in range(8)]
    table = correlate.correlate(rows, ["a", "b", "c"], resamples=200)
    assert table["a"]["forgetting"]["pearson"] == pytest.approx(1.0)
    assert table["b"]["forgetting"]["spearman"] == pytest.approx(-1.0)
    assert table["c"]["forgetting"]["spearman"] is None  # constant: undefined, not zero
    low, high = table["a"]["forgetting"]["spearman_ci"]
    assert low <= 1.0 <= high + 1e-9
    assert correlate.best_predictor(table)[0] in ("a", "b")
