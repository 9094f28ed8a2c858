import numpy as np
import pytest

from multimodal.fusion import STRATEGIES, make_strategy


def _pairs(n=400, seed=0, visual_noise=0.5, audio_noise=2.0):
    """Synthetic predictions: both modalities see the label, audio more noisily."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 7, n)

    def softmax(z):
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    onehot = np.eye(7)[y] * 2.0
    pv = softmax(onehot + rng.normal(0, visual_noise * 2, (n, 7)))
    pa = softmax(onehot + rng.normal(0, audio_noise * 2, (n, 7)))
    return pv, pa, y


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_gives_distributions_and_handles_missing(name):
    pv, pa, y = _pairs()
    s = make_strategy(name).fit(pv, pa, y)
    out = s.predict_proba(pv, pa)
    assert out.shape == pv.shape
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-9)
    assert (out >= 0).all()
    nan = np.full(7, np.nan)
    pv2, pa2 = pv[:3].copy(), pa[:3].copy()
    pv2[0], pa2[1] = nan, nan
    pv2[2], pa2[2] = nan, nan
    out2 = s.predict_proba(pv2, pa2)
    np.testing.assert_allclose(out2[0], pa[0])  # visual missing: audio alone
    np.testing.assert_allclose(out2[1], pv[1])  # audio missing: visual alone
    assert np.isnan(out2[2]).all()  # nothing: no answer


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_state_round_trips_as_plain_json(name):
    import json
    pv, pa, y = _pairs()
    s = make_strategy(name).fit(pv, pa, y)
    state = json.loads(json.dumps(s.get_state()))
    clone = make_strategy(name, state)
    np.testing.assert_allclose(clone.predict_proba(pv, pa), s.predict_proba(pv, pa))


def test_weighted_mean_learns_to_trust_the_better_modality():
    pv, pa, y = _pairs()
    s = make_strategy("weighted_mean").fit(pv, pa, y)
    assert s.visual_weight_ > 0.6
    pv, pa, y = _pairs(visual_noise=2.0, audio_noise=0.5)
    assert make_strategy("weighted_mean").fit(pv, pa, y).visual_weight_ < 0.4


def test_mean_and_product_arithmetic():
    pv = np.array([[0.6, 0.4, 0, 0, 0, 0, 0]], float) + 0.0
    pa = np.array([[0.2, 0.8, 0, 0, 0, 0, 0]], float)
    np.testing.assert_allclose(make_strategy("mean").predict_proba(pv, pa)[0, :2], [0.4, 0.6])
    prod = make_strategy("product").predict_proba(pv, pa)[0]
    expected = np.sqrt([0.6 * 0.2, 0.4 * 0.8])
    np.testing.assert_allclose(prod[:2] / prod[:2].sum(), expected / expected.sum(), rtol=1e-5)


def test_max_confidence_picks_the_surer_modality():
    pv = np.array([[0.9, 0.1, 0, 0, 0, 0, 0.0]])
    pa = np.array([[0.3, 0.7, 0, 0, 0, 0, 0.0]])
    np.testing.assert_allclose(make_strategy("max_confidence").predict_proba(pv, pa), pv)


def test_stacking_beats_either_modality_on_complementary_data():
    # visual separates classes 0-3 well, audio classes 4-6: stacking should use both
    rng = np.random.default_rng(1)
    n = 2000
    y = rng.integers(0, 7, n)
    pv = np.full((n, 7), 0.05)
    pa = np.full((n, 7), 0.05)
    for i, c in enumerate(y):
        (pv if c < 4 else pa)[i, c] = 0.7
        (pa if c < 4 else pv)[i, rng.integers(0, 7)] += 0.3
    pv /= pv.sum(1, keepdims=True)
    pa /= pa.sum(1, keepdims=True)
    s = make_strategy("stacking").fit(pv[:1000], pa[:1000], y[:1000])
    acc = (s.predict_proba(pv[1000:], pa[1000:]).argmax(1) == y[1000:]).mean()
    assert acc > max((pv[1000:].argmax(1) == y[1000:]).mean(), (pa[1000:].argmax(1) == y[1000:]).mean()) + 0.1


def test_unfitted_stacking_says_so():
    pv, pa, _ = _pairs(10)
    with pytest.raises(ValueError, match="not fitted"):
        make_strategy("stacking").predict_proba(pv, pa)


def test_unknown_strategy():
    with pytest.raises(ValueError, match="unknown fusion"):
        make_strategy("telepathy")
