"""The papermill batch: every chapter at one profile, then the executed notebooks as HTML.

    run_book("cpu")  ->  book/_executed/cpu/chapters/*.ipynb  ->  book/_executed/cpu/_build/html/index.html

`jupyter-book build book/` executes the chapters itself (profile from HLS_PROFILE); this is the other
road: parameters given explicitly, and the executed notebooks kept next to their HTML. Either way
the notebooks only read run records: `run_book` first launches the runs the plan lacks
(hls.launch), so a profile or an override never seen before trains here, once, and a second call
trains nothing.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"


def chapter_notebooks(toc: Path = ROOT / "_toc.yml") -> list[Path]:
    """The chapter notebooks that `toc` lists, in its order (the root page is not a chapter)."""
    import yaml

    def files(entry: dict):
        if "file" in entry:
            yield entry["file"]
        for key in ("parts", "chapters", "sections"):
            for child in entry.get(key, []):
                yield from files(child)

    paths = [BOOK / (f if Path(f).suffix else f + ".ipynb") for f in files(yaml.safe_load(toc.read_text()))]
    return [p for p in paths if p.suffix == ".ipynb" and p.exists()]


def check_parameters(notebooks: list[Path], parameters: dict) -> None:
    """Raise ValueError naming the first parameter that a notebook's `parameters` cell does not define."""
    import papermill

    for notebook in notebooks:
        valid = papermill.inspect_notebook(notebook)
        for name in parameters:
            if name not in valid:
                raise ValueError(
                    f"unknown notebook parameter {name!r} for {notebook.relative_to(BOOK)}; "
                    f"valid parameters: {', '.join(valid) or 'none (no cell tagged parameters)'}"
                )


def execute_chapter(notebook: Path, output: Path, parameters: dict) -> Path:
    """Run one notebook with papermill in its own folder; its outputs stream to this process's stdout/stderr."""
    import papermill

    import nbformat

    output.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        notebook, output, parameters=parameters, kernel_name="python3", cwd=notebook.parent,
        progress_bar=False, stdout_file=sys.stdout, stderr_file=sys.stderr,
    )
    # the cell papermill injects is code like the parameters cell it follows: behind the
    # page's toggle too (README, "Writing a chapter")
    nb = nbformat.read(output, as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags and "hide-input" not in tags:
            cell.metadata["tags"] = [*tags, "hide-input"]
    nbformat.write(nb, output)
    return output


def copy_sources(out_dir: Path) -> None:
    """Copy the book's pages other than the notebooks (intro, notes, references.bib, _static,
    _ext) into `out_dir`."""
    shutil.copytree(
        BOOK, out_dir, dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("_build", "_executed", ".ipynb_checkpoints", "*.ipynb", "_config.yml", "_toc.yml"),
    )


def render(out_dir: Path, label: str | None = None) -> Path:
    """Build the notebooks already executed under `out_dir` into HTML without running them again."""
    import yaml

    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"] = {**config.get("execute", {}), "execute_notebooks": "off"}
    if label:
        config["title"] += f" ({label})"
    (out_dir / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    shutil.copyfile(ROOT / "_toc.yml", out_dir / "_toc.yml")
    jb = shutil.which("jupyter-book", path=Path(sys.executable).parent) or "jupyter-book"
    if subprocess.run([jb, "build", str(out_dir)]).returncode:
        raise RuntimeError(f"jupyter-book build {out_dir} failed; its log is above")
    return out_dir / "_build" / "html" / "index.html"


def run_book(
    profile: str,
    seeds=None,
    device=None,
    overrides: dict | None = None,
    out_dir=None,
    build: bool = True,
    workers: int = 1,
    **parameters,
) -> Path:
    """Launch the plan's missing runs (on `device`, `workers` at a time), then execute every
    chapter at `profile` into out_dir (default book/_executed/<profile>) and render it.

    seeds, overrides and any further `parameters` go to every chapter's `parameters` cell;
    left out (None), a chapter uses its own default. Returns the HTML index (with build=False:
    the folder of executed notebooks).
    """
    params = {"profile": profile, "seeds": seeds, "overrides": overrides, **parameters}
    params = {name: value for name, value in params.items() if value is not None}
    notebooks = chapter_notebooks()
    check_parameters(notebooks, params)

    from .launch import launch
    result = launch(profile, seeds=seeds, overrides=overrides, workers=workers, device=device)
    if not result.ok:
        raise RuntimeError(f"{len(result.failed)} run(s) of the {profile} plan failed; their "
                           "logs are named in the table above")

    out_dir = Path(out_dir) if out_dir is not None else BOOK / "_executed" / profile
    copy_sources(out_dir)
    for i, notebook in enumerate(notebooks, 1):
        name = notebook.relative_to(BOOK)
        print(f"[{i}/{len(notebooks)}] {name} (profile {profile})", flush=True)
        execute_chapter(notebook, out_dir / name, params)
    if not build:
        return out_dir
    return render(out_dir, label=f"{profile} profile")
