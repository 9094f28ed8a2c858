"""The Python interface: :func:`analyze` a video, an audio file or a photo.

    >>> import multimodal
    >>> result = multimodal.analyze("talk.mp4", fps=4)   # doctest: +SKIP
    >>> result.segments[["start", "end", "label", "confidence"]]   # doctest: +SKIP
    >>> result.save("out/talk")   # doctest: +SKIP

The command line (``multimodal analyze``) runs the same code and writes the
same files as :meth:`Result.save`.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from multimodal.config import AnalyzeConfig
from multimodal.results import Analysis


@dataclass(frozen=True)
class Result:
    """What :func:`analyze` found in one input.

    Attributes
    ----------
    analysis : the full :class:`multimodal.results.Analysis` (segments, faces,
        models, options, timings)
    """

    analysis: Analysis

    @cached_property
    def segments(self):
        """One row per time segment (a photo is one segment): ``pandas.DataFrame``
        with the columns of ``segments.csv``."""
        import pandas as pd

        from multimodal.report import SEGMENT_COLUMNS, segment_rows
        return pd.DataFrame(segment_rows(self.analysis), columns=SEGMENT_COLUMNS)

    @cached_property
    def faces(self):
        """One row per face per sampled frame: ``pandas.DataFrame`` with the columns of ``faces.csv``."""
        import pandas as pd

        from multimodal.report import FACE_COLUMNS, face_rows
        return pd.DataFrame(face_rows(self.analysis), columns=FACE_COLUMNS)

    @property
    def tracks(self) -> list[dict]:
        """Per person: time on screen, dominant emotion, mean distribution and how it moved."""
        from multimodal.report import track_summaries
        return track_summaries(self.analysis)

    @property
    def summary(self) -> dict:
        """The dominant emotion over the whole input, its mean distribution and the runs of labels."""
        from multimodal.report import overall
        return overall(self.analysis)

    @property
    def warnings(self) -> list[str]:
        """What the analysis could not do (no faces found, no speech heard, ...)."""
        return list(self.analysis.warnings)

    def to_dict(self) -> dict:
        """Everything as the JSON-ready dict written to ``analysis.json``."""
        from multimodal.report import analysis_document
        return analysis_document(self.analysis)

    def save(self, outdir: str | Path, *, force: bool = False, pictures: bool = True,
             annotate: bool = False) -> Path:
        """Write the files the command line writes into the folder ``outdir``.

        ``segments.csv``, ``faces.csv``, ``analysis.json``; with ``pictures``
        ``timeline.png`` and ``report.html`` (videos and audio); with
        ``annotate`` an annotated copy of the video or photo. An existing
        folder is replaced only with ``force``. Returns the folder.
        """
        from multimodal.report import write_analysis
        return write_analysis(self.analysis, Path(outdir), force=force, pictures=pictures, annotate=annotate)

    def __repr__(self) -> str:
        a = self.analysis
        return (f"Result({a.info.path.name!r}: {len(a.segments)} segment{'s' * (len(a.segments) != 1)}, "
                f"{len({r.track_id for r in a.faces})} people, dominant {self.summary['dominant']!r})")


def analyze(source: str | Path | np.ndarray | Iterable[str | Path], *, config: AnalyzeConfig | None = None,
            **options) -> Result | list[Result]:
    """Emotions over time in a video or audio file, or the faces in a photo.

    Parameters
    ----------
    source : a media file (video or audio), a photo (jpg, png, webp, bmp,
        tiff), an RGB image as a ``uint8`` array of shape (h, w, 3), or a
        list of any of these
    config : all options at once; ``options`` override single fields
    **options : fields of :class:`multimodal.config.AnalyzeConfig`, such as
        ``fps=4``, ``segment=2.0``, ``fusion="mean"``, ``max_faces=5``

    Returns
    -------
    One :class:`Result`, or a list of them for a list of sources (the models
    are loaded once for all).

    Raises
    ------
    multimodal.errors.InputError : a source cannot be read or holds no usable evidence
    multimodal.errors.ModelError : a model file is missing or fails its checksum
    TypeError : an option that :class:`AnalyzeConfig` does not have
    """
    from multimodal.pipeline import Analyzer
    known = {f.name for f in fields(AnalyzeConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"unknown option{'s' * (len(unknown) > 1)} {', '.join(unknown)}; "
                        f"choose from {', '.join(sorted(known))}")
    cfg = replace(config or AnalyzeConfig(quiet=True), **options)
    analyzer = Analyzer(cfg)
    if isinstance(source, (str, Path, np.ndarray)):
        return Result(analyzer.analyze(source))
    return [Result(analyzer.analyze(item)) for item in source]
