"""The question's road: propose candidates, choose among them by execution, repair.

:func:`solve` is the one function ``ask``, ``eval`` and everything later call.
"""

from .pipeline import Answer, Solution, ask, check_question, format_table, prefix, prompt, render, solve, warm
from .settings import DEFAULT_PRESET, PRESETS, Settings, resolve
from .trace import Trace, Trial

__all__ = ["Answer", "Solution", "Settings", "Trace", "Trial", "PRESETS", "DEFAULT_PRESET", "ask", "solve",
           "resolve", "prompt", "render", "prefix", "warm", "check_question", "format_table"]
