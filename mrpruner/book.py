"""Build the Jupyter Book: papermill executes every notebook of notebooks/ into book/, then
Jupyter Book renders the HTML without executing anything; `python -m mrpruner.book --help`.

Also a Sphinx extension (listed in _config.yml): the repository, issue and launch buttons are
shown with a repository URL (_config.yml `repository.url`) and hidden without one; Colab buttons
open the clean source notebook in notebooks/ instead of the executed copy; MathJax is served from
the build (django-static-mathjax's copy, when installed) so equations render offline; an executed
notebook holding an error output fails the build (a warning, which `-W` turns into an error);
docstrings, written as plain text, are shown verbatim in the API reference rather than parsed as
reStructuredText.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mrpruner.results import atomic_write_bytes

EXECUTION_TIMEOUT = 900  # seconds per cell: a guard against hangs, far above what any default cell needs
HIDDEN_TAG = "remove-cell"
SOURCE_DIR, BOOK_DIR, HTML_DIR = "notebooks", "book", "_build/html"
BUILT = ".built"  # the stamp a finished HTML build leaves in HTML_DIR
CHAPTER_ENV = "MRPRUNER_CHAPTER"  # the chapter `execute` runs, for the kernel's parameters_box
LEGENDS_KEY = "mrpruner_legends"  # an executed notebook's metadata: each figure's legend entries


def source_notebooks(root: str | Path = ".") -> list[Path]:
    """The chapters' source notebooks (notebooks/*.ipynb), sorted by name."""
    return sorted((Path(root) / SOURCE_DIR).glob("*.ipynb"))


def execute(notebook: str | Path, root: str | Path = ".", parameters: Mapping[str, Any] | None = None,
            timeout: int = EXECUTION_TIMEOUT) -> Path:
    """Run one source notebook with papermill (kernel python3, cwd = root) into book/NAME.ipynb.

    The executed copy is written to a temporary file and moved into place only when every cell
    has run: a failed or interrupted run leaves the previous book/NAME.ipynb as it was.
    Papermill's injected-parameters cell is tagged remove-cell, like the parameters cell. The
    legend entries of every figure the chapter draws (`mrpruner.plotting.legend_entries`) are kept
    in the executed copy's metadata under LEGENDS_KEY, for the palette's check of the whole book.
    """
    import nbformat
    import papermill

    from mrpruner.plotting import LEGENDS_ENV

    notebook, root = Path(notebook), Path(root)
    target = root / BOOK_DIR / notebook.name
    handle, legends = tempfile.mkstemp(suffix=".jsonl", prefix="legends-")
    os.close(handle)
    saved = {name: os.environ.get(name) for name in (CHAPTER_ENV, LEGENDS_ENV)}
    os.environ[CHAPTER_ENV] = notebook.stem  # the kernel inherits it: parameters_box names the chapter
    os.environ[LEGENDS_ENV] = legends  # and the file the figures' legends go to
    try:
        executed = papermill.execute_notebook(
            str(notebook), None, parameters=dict(parameters or {}) or None, kernel_name="python3",
            execution_timeout=timeout, cwd=str(root), progress_bar=False)
        executed.metadata[LEGENDS_KEY] = [json.loads(line) for line in Path(legends).read_text().splitlines()]
    finally:
        Path(legends).unlink(missing_ok=True)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    for cell in executed.cells:
        tags = cell.metadata.setdefault("tags", [])
        if "injected-parameters" in tags and HIDDEN_TAG not in tags:
            tags.append(HIDDEN_TAG)
    atomic_write_bytes(target, nbformat.writes(executed).encode())
    return target


def build_html(root: str | Path = ".") -> Path:
    """`jupyter-book build ROOT -W --keep-going`: any warning (a missing notebook, a broken
    reference, an error output) fails the build; a successful one touches HTML_DIR/BUILT. Returns
    the HTML folder."""
    root = Path(root)
    script = Path(sys.executable).with_name("jupyter-book")
    command = str(script) if script.exists() else shutil.which("jupyter-book")
    if command is None:
        raise FileNotFoundError("jupyter-book not found: install the book extra (pip install -e '.[book]')")
    subprocess.run([command, "build", str(root), "-W", "--keep-going"], check=True)
    (root / HTML_DIR / BUILT).touch()  # Sphinx leaves unchanged pages untouched: this says when the build ended
    return root / HTML_DIR


def build(root: str | Path = ".", *, only: Sequence[str] = (), html: bool = True,
          parameters: Mapping[str, Any] | None = None) -> Path | None:
    """Execute the chapters (all, or those named in `only`) and build the HTML; returns its folder
    (None with html=False). `parameters` override the notebooks' defaults (for --only runs)."""
    root = Path(root)
    notebooks = source_notebooks(root)
    if not notebooks:
        raise FileNotFoundError(f"no notebooks in {root / SOURCE_DIR}: run from the repository root")
    names = [nb.stem for nb in notebooks]
    unknown = sorted(set(only) - set(names))
    if unknown:
        raise ValueError(f"only: unknown chapter(s) {unknown}; the chapters are {names}")
    if parameters and not only:
        raise ValueError("parameters apply to one chapter's notebook: name it with only (--only NAME)")
    if parameters:
        import papermill

        for nb in (nb for nb in notebooks if nb.stem in only):
            known = papermill.inspect_notebook(str(nb))
            unknown = sorted(set(parameters) - set(known))
            if unknown:
                raise ValueError(f"parameters: {unknown} are not parameters of {nb.name}; it takes {sorted(known)}")
    missing = [name for name in names if name not in only and not (root / BOOK_DIR / f"{name}.ipynb").exists()]
    if html and only and missing:
        raise FileNotFoundError(f"chapters {missing} were never executed: run without only (--only) first")
    for nb in notebooks:
        if not only or nb.stem in only:
            print(f"executing {nb} -> {BOOK_DIR}/{nb.name}", end=" ", flush=True)
            start = time.perf_counter()
            execute(nb, root, parameters)
            print(f"({time.perf_counter() - start:.0f} s)", flush=True)
    return build_html(root) if html else None


def check_params(*, device: str | None = None, methods: Sequence[str] = (), ratios: Sequence[float] = (),
                 limit: int | None = None, known_methods: Sequence[str] | None = None,
                 ablations: Sequence[str] = (), protocol: str | None = None, tasks: Sequence[str] = (),
                 samples: int | None = None, include_path: str | None = None,
                 model: str | Sequence[str] | None = None, several_models: bool = False, also: Sequence = ()) -> None:
    """Stop a notebook in its first cell, with a clear message, on parameters that cannot work:
    an unknown method or Table 3 row, a pruning ratio outside [0, 1), a non-positive limit or
    sample count, an unknown budget protocol, a CUDA device on a machine without one, tasks that
    are not a list of task names, an include_path that is no folder, or a model that is none of
    the forms `mrpruner.models` accepts (with several_models, a list of them may stand for one:
    a sweep chapter's model axis), or `also` that is not a list of [model, tasks] pairs of such
    models and tasks. Methods: "none" and
    mrpruner.methods.table() unless known_methods is given. (Whether lmms-eval knows a task is
    checked when it is loaded: that needs lmms-eval's task index.)"""
    from mrpruner.benchmarks import task_name
    from mrpruner.checks import check_count, check_device, check_protocol, check_ratio

    if protocol is not None:
        check_protocol(protocol)
    if model is not None:
        from mrpruner.models import check_model, check_models

        check_models(model) if several_models else check_model(model)

    if device is not None:
        if not isinstance(device, str):
            raise TypeError(f"device must be a string such as 'cpu' or 'cuda', got {device!r}")
        check_device(device)
    if known_methods is None and methods:
        from mrpruner.lmms_eval_model import NO_PRUNING
        from mrpruner.methods import table

        known_methods = (NO_PRUNING, *table())
    for method in methods:
        if method not in known_methods:
            raise ValueError(f"methods: unknown method {method!r}; the methods are {sorted(known_methods)}")
    for i, ratio in enumerate(ratios):
        check_ratio(ratio, f"ratios[{i}]")
    if limit is not None:
        check_count("limit", limit, 1, 2**31)
    if samples is not None:
        check_count("samples", samples, 1, 2**31)
    if ablations:
        from mrpruner.paper import ABLATIONS

        for row in ablations:
            if row not in ABLATIONS:
                raise ValueError(f"ablations: unknown Table 3 row {row!r}; the rows are {list(ABLATIONS)}")
    if isinstance(tasks, str):
        raise TypeError(f"tasks must be a list of task names, got the string {tasks!r}")
    for task in tasks:
        task_name(task)
    for pair in also:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ValueError(f"also must be a list of [model, tasks] pairs, got the item {pair!r}")
        check_params(model=pair[0], tasks=pair[1], several_models=several_models)
    if include_path is not None and not Path(include_path).is_dir():
        raise ValueError(f"include_path must be a folder of lmms-eval task YAMLs or None, got {include_path!r}, "
                         "which is no folder")


def model_note(model: str | Sequence[str], net=None, sweep: str | None = None, gpu: bool = True) -> Any:
    """What the page's numbers are facts about, as a note computed from the `model` parameter (and
    the loaded model `net`, else its checkpoint, for its size): the miniature(s) and the task they
    were trained on, the random smoke-test model, or the named model(s); with a `sweep` (a shipped
    sweep's name or a YAML), how its methods' budgets compare (its protocol); with `gpu`, for the
    miniatures, the parameter that runs the same cells on LLaVA-NeXT-8B (once per page is enough)."""
    from IPython.display import Markdown

    from mrpruner.models import TINY, TINY_MODELS, miniature

    names = [str(model)] if isinstance(model, (str, Path)) else [str(name) for name in model]
    first = names[0]
    if net is None and (miniature(first) or first in TINY_MODELS):
        from mrpruner.models import load as load_model

        net, _ = load_model(first)
    size = "" if net is None else f"{sum(p.numel() for p in net.parameters()) / 1e6:.1f} M-parameter "
    if all(miniature(name) for name in names):
        from mrpruner.mini import RECIPES

        tasks = sorted({RECIPES[name][0] for name in names})
        task_words = " and ".join(f"\"{task}\"" for task in tasks)
        if len(names) == 1:
            questions = " The questions: " + " ".join(
                f"on \"{task}\", " + (
                    "*overview* questions (which photo, the big shape's colour: the low-resolution base image "
                    "answers them) and *detail* questions (a small mark's pattern: only the high-resolution "
                    "grid resolves them)." if task == "marks" else
                    "*overview* questions (the form of a big shape drawn across the grid's tiles, which only the "
                    "base image sees whole; trained with decoy grids, so only the base answers them) and "
                    "*detail* questions (a small mark's pattern: only the high-resolution grid resolves them).")
                for task in tasks)
            text = (f"Measured on the miniature trained here (`model=\"{first}\"`): a {size}LLaVA-NeXT with the real "
                    f"token layout, trained on the generated task {task_words}, where the tokens that hold each answer "
                    f"are known.{questions} Its numbers are facts about the miniature, not about LLaVA-NeXT-8B on the "
                    "paper's benchmarks. Its 95% intervals are bootstrapped over the test questions: they say nothing "
                    "about another training run ({doc}`rule`).")
        else:
            short = " ".join(
                f"On \"{task}\", *overview* questions " + ("(the base image answers them)" if task == "marks" else
                                                           "(a shape only the base image sees whole)")
                + " and *detail* questions (only the grid resolves them)." for task in tasks)
            listed = ", ".join(f"`{name}`" for name in names)
            text = (f"Measured on {len(names)} miniatures trained here by one recipe with different seeds ({listed}): "
                    f"{size}LLaVA-NeXTs with the real token layout, trained on the generated task {task_words}. "
                    f"{short} Figures draw each model and their mean; intervals cover the models and their "
                    "questions ({doc}`rule`). Facts about the miniatures, not about LLaVA-NeXT-8B on the paper's "
                    "benchmarks.")
        if gpu:
            text += " On a GPU, `-p model llava-hf/llama3-llava-next-8b-hf` runs the same cells on it."
    elif names == [TINY]:
        text = (f"A smoke test (`model=\"tiny\"`): a {size}LLaVA-NeXT with the real architecture and random "
                "weights. It shows that every cell runs; none of its numbers is a finding.")
    elif all(name in TINY_MODELS for name in names):
        listed = ", ".join(f"`{name}`" for name in names)
        text = (f"Built on random tiny models ({listed}, `mrpruner.testing`): each has the real checkpoint's "
                "structure (tile size, base and grid tokens, pinpoints or tile counts, newline and thumbnail rules) "
                "at toy width, with random weights. What follows from the structure is a fact about the real "
                "models: where each resolution's tokens sit, how many there are, how many each method keeps. Which "
                "tokens a method keeps, and how Eq. 4 splits the budget, depend on the features, so here they show "
                "the mechanism on random features, not what a trained model keeps. On a GPU, name the real "
                "checkpoints in `models`.")
    else:
        text = ("Measured on " + ", ".join(f"`{name}`" for name in names) + (f" ({size.strip()})" if size else "")
                + ", with the parameters above.")
    if sweep is not None:
        from mrpruner.sweep.grid import grid_from_config, load_config

        protocol = grid_from_config(load_config(sweep)).protocol
        text += (" One budget for all methods (`protocol: exact`)." if protocol == "exact" else
                 " Each method on the budget its authors' code used (`protocol: paper`).")
    return Markdown(f":::{{note}}\n{text}\n:::")


def repository_url(config) -> str:
    """The repository URL of the book's Sphinx config ("" when _config.yml leaves it unset)."""
    return (config.html_theme_options or {}).get("repository_url") or ""


def _buttons_follow_repository(app, config) -> None:
    """With a repository URL, show the repository and issue buttons; without one, no repository,
    issue, edit, source or launch button (Jupyter Book refuses buttons without a URL, so
    _config.yml cannot ask for them itself)."""
    options = config.html_theme_options
    published = bool(repository_url(config))
    options["use_repository_button"] = options["use_issues_button"] = published
    if not published:
        options["use_edit_page_button"] = options["use_source_button"] = False
        options["launch_buttons"] = {}


def parameters_box(**values: Any):
    """The page's build parameters (name=value, as the notebook ran) as a visible note; each folder
    or file of a *_dir, *_file or saved_results parameter also says whether it existed. Returns an
    HTML display object."""
    from html import escape

    from IPython.display import HTML

    def shown(name: str, value: Any) -> str:
        text = f"<code>{escape(repr(value))}</code>"
        if name.endswith(("_dir", "_file")) or name == "saved_results":
            paths = [value] if isinstance(value, str) else list(value or [])
            text += "".join(f"<br><small><code>{escape(path)}</code>: "
                            f"{'exists' if Path(path).exists() else 'absent'} when the page was built</small>"
                            for path in paths if path)
        return text

    rows = "".join(f"<tr><th><code>{escape(name)}</code></th><td>{shown(name, value)}</td></tr>"
                   for name, value in values.items())
    chapter = os.environ.get(CHAPTER_ENV, "CHAPTER")
    return HTML('<div class="admonition note"><p class="admonition-title">Build parameters of this page</p>'
                f'<table class="table">{rows}</table>'
                f"<p>Change them with <code>python -m mrpruner.book --only {escape(chapter)} -p PARAMETER VALUE</code>"
                ".</p></div>")


def text_table(frame, caption: str):
    """A DataFrame of words as the book shows it: the caption on top, like
    `mrpruner.plotting.table`'s, and cells that wrap at the text column between words, left-aligned
    and top-aligned (plotting.table sizes columns to their longest entry and splits a frame too
    wide into parts, which suits numbers, not sentences). Returns a pandas Styler."""
    return frame.style.set_caption(caption).set_table_styles([
        {"selector": "", "props": "font-size: 0.85em;"},
        {"selector": "th, td", "props": "padding: 0.3em 0.6em; text-align: left; vertical-align: top; "
                                        "white-space: normal; overflow-wrap: break-word;"},
        {"selector": "caption", "props": "caption-side: top; text-align: left; font-size: 1em;"},
    ])


MATHJAX_PATH = "mathjax/tex-mml-chtml.js"  # under _static/ of the HTML
# What the pages use of MathJax's es5 folder: the component, its fonts, TeX extensions it loads on
# demand, the menu and its accessibility parts (not the speech rule maps, 4 MB).
MATHJAX_FILES = ("tex-mml-chtml.js", "output/chtml/fonts/woff-v2", "input/tex/extensions", "ui", "a11y")


def mathjax_source() -> Path | None:
    """MathJax 3's es5 folder as the django-static-mathjax package installs it (module `mathjax`);
    None when it is not installed (the pages then load MathJax from a CDN)."""
    spec = importlib.util.find_spec("mathjax")
    if spec is None or not spec.submodule_search_locations:
        return None
    es5 = Path(next(iter(spec.submodule_search_locations)), "static", "mathjax", "es5")
    return es5 if (es5 / MATHJAX_FILES[0]).is_file() else None


def _local_mathjax(app, config) -> None:
    """Point the pages at the MathJax copied into _static (when there is one to copy)."""
    if mathjax_source() is not None:
        config.mathjax_path = MATHJAX_PATH


def _copy_mathjax(app, exception) -> None:
    """Copy MathJax's files into the HTML's _static/mathjax after a successful build."""
    source = mathjax_source()
    if exception is not None or source is None or app.builder.format != "html":
        return
    target = Path(app.outdir, "_static", Path(MATHJAX_PATH).parent)
    for name in MATHJAX_FILES:
        if (source / name).is_dir():
            shutil.copytree(source / name, target / name, dirs_exist_ok=True)
        else:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / name, target / name)
    shutil.copy2(source.parent / "LICENSE", target / "LICENSE")


def _colab_opens_source(app, pagename, templatename, context, doctree) -> None:
    """The Colab button of book/NAME opens notebooks/NAME.ipynb (clean, with its parameters cell)."""
    prefix = f"/{BOOK_DIR}/"
    for group in context.get("header_buttons", []):
        for button in group.get("buttons", []):
            if button.get("text") == "Colab" and prefix in button.get("url", ""):
                button["url"] = button["url"].replace(prefix, f"/{SOURCE_DIR}/", 1)


def _warn_on_error_outputs(app, docname: str, source: list[str]) -> None:
    """A chapter whose executed notebook holds an error output, or a warning printed where readers
    see it (stderr), fails the build under -W."""
    from sphinx.util import logging

    if not app.env.doc2path(docname).endswith(".ipynb"):
        return
    for cell in json.loads(source[0]).get("cells", []):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                logging.getLogger(__name__).warning(
                    f"{docname}.ipynb holds an error output ({output.get('ename')}: {output.get('evalue')}); "
                    "re-run python -m mrpruner.book", location=docname)
            text = "".join(output.get("text", ""))
            if output.get("name") == "stderr" and "Warning" in text:
                logging.getLogger(__name__).warning(
                    f"{docname}.ipynb prints a warning on the page: {text.strip().splitlines()[0][:200]}",
                    location=docname)


def _verbatim_docstring(app, what, name, obj, options, lines: list[str]) -> None:
    """Show a plain-text docstring as a text block (no reStructuredText markup to trip on); drop
    the "Alias for field number N" that every NamedTuple field carries."""
    if len(lines) == 1 and lines[0].startswith("Alias for field number"):
        lines.clear()
    elif any(line.strip() for line in lines):
        lines[:] = [".. code-block:: text", ""] + [f"   {line}" if line else "" for line in lines] + [""]


def _book_css(app, config) -> None:
    """Serve and link the book's stylesheet (mrpruner/data/book/mrpruner.css)."""
    from importlib import resources

    config.html_static_path.append(str(resources.files("mrpruner").joinpath("data/book")))
    app.add_css_file("mrpruner.css")


def setup(app) -> dict[str, bool]:
    """Sphinx entry point (sphinx.extra_extensions in _config.yml)."""
    app.connect("config-inited", _buttons_follow_repository)
    app.connect("config-inited", _book_css)
    app.connect("config-inited", _local_mathjax)
    app.connect("build-finished", _copy_mathjax)
    app.connect("html-page-context", _colab_opens_source, priority=900)
    app.connect("source-read", _warn_on_error_outputs)
    app.connect("autodoc-process-docstring", _verbatim_docstring)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mrpruner.book", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=".", help="repository root holding notebooks/, book/ and _config.yml")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="execute only this chapter (repeatable); the others keep their executed copies")
    parser.add_argument("--no-build", action="store_true", help="execute the notebooks only, no HTML")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="override a notebook parameter (VALUE read as YAML: cuda, 0.9, [0.5, 0.9]); needs --only")
    args = parser.parse_args(argv)
    import yaml

    parameters = {name: yaml.safe_load(value) for name, value in args.parameter}
    try:
        out = build(args.root, only=args.only, html=not args.no_build, parameters=parameters)
    except subprocess.CalledProcessError as error:
        sys.exit(f"python -m mrpruner.book: the HTML build failed (exit {error.returncode}); its warnings are above")
    if out is not None:
        print(f"book built: {out / 'index.html'}")


if __name__ == "__main__":
    main()
