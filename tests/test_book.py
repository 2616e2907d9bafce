"""The book: chapter parameters, the papermill batch (hls.book) and the Jupyter Book build.

The slow tests run every chapter with the smoke profile; they share one run store (HLS_RUNS), so
whichever runs first trains and the others only load finished runs.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill
import pytest
import yaml
from bs4 import BeautifulSoup

from hls import book

CHAPTERS = book.chapter_notebooks()
PARAMETERS = {"profile", "seeds", "overrides"}
# Each chapter page shows exactly this many figures (<img> in cell outputs) ...
FIGURES = {
    "01_motivation": 4,          # class counts, Fig. 2, Fig. 3, Fig. 4
    "02_method": 3,              # Fig. 5, gradient norms (Theorem 1), derived cells
    "03_main_results": 3,        # Table II as bars, per-class accuracy, accuracy vs search length
    "04_ablations": 4,           # Fig. 6, Fig. 7, alpha drift, tau sensitivity
    "05_continued_training": 2,  # Fig. 8, each head during continued training
    "07_claims": 0,              # the claims table only
}
# ... and, besides the provenance table, a table whose header names each of these columns.
TABLES = {
    "01_motivation": ["paper protocol (%)", "val-chosen mu (%)", "paper (%)", "ours - paper", "backbone, normal cell"],
    "02_method": ["HLS factor", "Eq. (17) factor", "backbone arch lr", "corr(norm, mu)",
                  "corr(update, mu)"],
    "03_main_results": ["paper protocol (%)", "val-chosen mu (%)", "chosen mu", "head (%)", "tail (%)",
                        "paper (%)", "ours - paper", "(40)", "middle", "val-chosen, plain acc (%)",
                        "epochs"],
    "04_ablations": ["mu_test = 1 (%)", "mu_test = 0 (%)", "tau", "HLS factor at mu = 0.5"],
    "05_continued_training": ["paper protocol (%)", "paper (%)", "mu_test = 1 (%)", "mu_test = 0 (%)"],
    "07_claims": ["claim", "smoke"],
}
SMOKE_WARNING = "smoke profile: these numbers mean nothing, they only show that the code runs"


def chapter_id(path):
    return path.stem


def test_toc_lists_the_chapters_in_order():
    assert [p.stem for p in CHAPTERS] == list(FIGURES) == list(TABLES)


@pytest.mark.parametrize("chapter", CHAPTERS, ids=chapter_id)
def test_chapter_shows_provenance_and_glued_conclusions(chapter):
    """Provenance at the top, a closing 'What the reproduction shows' whose numbers are glued."""
    nb = nbformat.read(chapter, as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert any("plots.provenance(" in c for c in code[:3]), "no provenance table near the top"
    closing = [c for c in nb.cells if c.cell_type == "markdown" and "What the reproduction shows" in c.source]
    assert len(closing) == 1 and closing[0] is nb.cells[-1], "the last cell must be 'What the reproduction shows'"
    assert "{glue:text}" in closing[0].source
    # every glued name the text uses is glued by the notebook
    names = set(re.findall(r"\{glue:text\}`([A-Za-z0-9_]+)", "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")))
    glued = set(re.findall(r"""glue\(f?["']([A-Za-z0-9_{}]+)["']""", "\n".join(code)))
    literal = {g for g in glued if "{" not in g}
    patterns = [re.compile("^" + re.sub(r"\{[^}]*\}", "[A-Za-z0-9_]+", g) + "$") for g in glued - literal]
    missing = {n for n in names if n not in literal and not any(p.match(n) for p in patterns)}
    assert not missing, f"glued in the text but never glued: {sorted(missing)}"
    # notebooks never train: they read records (hls.plan.chapter_records) and draw (hls.plots)
    assert not any(re.search(r"get_run|Search\(|torch\.", c) for c in code)


@pytest.mark.parametrize("page, row_start, sep", [
    ("book/intro.md", "| `cpu`", " = "), ("README.md", "| `cpu`", "=")])
def test_the_cpu_profile_is_described_as_it_is(page, row_start, sep):
    from hls.experiments import PROFILES
    fields = PROFILES["cpu"]["fields"]
    text = (Path(__file__).parents[1] / page).read_text()
    row = next(line for line in text.splitlines() if line.startswith(row_start))
    for words in (f"C{sep}{fields['channels']}", f"{fields['layers']} cells of {fields['nodes']} nodes",
                  f"{fields['epochs']} first-order epochs", f"lr {fields['lr']}",
                  "flips only (no crops)" if fields["augment_pad"] == 0 else f"crops from {fields['augment_pad']}-pixel padding"):
        assert words in row, (page, words)


def test_book_folder_uses_the_top_level_config_and_toc():
    for name in ("_config.yml", "_toc.yml"):
        assert (book.BOOK / name).resolve() == (book.ROOT / name).resolve()
    execute = yaml.safe_load((book.ROOT / "_config.yml").read_text())["execute"]
    assert execute["raise_on_error"] is True and execute["allow_errors"] is False


@pytest.mark.parametrize("chapter", CHAPTERS, ids=chapter_id)
def test_first_code_cell_is_the_parameters_cell(chapter):
    nb = nbformat.read(chapter, as_version=4)
    first = next(cell for cell in nb.cells if cell.cell_type == "code")
    assert "parameters" in first.metadata.get("tags", [])
    assert PARAMETERS <= set(papermill.inspect_notebook(chapter))
    assert nb.metadata.kernelspec.name == "python3"


def test_run_book_rejects_an_unknown_parameter(tmp_path):
    with pytest.raises(ValueError, match=r"'epochs'.*valid parameters: profile, seeds, overrides"):
        book.run_book("smoke", out_dir=tmp_path, epochs=3)
    assert not any(tmp_path.iterdir())  # rejected before anything was copied or executed


@pytest.fixture(scope="session")
def smoke_env(tmp_path_factory):
    """HLS_PROFILE=smoke and one run store for every slow test, holding the smoke plan's runs
    (trained here: notebooks only read), the archive switched off."""
    from hls import plan, runs
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HLS_PROFILE", "smoke")
        mp.setenv("HLS_RUNS", str(tmp_path_factory.mktemp("runs")))
        mp.setenv("HLS_ARCHIVE", "off")
        mp.setenv("PATH", str(Path(sys.executable).parent), prepend=os.pathsep)
        for planned in plan.book_plan("smoke"):
            runs.get_run(planned.config, "cpu")
        yield


@pytest.mark.slow
def test_a_chapter_without_its_runs_names_the_launch_command(tmp_path, monkeypatch):
    """Neither in the run store nor in the archive: the chapter stops at once with one line
    saying which command makes the runs (and trains nothing)."""
    monkeypatch.setenv("HLS_RUNS", str(tmp_path / "empty"))
    monkeypatch.setenv("HLS_ARCHIVE", "off")
    with pytest.raises(papermill.PapermillExecutionError) as failure:
        book.execute_chapter(CHAPTERS[0], tmp_path / "out.ipynb", {"profile": "smoke"})
    assert failure.value.ename == "MissingRun"
    assert "python -m hls launch --profile smoke" in failure.value.evalue
    assert not (tmp_path / "empty").exists() or not any((tmp_path / "empty").iterdir())


@pytest.fixture(scope="session")
def executed(tmp_path_factory):
    """Where test_chapter_executes writes the executed chapters, for test_executed_chapters_render."""
    return tmp_path_factory.mktemp("executed")


def check_pages(html):
    """Every chapter page exists and shows its tables and figures, and no error output."""
    for chapter in CHAPTERS:
        page = html / chapter.relative_to(book.BOOK).with_suffix(".html")
        assert page.exists(), f"no page {page}"
        main = BeautifulSoup(page.read_text(), "html.parser").find("main")
        tables = main.select("table")
        assert tables, f"{page.name}: no table"
        assert any("provenance" in t.get_text() for t in tables), f"{page.name}: no provenance table"
        headers = " | ".join(th.get_text(" ", strip=True) for t in tables for th in t.select("th"))
        for column in TABLES[chapter.stem]:
            assert column in headers, f"{page.name}: no table with a column {column!r}; headers: {headers[:500]}"
        figures = main.select("div.cell_output img")
        assert len(figures) == FIGURES[chapter.stem], f"{page.name}: {len(figures)} figures"
        text = (main.select_one("article") or main).get_text(" ")   # not the "on this page" sidebar
        assert SMOKE_WARNING in text, f"{page.name}: no smoke warning"
        closing = text[text.rindex("What the reproduction shows"):]
        assert "glue" not in closing and re.search(r"\d+\.\d\d", closing), (
            f"{page.name}: closing paragraph lacks glued numbers:\n{closing[:1000]}"
        )
        for output in main.select("div.output.traceback, div.output.stderr"):
            text = output.get_text()
            assert "traceback" not in output["class"] and "Traceback" not in text and "Error" not in text, (
                f"{page.name} shows an error:\n{text[:2000]}"
            )


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS, ids=chapter_id)
def test_chapter_executes(chapter, smoke_env, executed):
    out = book.execute_chapter(chapter, executed / chapter.relative_to(book.BOOK), {"profile": "smoke"})
    nb = nbformat.read(out, as_version=4)
    assert not [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]


@pytest.mark.slow
def test_executed_chapters_render(smoke_env, executed):
    if not all((executed / c.relative_to(book.BOOK)).exists() for c in CHAPTERS):
        pytest.skip("needs every test_chapter_executes to pass first")
    book.copy_sources(executed)
    index = book.render(executed, label="smoke profile")
    assert index.exists()
    check_pages(index.parent)
    # Rendered, not executed again: the page shows papermill's injected parameters.
    page = index.parent / CHAPTERS[0].relative_to(book.BOOK).with_suffix(".html")
    assert BeautifulSoup(page.read_text(), "html.parser").select("div.cell.tag_injected-parameters")


@pytest.mark.slow
def test_jupyter_book_build(smoke_env, tmp_path):
    jb = shutil.which("jupyter-book", path=Path(sys.executable).parent) or "jupyter-book"
    build = subprocess.run(
        [jb, "build", "book/", "--path-output", str(tmp_path)],
        cwd=book.ROOT, capture_output=True, text=True,
    )
    assert build.returncode == 0, build.stdout[-5000:] + build.stderr[-5000:]
    check_pages(tmp_path / "_build" / "html")


def test_provenance_marks_a_record_the_current_code_would_not_reproduce():
    from types import SimpleNamespace

    from hls import plots, runs
    from hls.config import VERSION, RunConfig

    def record(fingerprint):
        facts = {"code_fingerprint": fingerprint, "hls": VERSION, "git_commit": "abc1234",
                 "device": "cpu", "wall_seconds": 1.0}
        return SimpleNamespace(config=RunConfig(), facts=facts, method="darts")
    here = runs.current_fingerprint()
    table = plots.provenance_table([record(here)], "smoke")
    assert table.loc["reproduced by this code", "value"].startswith("yes")
    table = plots.provenance_table([record(here), record("0123456789ab")], "smoke")
    assert table.loc["reproduced by this code", "value"].startswith("NO for 1 of 2")
