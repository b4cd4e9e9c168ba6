import numpy as np
import pytest
from scipy.linalg import orthogonal_procrustes
from scipy.spatial.transform import Rotation

from hpe_jax.evaluation import metrics as M

# ------------------------------------------------------------------------------------------------
# An independent transcription of hand3d's EvalUtil (lmb-freiburg/hand3d utils/general.py): lists of
# distances per keypoint (visible samples only), PCK by counting, a hand-written trapezoid.


def _trapezoid(y, x):
    return sum((y[i] + y[i + 1]) / 2.0 * (x[i + 1] - x[i]) for i in range(len(x) - 1))


def _evalutil_reference(errors, vis, val_min, val_max, steps):
    num_kp = errors.shape[1]
    data = [[] for _ in range(num_kp)]
    for n in range(errors.shape[0]):
        for k in range(num_kp):
            if vis[n, k]:
                data[k].append(float(errors[n, k]))
    thresholds = list(np.linspace(val_min, val_max, steps))
    norm = _trapezoid([1.0] * len(thresholds), thresholds)
    means, medians, aucs, curves = [], [], [], []
    for k in range(num_kp):
        if not data[k]:
            continue
        d = sorted(data[k])
        means.append(sum(d) / len(d))
        mid = len(d) // 2
        medians.append(d[mid] if len(d) % 2 else (d[mid - 1] + d[mid]) / 2.0)
        curve = [sum(1 for e in d if e <= t) / len(d) for t in thresholds]
        curves.append(curve)
        aucs.append(_trapezoid(curve, thresholds) / norm)
    mean_curve = [sum(c[i] for c in curves) / len(curves) for i in range(len(thresholds))]
    return (sum(means) / len(means), sum(medians) / len(medians), sum(aucs) / len(aucs),
            mean_curve, thresholds)


def _random_errors(seed=0, n=57, j=21):
    rng = np.random.default_rng(seed)
    errors = rng.gamma(2.0, 12.0, (n, j))
    vis = rng.random((n, j)) < 0.8
    vis[:, 3] = False  # a joint without data must be skipped, not averaged in as 0
    # Errors exactly on grid points exercise the `<=` of EvalUtil's PCK.
    errors[:5, 0] = [0.0, 20.0, 50.0, np.linspace(0, 50, 100)[37], np.linspace(20, 50, 20)[4]]
    vis[:5, 0] = True
    return errors, vis


@pytest.mark.parametrize("val_min,val_max,steps", [(0, 50, 100), (20, 50, 20), (0, 50, 20)])
def test_evalutil_measures_equal_transcription_within_1e9(val_min, val_max, steps):
    errors, vis = _random_errors()
    got = M.evalutil_measures(errors, vis, np.linspace(val_min, val_max, steps))
    mean, median, auc, curve, thresholds = _evalutil_reference(errors, vis, val_min, val_max,
                                                               steps)
    assert abs(got.auc - auc) < 1e-9
    assert abs(got.epe_mean - mean) < 1e-9
    assert abs(got.epe_median - median) < 1e-9
    np.testing.assert_allclose(got.curve, curve, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got.thresholds, thresholds, rtol=0, atol=0)
    assert np.isnan(got.per_joint_auc[3]) and got.counts[3] == 0


def test_auc_20_50_variants_equal_their_published_recipes():
    errors, vis = _random_errors(seed=1)
    # bihand: get_measures(20, 50, 20) in mm.
    assert abs(M.auc_20_50(errors, vis, "bihand").auc
               - _evalutil_reference(errors, vis, 20, 50, 20)[2]) < 1e-9
    # hand3d eval_full.py: get_measures(0, 50, 20), then calc_auc on the MEAN curve from index 8.
    _, _, _, curve, t = _evalutil_reference(errors, vis, 0, 50, 20)
    ref = _trapezoid(curve[8:], t[8:]) / _trapezoid([1.0] * 12, t[8:])
    got = M.auc_20_50(errors, vis, "hand3d")
    assert abs(got.auc - ref) < 1e-9
    assert abs(got.thresholds[0] - 50 * 8 / 19) < 1e-12 and got.thresholds[-1] == 50
    # Zhang et al.: 20, 25, ..., 50 mm.
    np.testing.assert_allclose(M.AUC_20_50_GRIDS["zhang"], [20, 25, 30, 35, 40, 45, 50])
    assert abs(M.auc_20_50(errors, vis, "zhang").auc
               - _evalutil_reference(errors, vis, 20, 50, 7)[2]) < 1e-9
    assert abs(M.auc_0_50(errors, vis).auc - _evalutil_reference(errors, vis, 0, 50, 100)[2]) < 1e-9
    with pytest.raises(ValueError, match="choose one of"):
        M.auc_20_50(errors, vis, "h3d")


def test_evalutil_hand_computed_fixture():
    # Joint 0: errors 0, 10, 30, 60 mm; joint 1 never visible. Thresholds 0, 25, 50:
    # PCK = 1/4, 2/4, 3/4; trapezoid = 25 * (0.25 + 0.5) / 2 + 25 * (0.5 + 0.75) / 2 = 25; / 50.
    errors = np.array([[0.0, 1.0], [10.0, 1.0], [30.0, 1.0], [60.0, 1.0]])
    vis = np.array([[1, 0]] * 4)
    got = M.evalutil_measures(errors, vis, [0.0, 25.0, 50.0])
    assert got.auc == pytest.approx(0.5)
    np.testing.assert_allclose(got.curve, [0.25, 0.5, 0.75])
    assert got.epe_mean == pytest.approx(25.0) and got.epe_median == pytest.approx(20.0)
    np.testing.assert_array_equal(got.counts, [4, 0])
    assert M.pooled_epe(errors, vis) == (25.0, 20.0)


def test_pooled_epe_differs_from_evalutil_mean_of_means():
    errors = np.array([[1.0, 2.0], [3.0, 100.0]])
    vis = np.array([[1, 1], [1, 0]])
    assert M.pooled_epe(errors, vis) == (2.0, 2.0)  # over the three visible joints
    # EvalUtil: joint means 2 and 2 -> 2; medians 2 and 2 -> 2. Make them differ:
    errors2 = np.array([[1.0, 10.0], [3.0, 100.0], [5.0, 100.0]])
    vis2 = np.array([[1, 1], [1, 0], [1, 0]])
    assert M.pooled_epe(errors2, vis2)[0] == pytest.approx(19.0 / 4)
    assert M.evalutil_measures(errors2, vis2, [0, 50]).epe_mean == pytest.approx((3 + 10) / 2)


def test_joint_errors_are_euclidean():
    pred = np.array([[[3.0, 4.0, 0.0], [1.0, 2.0, 2.0]]])
    np.testing.assert_allclose(M.joint_errors(pred, np.zeros_like(pred)), [[5.0, 3.0]])
    with pytest.raises(ValueError, match="same shape"):
        M.joint_errors(pred, np.zeros((1, 3, 3)))


# ------------------------------------------------------------------------------------------------
# 2D


def test_pck_2d_continuous_hand_computed():
    # Output 40 px: the radius is 2 px, strict. Offsets 1.9 (in), 2.1 (out), 1.98 (in), and an
    # invisible joint that would fail but must not count.
    gt = np.full((4, 2, 2), 10.0)
    pred = gt.copy()
    pred[0, 0] += [1.9, 0.0]
    pred[1, 0] += [0.0, 2.1]
    pred[2, 0] += [1.4, 1.4]
    pred[3, 0] += [30.0, 0.0]
    pred[:, 1] += [0.0, 2.0]  # exactly on the radius: not below it
    vis = np.array([[1, 1], [1, 1], [1, 0], [0, 0]])
    got = M.pck_2d(pred, gt, vis, 40)
    np.testing.assert_allclose(got.per_joint, [2 / 3, 0.0])
    assert got.mean == pytest.approx(1 / 3)
    np.testing.assert_array_equal(got.counts, [3, 2])
    # (height, width): x is normalised by the width.
    assert M.pck_2d(pred[:1, :1], gt[:1, :1], None, (40, 20)).mean == 0.0
    with pytest.raises(ValueError, match=r"\(N, J, 2\)"):
        M.pck_2d(pred[0], gt[0], None, 40)


def _gaussian_maps(xy, valid, size, sigma=2.0):
    """TLlib-style Gaussian targets (N, J, size, size) peaking at the integer pixel xy."""
    ys, xs = np.mgrid[0:size, 0:size]
    maps = np.exp(-((xs - xy[..., 0, None, None]) ** 2 + (ys - xy[..., 1, None, None]) ** 2)
                  / (2 * sigma ** 2))
    return maps * valid[..., None, None]


def test_pck_2d_tllib_heatmaps_hand_computed():
    # 20 x 20 heatmaps: the normaliser is 2 px, so a joint is correct if < 1 px away (strict).
    gt_xy = np.array([[[5, 5], [5, 5], [1, 7], [8, 8]]], float)
    gt_valid = np.array([[1, 1, 1, 0]])  # joint 2 has x = 1 (not > 1), joint 3 an empty map
    pred_xy = np.array([[[5, 5], [5, 6], [1, 7], [8, 8]]], float)
    got = M.pck_2d_tllib_heatmaps(_gaussian_maps(pred_xy, np.ones((1, 4)), 20),
                                  _gaussian_maps(gt_xy, gt_valid, 20))
    np.testing.assert_array_equal(got.counts, [1, 1, 0, 0])
    np.testing.assert_array_equal(got.per_joint[:2], [1.0, 0.0])  # 1 px off = 0.5: not < 0.5
    assert np.all(np.isnan(got.per_joint[2:]))
    assert got.mean == 0.5
    # An empty prediction map gives (0, 0), as TLlib's get_max_preds.
    xy, maxval = M.heatmap_argmax(np.zeros((1, 1, 4, 4)))
    np.testing.assert_array_equal(xy, [[[0, 0]]])
    assert maxval[0, 0] == 0


def test_pck_2d_tllib_from_coordinates_matches_heatmaps():
    rng = np.random.default_rng(3)
    size, n, j = 32, 40, 21
    gt_uv = rng.uniform(-3, size + 2, (n, j, 2))
    pred_uv = gt_uv + rng.normal(0, 2.0, (n, j, 2))
    vis = rng.random((n, j)) < 0.85
    # Heatmaps as TLlib builds them: peak at the nearest pixel, cut by the border, empty if the
    # joint is invisible or far off the map; predictions peak at the rounded coordinate.
    mu = np.floor(gt_uv + 0.5)
    on = vis & np.all((mu - 6 < size) & (mu + 7 >= 0), -1)
    pred_maps = _gaussian_maps(np.clip(np.floor(pred_uv + 0.5), 0, size - 1), np.ones((n, j)),
                               size)
    got = M.pck_2d_tllib(pred_uv, gt_uv, vis, size)
    ref = M.pck_2d_tllib_heatmaps(pred_maps, _gaussian_maps(mu, on, size))
    np.testing.assert_array_equal(got.counts, ref.counts)
    np.testing.assert_allclose(got.per_joint, ref.per_joint)
    assert got.mean == ref.mean and 0.0 < got.mean < 1.0


# ------------------------------------------------------------------------------------------------
# Procrustes


def _freihand_align_reference(gt, pred):
    """FreiHAND's alignment as its official eval.py does it: centre both, divide by Frobenius
    norms, scipy orthogonal_procrustes, rescale to the ground truth."""
    out = []
    for g, p in zip(gt, pred, strict=True):
        g0, p0 = g - g.mean(0), p - p.mean(0)
        sg, sp = np.linalg.norm(g0), np.linalg.norm(p0)
        r, s = orthogonal_procrustes(g0 / sg, p0 / sp)
        out.append((p0 / sp) @ r.T * s * sg + g.mean(0))
    return np.stack(out)


def test_procrustes_matches_freihand_recipe_within_1e9():
    rng = np.random.default_rng(5)
    gt = rng.normal(0, 40, (10, 21, 3))
    pred = gt + rng.normal(0, 8, gt.shape)
    pred[0] = pred[0] * np.array([-1, 1, 1])  # a mirrored one: reflection is allowed there
    got = M.procrustes_align(pred, gt, allow_reflection=True)
    np.testing.assert_allclose(got, _freihand_align_reference(gt, pred), rtol=0, atol=1e-9)


def test_procrustes_removes_similarity_and_reflection_only_if_allowed():
    rng = np.random.default_rng(6)
    gt = rng.normal(0, 40, (4, 21, 3))
    rot = Rotation.random(4, random_state=7).as_matrix()
    pred = 1.3 * np.einsum("nij,nkj->nki", rot, gt) + rng.normal(0, 100, (4, 1, 3))
    for reflect in (True, False):
        assert M.procrustes_errors(pred, gt, reflect).max() < 1e-9
    mirrored = gt * np.array([-1.0, 1.0, 1.0])
    assert M.procrustes_errors(mirrored, gt, True).max() < 1e-9
    assert M.procrustes_errors(mirrored, gt, False).mean() > 5.0
    # Root-relative: translating the prediction changes nothing.
    noisy = gt + rng.normal(0, 5, gt.shape)
    np.testing.assert_allclose(M.procrustes_errors(noisy + 300.0, gt),
                               M.procrustes_errors(noisy, gt), atol=1e-9)
