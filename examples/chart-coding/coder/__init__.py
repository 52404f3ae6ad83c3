"""A chart coder: clinical chart text → ICD-10-CM codes with evidence.

    from coder import code_chart
    code_chart("A/P: HTN, stable. Denies chest pain.")
"""
from .coder import ChartCoder
from .lexicon import default_index

__all__ = ["ChartCoder", "code_chart"]

_default_coder: ChartCoder | None = None


def code_chart(text: str) -> dict:
    """The coding of one chart with the process-wide coder (its index is built on first use)."""
    global _default_coder
    if _default_coder is None:
        _default_coder = ChartCoder(default_index())
    return _default_coder.code(text)
