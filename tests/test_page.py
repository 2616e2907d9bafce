"""What a chapter page shows besides prose: the caption's provenance sentence (hls.provenance.made_by),
tables as markdown (hls.page), figures drawn to be legible at the page's width (hls.plots)."""

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from hls import page, plots, provenance
from hls.config import VERSION, RunConfig
from hls.runs import current_fingerprint


def record(seed=0, commit="abc1234", device="NVIDIA H200", fingerprint=None, method="darts"):
    facts = {"code_fingerprint": fingerprint or current_fingerprint(), "hls": VERSION,
             "git_commit": commit, "device": "cuda", "device_name": device, "wall_seconds": 1.0}
    return SimpleNamespace(config=RunConfig(seed=seed), facts=facts, method=method)


def test_made_by_names_profile_device_seeds_and_commit():
    text = provenance.made_by([record(0), record(1)], "cpu")
    assert text == "Profile cpu on NVIDIA H200; seeds 0, 1; runs of commit abc1234, hls " + VERSION + "."


def test_made_by_lists_every_commit_and_device_and_marks_stale_records():
    recs = {"a": [record(0, "abc1234")], "b": [record(2, "def5678+dirty", "x86_64 CPU (1 torch threads)",
                                                     fingerprint="0123456789ab")]}
    text = provenance.made_by(recs, "smoke")
    assert "NVIDIA H200; x86_64 CPU (1 torch threads)" in text
    assert "seeds 0, 2" in text and "commits abc1234, def5678+dirty" in text
    assert text.endswith("; 1 of 2 runs made by other code than this checkout's.")


def test_made_by_without_records_says_what_drew_the_figure():
    assert provenance.made_by([], computed="hls.schedules") == "Computed by hls.schedules; no run, no device."
    with pytest.raises(ValueError, match="computed="):
        provenance.made_by([])


def test_markdown_table_keeps_index_formats_numbers_and_escapes():
    df = pd.DataFrame({"mu_test = 1 (%)": [64.5612, float("nan")], "n": [3, 4], "note": ["a|b", "$x$ *y*"]},
                      index=pd.Index(["DARTS", "HLS"], name="method"))
    lines = page.markdown_table(df, digits=3).splitlines()
    assert lines[0] == "| method | mu\\_test = 1 (%) | n | note |"
    assert lines[1] == "|---|---|---|---|"
    assert lines[2] == "| DARTS | 64.6 | 3 | a\\|b |"
    assert lines[3] == "| HLS | – | 4 | \\$x\\$ \\*y\\* |"


def test_markdown_table_writes_every_index_level():
    df = pd.DataFrame({"v": [1.0, 2.0]}, index=pd.MultiIndex.from_tuples([("A", "x"), ("A", "y")], names=["run", "part"]))
    assert page.markdown_table(df).splitlines()[2:] == ["| A | x | 1 |", "| A | y | 2 |"]


def test_page_names_are_glue_keys():
    with pytest.raises(ValueError, match="letters, digits and underscores"):
        page.table("tab-1", pd.DataFrame())


def test_figures_are_drawn_no_wider_than_the_column_and_no_text_under_the_minimum():
    with pytest.raises(ValueError, match="plots.WIDTH"):
        plots._figure(plots.WIDTH + 1, 3)
    fig = plots._figure(plots.WIDTH, 3)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], label="line")
    ax.legend(fontsize=5)
    ax.text(0.5, 0.5, "small", fontsize=4)
    ax.set_xticks([0, 1], ["a", "b"], fontsize=5)
    plots._legible(fig)
    from matplotlib.text import Text
    sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_text()]
    assert sizes and min(sizes) >= plots.FONT_PT
    assert all(t.get_fontsize() >= plots.FONT_PT for t in ax.get_xticklabels())


def test_schedules_figure_is_legible_and_fits():
    fig = plots.schedules_figure(T=10)
    from matplotlib.text import Text
    assert fig.get_figwidth() <= plots.WIDTH
    assert min(t.get_fontsize() for t in fig.findobj(Text) if t.get_text()) >= plots.FONT_PT
    assert math.isclose(fig.dpi, plots.DPI) and np.isfinite(fig.get_figheight())
