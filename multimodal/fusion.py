"""Decision-level fusion of visual and audio class probabilities.

Every strategy is a small estimator in the scikit-learn manner:
constructor parameters are the defaults a strategy uses unfitted,
``fit(p_visual, p_audio, y)`` learns from validation predictions (never test
ones) into attributes ending in ``_``, ``predict_proba(p_visual, p_audio)``
returns the fused distribution. Inputs are arrays of shape (n, 7); a row of NaN means the
modality is absent for that item. An item with one modality gets that
modality's distribution unchanged; one with none gets a row of NaN.
Learned parameters are plain numbers (``get_state`` / ``set_state``), so a
fitted strategy is stored as JSON, never as a pickle.
"""
from __future__ import annotations

import numpy as np

_EPS = 1e-7


def _present(p: np.ndarray) -> np.ndarray:
    return ~np.isnan(p).any(axis=1)


def _normalise(p: np.ndarray) -> np.ndarray:
    return p / p.sum(axis=1, keepdims=True)


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], _EPS, 1))))


def _entropy(p: np.ndarray) -> np.ndarray:
    return -(p * np.log(np.clip(p, _EPS, 1))).sum(axis=1)


class FusionStrategy:
    """Base class: handles missing modalities, subclasses fuse complete pairs."""

    name = "base"
    requires_fit = False  # unusable without them (the others have sensible defaults)

    def fit(self, p_visual: np.ndarray, p_audio: np.ndarray, y: np.ndarray) -> FusionStrategy:
        """Learn from validation pairs, shape (n, 7) each, and labels (n,); returns self."""
        return self

    def predict_proba(self, p_visual: np.ndarray, p_audio: np.ndarray) -> np.ndarray:
        """Fused distributions, shape (n, 7); rows of NaN mark an absent modality."""
        p_visual, p_audio = np.asarray(p_visual, float), np.asarray(p_audio, float)
        out = np.full(p_visual.shape, np.nan)
        v, a = _present(p_visual), _present(p_audio)
        both = v & a
        out[v & ~a] = p_visual[v & ~a]
        out[a & ~v] = p_audio[a & ~v]
        if both.any():
            out[both] = self._fuse(p_visual[both], p_audio[both])
        return out

    def _fuse(self, pv: np.ndarray, pa: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def get_state(self) -> dict:
        """The fitted parameters as JSON-ready numbers."""
        return {}

    def set_state(self, state: dict) -> FusionStrategy:
        """Restore the parameters :meth:`get_state` gave; returns self."""
        return self


def _complete(p_visual, p_audio, y):
    both = _present(p_visual) & _present(p_audio)
    return p_visual[both], p_audio[both], np.asarray(y)[both]


class MeanFusion(FusionStrategy):
    """Arithmetic mean of the two distributions."""

    name = "mean"

    def _fuse(self, pv, pa):
        return (pv + pa) / 2


class _VisualWeightFusion(FusionStrategy):
    """A rule with one parameter, the visual weight ``w`` in [0, 1], fitted by
    minimising log-loss over a grid into ``visual_weight_``."""

    def __init__(self, visual_weight: float = 0.5):
        self.visual_weight = visual_weight

    def fit(self, p_visual, p_audio, y):
        pv, pa, y = _complete(p_visual, p_audio, y)
        grid = np.linspace(0, 1, 41)
        self.visual_weight_ = float(grid[np.argmin([_log_loss(y, self._combine(pv, pa, w)) for w in grid])])
        return self

    @property
    def _weight(self) -> float:
        return getattr(self, "visual_weight_", self.visual_weight)

    @staticmethod
    def _combine(pv, pa, w):
        raise NotImplementedError

    def _fuse(self, pv, pa):
        return self._combine(pv, pa, self._weight)

    def get_state(self):
        return {"visual_weight": self._weight}

    def set_state(self, state):
        self.visual_weight_ = float(state["visual_weight"])
        return self


class WeightedMeanFusion(_VisualWeightFusion):
    """``w * visual + (1 - w) * audio``."""

    name = "weighted_mean"

    @staticmethod
    def _combine(pv, pa, w):
        return w * pv + (1 - w) * pa


class ProductFusion(_VisualWeightFusion):
    """Log-linear pooling: ``softmax(w log visual + (1 - w) log audio)``.

    With ``w = 0.5`` this is the normalised product of the two (naive Bayes
    under a uniform prior).
    """

    name = "product"

    @staticmethod
    def _combine(pv, pa, w):
        logits = w * np.log(np.clip(pv, _EPS, 1)) + (1 - w) * np.log(np.clip(pa, _EPS, 1))
        logits -= logits.max(axis=1, keepdims=True)
        return _normalise(np.exp(logits))


class MaxConfidenceFusion(FusionStrategy):
    """The distribution of whichever modality is more confident (higher top probability)."""

    name = "max_confidence"

    def _fuse(self, pv, pa):
        return np.where((pv.max(axis=1) >= pa.max(axis=1))[:, None], pv, pa)


class EntropyWeightedFusion(FusionStrategy):
    """Mean weighted per item by each modality's certainty, ``exp(-entropy / t)``.

    A confident modality dominates an uncertain one item by item; ``fit``
    picks the temperature minimising log-loss into ``temperature_``.
    """

    name = "entropy_weighted"

    def __init__(self, temperature: float = 1.0):
        self.temperature = temperature

    def fit(self, p_visual, p_audio, y):
        pv, pa, y = _complete(p_visual, p_audio, y)
        grid = np.geomspace(0.05, 20, 30)
        self.temperature_ = float(grid[np.argmin([_log_loss(y, self._mix(pv, pa, t)) for t in grid])])
        return self

    @property
    def _temperature(self) -> float:
        return getattr(self, "temperature_", self.temperature)

    @staticmethod
    def _mix(pv, pa, t):
        wv, wa = np.exp(-_entropy(pv) / t), np.exp(-_entropy(pa) / t)
        s = wv + wa
        return (wv / s)[:, None] * pv + (wa / s)[:, None] * pa

    def _fuse(self, pv, pa):
        return self._mix(pv, pa, self._temperature)

    def get_state(self):
        return {"temperature": self._temperature}

    def set_state(self, state):
        self.temperature_ = float(state["temperature"])
        return self


class VotingFusion(FusionStrategy):
    """One vote per modality for its top class; the summed distribution breaks ties.

    Output puts mass on the voted classes (a vote is worth ``vote_mass``),
    the rest follows the mean distribution, so it is still a distribution.
    """

    name = "voting"

    def __init__(self, vote_mass: float = 0.5):
        self.vote_mass = vote_mass

    def _fuse(self, pv, pa):
        votes = np.zeros_like(pv)
        n = np.arange(len(pv))
        votes[n, pv.argmax(axis=1)] += 0.5
        votes[n, pa.argmax(axis=1)] += 0.5
        return self.vote_mass * votes + (1 - self.vote_mass) * (pv + pa) / 2


class StackingFusion(FusionStrategy):
    """Logistic regression over both modalities' log-probabilities."""

    name = "stacking"
    requires_fit = True

    def __init__(self, C: float = 1.0):
        self.C = C
        self.coef_: np.ndarray | None = None
        self.intercept_: np.ndarray | None = None

    @staticmethod
    def _features(pv, pa):
        return np.hstack([np.log(np.clip(pv, _EPS, 1)), np.log(np.clip(pa, _EPS, 1))])

    def fit(self, p_visual, p_audio, y):
        from sklearn.linear_model import LogisticRegression  # only compare-fusion fits: keep analyze light
        pv, pa, y = _complete(p_visual, p_audio, y)
        k = pv.shape[1]
        clf = LogisticRegression(C=self.C, max_iter=2000)
        clf.fit(self._features(pv, pa), y)
        # Classes absent from y get no column from sklearn: keep them at -inf-ish.
        self.coef_ = np.zeros((k, 2 * k))
        self.intercept_ = np.full(k, -20.0)
        self.coef_[clf.classes_] = clf.coef_ if len(clf.classes_) > 2 else np.vstack([-clf.coef_, clf.coef_])
        self.intercept_[clf.classes_] = clf.intercept_ if len(clf.classes_) > 2 else np.r_[-clf.intercept_, clf.intercept_]
        return self

    def _fuse(self, pv, pa):
        if self.coef_ is None:
            raise ValueError("stacking fusion is not fitted: run compare-fusion to fit it, "
                             "or choose another --fusion")
        z = self._features(pv, pa) @ self.coef_.T + self.intercept_
        z -= z.max(axis=1, keepdims=True)
        return _normalise(np.exp(z))

    def get_state(self):
        return {"C": self.C, "coef": None if self.coef_ is None else self.coef_.tolist(),
                "intercept": None if self.intercept_ is None else self.intercept_.tolist()}

    def set_state(self, state):
        self.C = float(state.get("C", 1.0))
        self.coef_ = None if state.get("coef") is None else np.asarray(state["coef"], float)
        self.intercept_ = None if state.get("intercept") is None else np.asarray(state["intercept"], float)
        return self


STRATEGIES: dict[str, type[FusionStrategy]] = {
    cls.name: cls for cls in (MeanFusion, WeightedMeanFusion, ProductFusion, MaxConfidenceFusion,
                              EntropyWeightedFusion, VotingFusion, StackingFusion)}


def make_strategy(name: str, state: dict | None = None) -> FusionStrategy:
    """A strategy by name, with fitted parameters from ``state`` if given."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown fusion strategy {name!r}; choose from {', '.join(STRATEGIES)}")
    strategy = STRATEGIES[name]()
    return strategy.set_state(state) if state else strategy
