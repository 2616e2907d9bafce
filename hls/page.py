"""Numbered, captioned figures and tables for the chapter pages.

A chapter's code cell hands a figure or a table to `figure` / `table`, which glue it (myst-nb)
under a name together with the sentence its caption ends with (`hls.provenance.made_by`: profile,
device, seeds, commit). A markdown cell then places it where the prose wants it, with a label,
a caption and alt text, and the text refers to it by number ({numref}`fig-...`):

    page.figure("fig_counts", plots.class_counts_figure(rec, where), rec, where)

    ```{glue:figure} fig_counts
    :name: fig-counts
    :alt: Bar chart of training images per class, 5000 airplanes down to 50 trucks.

    Training images per class. {glue:text}`fig_counts_source`
    ```

    page.table("tab_table1", tables.accuracy_table(runs), runs, where)

    :::{table} Test accuracy (%) of the three methods. {glue:text}`tab_table1_source`
    :name: tab-table1

    ```{glue:md} tab_table1
    :format: myst
    ```
    :::

Tables are glued as MyST markdown, not as pandas HTML, so that Sphinx sees a real table: it
numbers it ("Table 1.2"), puts the caption above it and lets the theme scroll it sideways when it
is wider than the page. README.md, "Writing a chapter", has the whole recipe.
"""

from __future__ import annotations

import math
import numbers

import pandas as pd

from . import plots, provenance, tables

SOURCE = "_source"   # the caption's provenance sentence is glued as <name> + SOURCE


def figure(name: str, fig, records=None, profile: str | None = None, computed: str | None = None) -> None:
    """Glue `fig` as `name` and its provenance sentence as `name + '_source'`.

    The caption says what the figure's title said, so the title (matplotlib's suptitle) is
    dropped and its space goes to the plot.
    """
    from myst_nb import glue

    _check_name(name)
    if fig._suptitle is not None:       # public API has no remove; an empty title takes no space
        fig._suptitle.remove()
        fig._suptitle = None
    glue(name, fig, display=False)
    glue(name + SOURCE, provenance.made_by(records, profile, computed), display=False)


def table(name: str, df: pd.DataFrame, records=None, profile: str | None = None,
          computed: str | None = None, digits: int = 4) -> None:
    """Glue `df` as a MyST markdown table under `name`, its provenance sentence as `name + '_source'`."""
    from IPython.display import Markdown
    from myst_nb import glue

    _check_name(name)
    glue(name, Markdown(markdown_table(df, digits)), display=False)
    glue(name + SOURCE, provenance.made_by(records, profile, computed), display=False)


def markdown_table(df: pd.DataFrame, digits: int = 4) -> str:
    """`df` as a markdown table: the index (every level) first, floats to `digits` significant
    digits, NaN as '–', and markdown's special characters escaped so a cell shows as written."""
    index_names = [n if n is not None else "" for n in df.index.names]
    header = index_names + [_cell(c, digits) for c in df.columns]
    lines = ["| " + " | ".join(_escape(h) for h in header) + " |",
             "|" + "---|" * len(header)]
    for key, row in df.iterrows():
        keys = key if isinstance(key, tuple) else (key,)
        cells = [_cell(k, digits) for k in keys] + [_cell(v, digits) for v in row.tolist()]
        lines.append("| " + " | ".join(_escape(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(value, digits: int) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return "–" if not math.isfinite(value) else f"{float(value):.{digits}g}"
    return str(value)


# Backslash escapes (CommonMark: any ASCII punctuation) for what would otherwise turn into
# emphasis, math ($), code, links, HTML or a column break.
_SPECIAL = set("\\`*_{}[]<>$|#~")


def _escape(text: str) -> str:
    return "".join("\\" + ch if ch in _SPECIAL else ch for ch in str(text))


def _check_name(name: str) -> None:
    # a glue key is looked up by the {glue:...} roles, which take letters, digits and underscores
    if not name or not all(ch.isalnum() or ch == "_" for ch in name):
        raise ValueError(f"glue name {name!r}: use letters, digits and underscores only, e.g. 'fig_counts'")
