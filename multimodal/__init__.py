"""Audio-visual emotion recognition over time, offline and on a CPU.

    >>> import multimodal
    >>> result = multimodal.analyze("talk.mp4")   # doctest: +SKIP
    >>> result.segments.head()   # doctest: +SKIP

See :func:`multimodal.api.analyze` and :class:`multimodal.api.Result`.
"""
from multimodal.version import __version__

__all__ = ["AnalyzeConfig", "Result", "analyze", "__version__"]


def __getattr__(name: str):
    # Loaded on first use, so that ``import multimodal`` (and the command line's
    # start) does not pay for OpenCV, the models' runtimes and pandas.
    if name in ("analyze", "Result"):
        from multimodal import api
        return getattr(api, name)
    if name == "AnalyzeConfig":
        from multimodal.config import AnalyzeConfig
        return AnalyzeConfig
    raise AttributeError(f"module 'multimodal' has no attribute {name!r}")
