"""Showing a page where the user is: inline in Jupyter, else in the default web browser."""

from __future__ import annotations

from typing import Any, Union

__all__ = ["in_notebook", "show_url"]


def _shell() -> Any:
    try:
        import IPython
    except ImportError:
        return None
    return IPython.get_ipython()


def in_notebook() -> bool:
    """True inside IPython/Jupyter (a running shell), False in a plain interpreter.

    >>> in_notebook()
    False
    """
    return _shell() is not None


def show_url(url: str, width: Union[int, str] = "100%", height: int = 400) -> None:
    """Display ``url`` inline (an IFrame) in Jupyter; elsewhere open it in the default web
    browser. Returns nothing, so a notebook cell does not show the frame twice."""
    if in_notebook():
        from IPython.display import IFrame, display

        display(IFrame(url, width=width, height=height))
        return
    import webbrowser

    webbrowser.open(url)
