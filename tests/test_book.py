"""The book: papermill execution is all-or-nothing, and the built site works in a real browser
(headless Chromium from Debian: `apt-get install -y chromium chromium-driver`).

The site is built with `mrpruner.book.build` (every notebook executed with its defaults, then
`jupyter-book build . -W`), unless `_build/html` is newer than every input of the book. The browser
test saves a full-page screenshot of every page, to be checked by eye (overlapping labels, text
too small), into $MRPRUNER_SCREENSHOTS, else a pytest temporary folder: never into the repository.
"""

import functools
import http.server
import importlib
import json
import logging
import os
import re
import shutil
import threading
import urllib.parse
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
import yaml

from mrpruner import book, plotting, results

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / book.HTML_DIR
REPOSITORY_URL = (yaml.safe_load((ROOT / "_config.yml").read_text()).get("repository") or {}).get("url")
INVENTED_URL = "github.com/" + "mrpruner/mrpruner"  # the made-up address the book once used
INPUTS = ("_config.yml", "_toc.yml", "notebooks/*.ipynb", "book/*.md", "book/*.bib", "mrpruner/**/*.py",
          "mrpruner/data/**/*")


def _notebook(path: Path, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]})]
    nb.cells += [nbformat.v4.new_code_cell(source) for source in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


@pytest.fixture
def tiny_book(tmp_path):
    (tmp_path / book.SOURCE_DIR).mkdir()
    (tmp_path / book.BOOK_DIR).mkdir()
    return tmp_path


def test_execute_writes_the_executed_notebook_and_hides_the_injected_parameters(tiny_book):
    source = _notebook(tiny_book / "notebooks" / "ok.ipynb", "print(x * 2)")
    out = book.execute(source, tiny_book, parameters={"x": 21})
    cells = nbformat.read(str(out), 4).cells
    injected = [c for c in cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and book.HIDDEN_TAG in injected[0].metadata.tags
    assert cells[-1].outputs[0].text == "42\n"
    assert sorted(p.name for p in (tiny_book / "book").iterdir()) == ["ok.ipynb"]


def test_a_failing_notebook_leaves_the_previous_executed_copy_untouched(tiny_book):
    import papermill

    source = _notebook(tiny_book / "notebooks" / "bad.ipynb", "raise ValueError('device: no GPU here')")
    previous = tiny_book / "book" / "bad.ipynb"
    previous.write_text("previous build")
    with pytest.raises(papermill.PapermillExecutionError, match="no GPU here"):
        book.execute(source, tiny_book)
    assert previous.read_text() == "previous build"
    assert sorted(p.name for p in (tiny_book / "book").iterdir()) == ["bad.ipynb"]


def test_build_names_unknown_chapters_and_unexecuted_ones(tiny_book):
    _notebook(tiny_book / "notebooks" / "a.ipynb")
    _notebook(tiny_book / "notebooks" / "b.ipynb")
    with pytest.raises(ValueError, match=r"unknown chapter\(s\) \['c'\]"):
        book.build(tiny_book, only=["c"])
    with pytest.raises(ValueError, match="needs --only|name it with only"):
        book.build(tiny_book, parameters={"x": 2})
    with pytest.raises(FileNotFoundError, match=r"chapters \['b'\] were never executed"):
        book.build(tiny_book, only=["a"])
    with pytest.raises(ValueError, match=r"\['devce'\] are not parameters of a.ipynb; it takes \['x'\]"):
        book.build(tiny_book, only=["a"], parameters={"devce": "cuda"})


def test_an_error_output_in_an_executed_notebook_is_a_build_warning(caplog):
    app = SimpleNamespace(env=SimpleNamespace(doc2path=lambda name: f"/repo/{name}.ipynb"))
    cells = [{"cell_type": "code", "outputs": [{"output_type": "stream", "text": "fine"}]},
             {"cell_type": "code", "outputs": [{"output_type": "error", "ename": "ValueError", "evalue": "boom"}]}]
    with caplog.at_level(logging.WARNING):
        book._warn_on_error_outputs(app, "book/flops", [json.dumps({"cells": cells[:1]})])
        assert not caplog.records
        book._warn_on_error_outputs(app, "book/flops", [json.dumps({"cells": cells})])
    assert [r.getMessage() for r in caplog.records] == [
        "book/flops.ipynb holds an error output (ValueError: boom); re-run python -m mrpruner.book"]
    caplog.clear()
    warned = [{"cell_type": "code", "outputs": [{"output_type": "stream", "name": "stderr",
                                                 "text": ["/x/formatters.py:436: FormatterWarning: text/latex\n"]}]}]
    with caplog.at_level(logging.WARNING):
        book._warn_on_error_outputs(app, "book/claims", [json.dumps({"cells": warned})])
    assert [r.getMessage() for r in caplog.records] == [
        "book/claims.ipynb prints a warning on the page: /x/formatters.py:436: FormatterWarning: text/latex"]


def test_docstrings_are_shown_verbatim():
    lines = ["Keep |x| tokens; *not* markup:", "    indented"]
    book._verbatim_docstring(None, "function", "f", None, {}, lines)
    assert lines == [".. code-block:: text", "", "   Keep |x| tokens; *not* markup:", "       indented", ""]
    alias = ["Alias for field number 0"]
    book._verbatim_docstring(None, "attribute", "T.a", None, {}, alias)
    assert alias == []


def test_every_chapter_has_a_clean_source_notebook_with_parameters_first():
    chapters, notebooks = _chapters(), [p.stem for p in book.source_notebooks(ROOT)]
    assert set(notebooks) <= set(chapters), "a notebook missing from _toc.yml"
    for page in chapters:
        assert (ROOT / "book" / f"{page}.md").exists() or page in notebooks, f"no source for chapter {page}"
    for path in book.source_notebooks(ROOT):
        nb = nbformat.read(str(path), 4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert "parameters" in code[0].metadata.get("tags", []), path
        assert book.HIDDEN_TAG in code[0].metadata["tags"], path
        assert not any(c.outputs or c.execution_count for c in code), f"{path} has outputs"
        assert any("check_params(" in c.source for c in code[:3]), f"{path} does not check its parameters first"


def _chapters() -> list[str]:
    """Page names of the book in _toc.yml order: the root, then every chapter."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    return [Path(toc["root"]).name] + [Path(c["file"]).name for part in toc["parts"] for c in part["chapters"]]


def _fresh() -> bool:
    """A finished build (its stamp) newer than every input."""
    stamp = HTML / book.BUILT
    if not stamp.exists():
        return False
    newest = max(p.stat().st_mtime for pattern in INPUTS for p in ROOT.glob(pattern) if p.is_file())
    return stamp.stat().st_mtime > newest


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def site():
    """The built site served on 127.0.0.1 (built first unless a fresh build exists)."""
    if not _fresh():
        book.build(ROOT)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(HTML)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver

    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.fail("headless Chromium is needed: apt-get install -y chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1280,900"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    """The folder of the pages' screenshots: $MRPRUNER_SCREENSHOTS, else a pytest temporary folder."""
    folder = Path(os.environ.get("MRPRUNER_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots")).resolve()
    assert ROOT not in (folder, *folder.parents), f"screenshots stay out of the repository, not in {folder}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _screenshot(browser, path: Path) -> None:
    """The whole page as a PNG: the window made as tall as the page for the shot (Chromium's
    capture beyond the viewport lays some pages out shifted), then restored."""
    size = browser.get_window_size()
    chrome, height = browser.execute_script("return [window.outerHeight - window.innerHeight, "
                                            "document.documentElement.scrollHeight]")
    browser.set_window_size(size["width"], height + chrome)
    try:
        browser.save_screenshot(str(path))
    finally:
        browser.set_window_size(size["width"], size["height"])


IMAGES_LOADED = """
const images = Array.from(document.images);
await Promise.all(images.map(img => img.complete ? null : new Promise(done => {
  img.addEventListener('load', done); img.addEventListener('error', done); })));
return images.map(img => [img.currentSrc || img.src, img.naturalWidth, img.getBoundingClientRect().width]);
"""
ERRORS = ".output.traceback, .output.error, div.cell_output .error"
# Tables (and printed lines) wider than the text column (or, in a cell tagged full-width, than that
# cell), which the page would have to scroll sideways.
TOO_WIDE = """
const column = document.querySelector('article').clientWidth;
return Array.from(document.querySelectorAll('article table, article div.cell_output pre'))
  .map(e => [Math.round(e.scrollWidth), (e.caption ? e.caption.textContent : e.textContent).trim().slice(0, 70),
             e.closest('.tag_full-width') ? e.closest('.tag_full-width').clientWidth : column])
  .filter(([width, , room]) => width > room + 1).map(([width, text]) => [width, text])
  .concat([[column, 'column']]);"""


# Code blocks (cells' inputs, fenced blocks of the prose) that scroll sideways in their own box.
CODE_SCROLLS = """return Array.from(document.querySelectorAll('article div.cell_input pre, article div.highlight pre'))
  .filter(e => e.scrollWidth > e.clientWidth + 1)
  .map(e => [e.scrollWidth, e.clientWidth, e.textContent.trim().slice(0, 60)]);"""


@pytest.mark.slow
@pytest.mark.parametrize("page", ["index"] + _chapters())
def test_page_loads_every_image_and_shows_no_error(site, browser, screenshots, page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url = f"{site}/index.html" if page == "index" else f"{site}/{book.BOOK_DIR}/{page}.html"
    browser.get_log("browser")  # drop what earlier pages logged
    browser.get(url)
    # index.html redirects to the intro: wait (up to 30 s) until the page with the article has loaded.
    WebDriverWait(browser, 30).until(lambda d: d.execute_script("return document.readyState") == "complete"
                                     and d.find_elements(By.CSS_SELECTOR, "article h1"))
    title = browser.find_element(By.CSS_SELECTOR, "article h1").text  # index redirects to the intro
    assert title, f"{url} has no heading"
    images = browser.execute_script(f"return (async () => {{{IMAGES_LOADED}}})()")
    broken = [src for src, width, _ in images if width == 0]
    assert not broken, f"{url}: images that did not load: {broken}"
    _screenshot(browser, screenshots / f"{page}.png")
    *wide, (column, _) = browser.execute_script(TOO_WIDE)
    assert not wide, f"{url}: wider than the text column ({column} px): {wide}"
    scrolled = browser.execute_script(CODE_SCROLLS)
    assert not scrolled, f"{url}: code that scrolls sideways (px needed, px shown, start): {scrolled}"
    # Figures are drawn plotting.PAGE_PX wide so that their text keeps its size: none is shrunk to fit.
    shrunk = [(Path(src).name, natural, round(shown)) for src, natural, shown in images
              if "/_images/" in src and shown < 0.9 * natural]
    assert not shrunk, f"{url}: figures shown at under 90% of their size (file, px drawn, px shown): {shrunk}"
    errors = browser.find_elements(By.CSS_SELECTOR, ERRORS)
    assert not errors, f"{url} shows error output: {errors[0].text[:500]}"
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "Traceback (most recent call last)" not in body
    assert "{doc}`" not in body and "{glue:" not in body, f"{url}: a MyST role left unrendered (in a table caption?)"
    # Issue 31: a table of unmeasured cells is a sentence, and a published page says "uncommitted changes"
    assert body.count("not measured") <= 10, f"{url}: {body.count('not measured')} cells say 'not measured'"
    assert "+dirty" not in body, f"{url}: a commit shown as '+dirty'"
    missing = [e["message"] for e in browser.get_log("browser") if "Failed to load resource" in e["message"]
               and site in e["message"] and "/favicon.ico" not in e["message"]]
    assert not missing, f"{url}: files of the site that did not load: {missing}"
    if page in [p.stem for p in book.source_notebooks(ROOT)]:
        if page != _chapters()[0]:  # the root page (the intro's findings) draws no figure
            assert any(src.endswith(".png") for src, _, _ in images), f"{url}: a chapter without a figure"
        column = browser.execute_script("return document.querySelector('article div.cell_output').clientWidth")
        assert column >= plotting.PAGE_PX, f"{url}: outputs get {column} px; figures are {plotting.PAGE_PX} px wide"
        assert browser.find_elements(By.XPATH, "//article//p[@class='admonition-title' and "
                                               "text()='Build parameters of this page']"), f"{url}: no parameters box"
        colab = browser.find_elements(By.CSS_SELECTOR, "a[href*='colab.research.google.com']")
        if REPOSITORY_URL:
            assert colab and colab[0].get_attribute("href").endswith(f"/notebooks/{page}.ipynb")
        else:
            assert not colab, f"{url}: a launch button without a repository URL"
    if not REPOSITORY_URL:
        buttons = browser.find_elements(By.CSS_SELECTOR, "a[href*='github.com'].btn, .dropdown-source-buttons")
        assert not buttons, f"{url}: a repository button without a repository URL"


# The prose of a page: paragraphs and list items (not tables, code, outputs of numbers or references).
PROSE = """return Array.from(document.querySelectorAll('article p, article li'))
  .filter(e => !(e.tagName === 'LI' && e.querySelector('p')))  // a list item's paragraph counts once
  .filter(e => !e.closest('table, pre, .admonition-title, .citation-list, .citation, .bibtex-citation'))
  .map(e => e.innerText);"""


def repeated_openings(texts: list[str], words: int = 8, times: int = 3) -> dict[str, int]:
    """Sentence openings (their first `words` words, lowercased) found `times` times or more."""
    counts: dict[str, int] = {}
    for text in texts:
        for sentence in re.split(r"(?<=[.!?])\s+", text):
            opening = " ".join(re.findall(r"[\w%'-]+", sentence.lower())[:words])
            if len(opening.split()) == words:
                counts[opening] = counts.get(opening, 0) + 1
    return {opening: n for opening, n in counts.items() if n >= times}


def test_repeated_openings_are_found():
    same = "On the three miniatures trained here by one recipe, a thing. "
    assert repeated_openings([same * 3]) == {"on the three miniatures trained here by one": 3}
    assert repeated_openings([same * 2, "Another sentence entirely, of eight words or more."]) == {}


@pytest.mark.slow
@pytest.mark.parametrize("page", _chapters())
def test_no_sentence_opening_is_repeated_three_times_on_a_page(site, browser, page):
    """Issue 30: prose written for a reader, not generated sentence by sentence."""
    browser.get(f"{site}/{book.BOOK_DIR}/{page}.html")
    assert not (found := repeated_openings(browser.execute_script(PROSE))), f"{page}: {found}"


def test_the_labels_box_and_the_rule_page_name_every_label_the_book_uses():
    """Issue 30: the three labels of a number, named where the book says what they mean."""
    labels = ("reported in the paper", "measured here", "computed here")
    intro = "".join(json.loads((ROOT / "notebooks" / "intro.ipynb").read_text())["cells"][-2]["source"]).lower()
    page = (ROOT / "book" / "rule.md").read_text().lower()
    assert "three kinds of numbers" in intro and all(f"**{label}" in intro for label in labels)
    assert all(f"**{label}**" in page for label in labels)
    used = set()
    for notebook in book.source_notebooks(ROOT):
        text = notebook.read_text().lower()
        used |= {label for label in ("reported in the paper", "measured here", "computed here", "estimated here",
                                     "derived here") if label in text}
    assert used <= set(labels), f"labels the box does not name: {used - set(labels)}"
    from mrpruner import rule

    assert rule.NOTATION in (ROOT / "book" / "rule.md").read_text().replace("**", "")
    assert f"{rule.DRAWS:,} draws" in page and f"{rule.LEVEL:.0%}" in page


def _method_named(label: str) -> str | None:
    """The method, variant or control a legend label names: the longest palette name it starts with."""
    from mrpruner import palette

    names = [*palette.METHODS, *palette.EXERCISE, *palette.CONTROLS, *palette.UNPRUNED_NAMES]
    return max((n for n in names if label == n or label.startswith((f"{n} ", f"{n}:"))), key=len, default=None)


@pytest.mark.slow
def test_every_legend_colour_of_the_book_means_one_thing(site):
    """Issue 31: hues are for methods only. Every legend entry (and coloured label) of every figure the
    build drew (recorded by mrpruner.plotting into each executed notebook): a method in its palette
    colour, anything else in grey (or a palette mark), and each hue meaning one method book-wide."""
    from mrpruner import palette

    meanings: dict[str, set[str]] = {}
    figures = 0
    for notebook in book.source_notebooks(ROOT):
        drawn = nbformat.read(ROOT / book.BOOK_DIR / notebook.name, 4).metadata.get(book.LEGENDS_KEY, [])
        has_figure = '"image/png"' in (ROOT / book.BOOK_DIR / notebook.name).read_text()
        assert drawn or not has_figure, f"{notebook.stem}: draws figures, but none was recorded"
        figures += len(drawn)
        for figure in drawn:
            for label, colour in figure["entries"]:
                where = f"{notebook.stem}, {figure['figure']}: {label!r} in {colour}"
                style = palette.known(label) or palette.known(_method_named(label) or "")
                if style is not None:
                    assert colour == style.color, f"{where}: its palette colour is {style.color}"
                    meanings.setdefault(colour, set()).add(_method_named(label) or label)
                elif not palette.neutral(colour):
                    assert colour in palette.MARKS or colour in palette.OTHERS, f"{where}: a hue that names no method"
                    meanings.setdefault(colour, set()).add(palette.MARKS.get(colour, label))
    assert figures >= 20, f"only {figures} figures recorded"
    shared = {colour: names for colour, names in meanings.items() if len(names - set(palette.UNPRUNED_NAMES)) > 1}
    assert not shared, f"one hue, several meanings: {shared}"


LINKS = """return [Array.from(document.querySelectorAll('a[href]')).map(a => [a.getAttribute('href'), a.href]),
               Array.from(document.images).map(img => [img.getAttribute('src'), img.getAttribute('alt')])];"""
HASH_NAME = re.compile(r"^[0-9a-f]{16,}(\.\w+)?$")


@pytest.mark.slow
@pytest.mark.parametrize("page", _chapters())
def test_every_link_resolves_and_every_image_has_alt_text(site, browser, page):
    """Internal links reach an existing file (and anchor), external ones are well-formed http(s)
    or mailto addresses, none is the invented repository URL; every image has real alt text."""
    url = f"{site}/{book.BOOK_DIR}/{page}.html"
    browser.get(url)
    links, images = browser.execute_script(LINKS)
    assert links, f"{url}: no links at all"
    for raw, resolved in links:
        assert INVENTED_URL not in resolved, f"{url}: a link to the invented URL {raw}"
        parsed = urllib.parse.urlsplit(resolved)
        if resolved.startswith(site):
            path = HTML / urllib.parse.unquote(parsed.path).lstrip("/")
            path = path / "index.html" if path.is_dir() else path
            assert path.is_file(), f"{url}: link {raw!r} to a missing file {path}"
            if parsed.fragment and path.suffix == ".html":
                ids = set(re.findall(r'\bid="([^"]+)"', path.read_text(errors="replace")))
                assert urllib.parse.unquote(parsed.fragment) in ids, f"{url}: link {raw!r} to a missing anchor"
        elif parsed.scheme == "mailto":
            assert "@" in parsed.path, f"{url}: malformed link {raw!r}"
        else:
            assert parsed.scheme in ("http", "https") and "." in parsed.netloc and " " not in resolved, \
                f"{url}: malformed link {raw!r}"
    for src, alt in images:
        alt = (alt or "").strip()
        assert alt and not HASH_NAME.match(alt) and alt != Path(src).name, f"{url}: image {src} without alt text ({alt!r})"


def test_no_file_names_the_invented_repository_url():
    files = ["README.md", "CITATION.cff", "_config.yml", "pyproject.toml", "notebooks/*.ipynb", "book/*.md",
             "book/*.ipynb", f"{book.HTML_DIR}/**/*.html"]
    hits = [str(p) for pattern in files for p in ROOT.glob(pattern) if INVENTED_URL in p.read_text(errors="replace")]
    assert not hits, f"the invented URL {INVENTED_URL} is in {hits}"


def test_the_repository_and_launch_buttons_follow_the_repository_url():
    config = SimpleNamespace(html_theme_options={"repository_url": "", "launch_buttons": {"colab_url": "x"}})
    book._buttons_follow_repository(None, config)
    assert config.html_theme_options == {"repository_url": "", "use_repository_button": False,
                                         "use_issues_button": False, "use_edit_page_button": False,
                                         "use_source_button": False, "launch_buttons": {}}
    config = SimpleNamespace(html_theme_options={"repository_url": "https://example.org/r", "launch_buttons": {"a": 1}})
    book._buttons_follow_repository(None, config)
    assert config.html_theme_options == {"repository_url": "https://example.org/r", "launch_buttons": {"a": 1},
                                         "use_repository_button": True, "use_issues_button": True}


def test_the_parameters_box_shows_every_parameter_and_whether_its_folders_exist(tmp_path, monkeypatch):
    monkeypatch.setenv(book.CHAPTER_ENV, "ablation")  # as `book.execute` sets it for the kernel
    html = book.parameters_box(model="tiny", ratios=[0.5, 0.9], results_dir=str(tmp_path),
                               saved_results=[str(tmp_path / "none")]).data
    assert "python -m mrpruner.book --only ablation -p PARAMETER VALUE" in html
    assert "Build parameters of this page" in html and "&#x27;tiny&#x27;" in html and "[0.5, 0.9]" in html
    assert f"<code>{tmp_path}</code>: exists" in html and f"<code>{tmp_path / 'none'}</code>: absent" in html


CODE_CHARS = 90  # the widest line of shown code: wider ones would scroll sideways in the text column
SHOWN_LANGUAGES = ("", "python", "bash", "console", "text", "sh", "bibtex")  # fences shown as code


def shown_fences(text: str) -> list[str]:
    """The lines of every fenced code block of a MyST text that is shown as code (not a directive)."""
    lines, shown, fence = [], [], None
    for line in text.splitlines():
        if fence is None and line.startswith("```"):
            fence = line[3:].strip()
        elif fence is not None and line.strip() == "```":
            fence = None
        elif fence is not None and fence in SHOWN_LANGUAGES:
            shown.append(line)
    return shown


def test_shown_code_fits_the_text_column():
    """Issue 31: no code a reader sees is wider than CODE_CHARS: the chapters' code cells, the
    fenced blocks of their prose and of the book's pages, and the package source the method
    chapter shows."""
    wide = []
    for notebook in book.source_notebooks(ROOT):
        for cell in nbformat.read(notebook, 4).cells:
            if cell.cell_type == "code" and book.HIDDEN_TAG not in cell.metadata.get("tags", []):
                wide += [(notebook.stem, line) for line in cell.source.splitlines() if len(line) > CODE_CHARS]
            if cell.cell_type == "markdown":
                wide += [(notebook.stem, line) for line in shown_fences(cell.source) if len(line) > CODE_CHARS]
    for page in sorted((ROOT / "book").glob("*.md")):
        wide += [(page.name, line) for line in shown_fences(page.read_text()) if len(line) > CODE_CHARS]
    method = (ROOT / "notebooks" / "method.ipynb").read_text()
    import inspect

    import mrpruner

    for name in re.findall(r"show_source\(([\w.]+)\)", method):
        obj = functools.reduce(getattr, name.removeprefix("mrpruner.").split("."), mrpruner) if "." in name else \
            getattr(importlib.import_module("mrpruner.budget"), name)
        wide += [(name, line) for line in inspect.getsource(obj).splitlines() if len(line) > CODE_CHARS]
    assert not wide, f"{len(wide)} lines of shown code wider than {CODE_CHARS} characters: {wide[:5]}"


def test_every_figure_cell_of_the_source_notebooks_has_alt_text():
    """A cell that draws (a plotting call or a seaborn/matplotlib figure) sets mystnb.image.alt."""
    drawing = re.compile(r"plotting\.(by_ratio|differences|margins|grids|token_maps|norm_distributions|mini_dots|mini_lines|cost_bars)\("
                         r"|sns\.\w+plot\(|plt\.subplots\(")
    for path in book.source_notebooks(ROOT):
        for cell in nbformat.read(str(path), 4).cells:
            if cell.cell_type == "code" and drawing.search(cell.source):
                alt = cell.metadata.get("mystnb", {}).get("image", {}).get("alt", "")
                assert len(alt) > 20, f"{path.name}, cell {cell.get('id')}: a figure without alt text"


@pytest.mark.slow
def test_the_flops_chapter_shows_a_latency_file_when_there_is_one(tmp_path):
    from mrpruner import latency, results

    timing = latency.run(model="tiny", device="cpu", dtype="float32", methods=["random", "mrpruner"],
                         ratios=[0.5, 0.9], repeats=latency.MIN_REPEATS)
    path = results.atomic_write_json(tmp_path / "latency.json", timing)
    (tmp_path / book.SOURCE_DIR).mkdir()
    shutil.copy(ROOT / book.SOURCE_DIR / "flops.ipynb", tmp_path / book.SOURCE_DIR)
    executed = book.execute(tmp_path / book.SOURCE_DIR / "flops.ipynb", tmp_path,
                            parameters={"latency_file": str(path), "recompute": False,  # the committed sweep, read
                                        "model": "mini", "results_dir": str(ROOT / "results" / "mini" / "figure4")})
    html = [o["data"]["text/html"] for c in nbformat.read(str(executed), 4).cells if c.cell_type == "code"
            for o in c.outputs if "text/html" in o.get("data", {})]
    shown = next(h for h in html if f"from `{path}`" in h)  # the table of the file, not a run of this build
    assert latency.label(timing) in shown and "MR-Pruner" in shown and "ToMe" not in shown


@pytest.mark.slow
def test_a_chapter_names_a_task_lmms_eval_cannot_find(tmp_path, local_task):
    """A task that is neither mrpruner's, lmms-eval's nor in include_path stops the chapter with a
    message naming it."""
    import papermill

    folder = local_task(tmp_path / "tasks", "local_vqa")
    (tmp_path / book.SOURCE_DIR).mkdir()
    shutil.copy(ROOT / book.SOURCE_DIR / "method.ipynb", tmp_path / book.SOURCE_DIR)
    with pytest.raises(papermill.PapermillExecutionError, match=r"unknown lmms-eval task\(s\) \['local_vqb'\]"):
        book.execute(tmp_path / book.SOURCE_DIR / "method.ipynb", tmp_path,
                     parameters={"task": "local_vqb", "include_path": str(folder)})


@pytest.mark.slow
def test_equations_render_from_file_without_a_network(site, browser):
    """The method chapter opened from disk, every http(s) request blocked: MathJax (copied into
    _static by the build) typesets its equations."""
    from selenium.webdriver.support.ui import WebDriverWait

    assert (HTML / "_static" / book.MATHJAX_PATH).is_file(), "MathJax was not copied into the build"
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["http://*", "https://*"]})
    try:
        browser.get((HTML / book.BOOK_DIR / "method.html").as_uri())
        typeset = "return Array.from(document.querySelectorAll('mjx-container')).filter(e => e.offsetWidth > 0).length"
        WebDriverWait(browser, 30).until(lambda d: d.execute_script(typeset) > 0)
        assert not browser.execute_script("return document.querySelectorAll('mjx-merror').length")
    finally:
        browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []})


SWEEP_CHAPTERS = ("main_results", "extreme_pruning", "ablation", "flops", "motivation", "paper_vs_released")
ONE_TASK_CHAPTERS = ("method", "visualisation")  # an image of one task, no sweep
ALSO_CHAPTERS = ("motivation", "ablation")  # also run the second task's miniature (the `also` parameter)


@pytest.mark.slow
@pytest.mark.parametrize("chapter", SWEEP_CHAPTERS + ONE_TASK_CHAPTERS)
def test_a_chapter_runs_on_another_model_and_other_tasks_with_no_edit(tmp_path, local_task, chapter):
    """A GPU user's parameters, stood in for here: another checkpoint folder (the random tiny model
    saved like a hub checkpoint) and another task (a local one with other images) run the chapter's
    very cells, a sweep chapter's into another results folder."""
    from mrpruner import models

    checkpoint = models.tiny_checkpoint(tmp_path / "models")
    folder = local_task(tmp_path / "tasks", "local_vqa")
    (tmp_path / book.SOURCE_DIR).mkdir()
    shutil.copy(ROOT / book.SOURCE_DIR / f"{chapter}.ipynb", tmp_path / book.SOURCE_DIR)
    parameters = {"model": str(checkpoint), "include_path": str(folder)}
    if chapter in SWEEP_CHAPTERS:
        parameters |= {"tasks": ["local_vqa"], "limit": 2, "results_dir": str(tmp_path / "results")}
    else:
        parameters |= {"task": "local_vqa"}
    if chapter in ("motivation", "paper_vs_released", "visualisation"):
        parameters["samples"] = 2
    if chapter in ALSO_CHAPTERS:
        parameters["also"] = []  # no second-task miniature beside another model
    executed = book.execute(tmp_path / book.SOURCE_DIR / f"{chapter}.ipynb", tmp_path, parameters=parameters)
    text = "".join(o.get("text", "") + "".join(o.get("data", {}).get("text/markdown", "")) + "".join(
        o.get("data", {}).get("text/html", "")) for c in nbformat.read(str(executed), 4).cells
        if c.cell_type == "code" for o in c.outputs)
    assert "local_vqa" in text and "Traceback" not in text
    assert f"Measured on `{checkpoint}`" in text
    if chapter in SWEEP_CHAPTERS:
        frame = results.load_results(tmp_path / "results")
        assert set(frame["task"]) == {"local_vqa"} and set(frame["model"]) == {str(checkpoint)}
        assert (frame["samples"] == 2).all() and frame["score"].notna().all()


@pytest.mark.slow
def test_the_hosts_chapter_runs_on_checkpoints_of_each_family_and_another_task(tmp_path, local_task):
    """A GPU user's parameters, stood in for here: a checkpoint folder of each family (the random tiny
    models saved like hub checkpoints) and a local task; small timing shapes keep it quick."""
    from mrpruner import models

    folders = [str(models.tiny_checkpoint(tmp_path / "models", name=name)) for name in models.TINY_MODELS]
    task = local_task(tmp_path / "tasks", "local_vqa")
    (tmp_path / book.SOURCE_DIR).mkdir()
    shutil.copy(ROOT / book.SOURCE_DIR / "hosts.ipynb", tmp_path / book.SOURCE_DIR)
    timing = {"LLaVA-OneVision": {"size": [768, 768], "width": 32}, "InternVL": {"size": [448, 896], "width": 32}}
    (tmp_path / "two.yaml").write_text("name: two\nratios: [0.9]\nprotocol: exact\nmethods:\n"
                                       "  - {label: all tokens, method: none, ratios: [0.0]}\n"
                                       "  - {label: MR-Pruner, method: mrpruner}\n")
    executed = book.execute(tmp_path / book.SOURCE_DIR / "hosts.ipynb", tmp_path, parameters={
        "models": folders, "task": "local_vqa", "document": 0, "include_path": str(task), "ratios": [0.7],
        "methods": {"Random": {"method": "random"}, "MR-Pruner": {"method": "mrpruner"}}, "timing": timing,
        "timing_repeats": 1, "decoders": {"LLaVA-NeXT": "LLAVA_NEXT_8B", "LLaVA-OneVision": "QWEN2_7B", "InternVL": None}, "tasks": ["local_vqa"], "sweep": "two.yaml", "limit": 2})
    outputs = [o for c in nbformat.read(str(executed), 4).cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.get("text", "") + "".join(o.get("data", {}).get("text/markdown", "")) + "".join(
        o.get("data", {}).get("text/html", "")) for o in outputs)
    assert "local_vqa" in text and "Traceback" not in text
    assert "Measured on " + ", ".join(f"`{folder}`" for folder in folders) in text
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 3  # one map per family
    assert "729 + 2,916" in text  # a 768-px square: OneVision's 2 x 2 grid of 27 x 27-token tiles
    assert "256 + 512" in text  # 448 x 896: InternVL's two tiles and a thumbnail
    assert "x (LLaVA-OneVision), " in text and "x (InternVL) the time" in text and "x (LLaVA-NeXT)" not in text
    assert "MR-Pruner gives the base view" in text and "LLaVA-NeXT" in text
    assert "On these checkpoints" in text and "the mechanism only" not in text  # a checkpoint folder is no tiny name
    assert "InternLM2.5-7B-chat" in text and "`QWEN2_7B`" in text  # the checkpoints and their decoders
    assert text.count("refused by mrpruner (the unpatched model runs it)") == 2  # OneVision's and InternVL's video
    base_only = "730\u00a0\u2192\u00a0219 (1\u00a0resolution)"  # 729 base tokens and a newline, 30% kept
    assert f"{base_only}; {base_only}" in text  # OneVision's two images in one prompt
    assert "decoders LLaVA-NeXT: LLAVA_NEXT_8B; LLaVA-OneVision: QWEN2_7B; InternVL: the loaded model's" in text
    for folder in folders:  # each family's cells, scored through lmms-eval, in results/<model>/<sweep>
        frame = results.load_results(tmp_path / "results" / Path(folder).name / "two")
        assert len(frame) == 2 and not frame["stale"].any() and frame["score"].notna().all()
    assert "Scores by family, method and pruning ratio; measured here" in text


def test_the_model_note_says_what_the_numbers_are_facts_about(tmp_path):
    from mrpruner import models

    tiny, _ = models.load("tiny")
    size = f"{sum(p.numel() for p in tiny.parameters()) / 1e6:.1f} M-parameter"
    assert "smoke test" in book.model_note("tiny", tiny).data and size in book.model_note("tiny", tiny).data
    hosts = book.model_note(["tiny", "tiny-onevision", "tiny-internvl"], tiny).data
    assert "random tiny models (`tiny`, `tiny-onevision`, `tiny-internvl`" in hosts and "not what a trained" in hosts
    mini_note = book.model_note("mini", tiny).data
    assert "the miniature trained here" in mini_note and "not about LLaVA-NeXT-8B" in mini_note
    assert "On a GPU" in mini_note and "On a GPU" not in book.model_note("mini", tiny, gpu=False).data
    assert "say nothing about another training run ({doc}`rule`)" in mini_note
    other = book.model_note(str(tmp_path), tiny).data
    assert other.startswith(":::{note}\n") and f"Measured on `{tmp_path}`" in other and "miniature" not in other
    mini, _ = models.load("mini")  # without the loaded model, the note loads the checkpoint for its size
    assert f"{sum(p.numel() for p in mini.parameters()) / 1e6:.1f} M-parameter" in book.model_note("mini").data
    assert 'task "marks"' in mini_note and 'task "tiles"' in book.model_note("mini-tiles", tiny).data
    assert "One budget for all methods" in book.model_note("mini", tiny, sweep="mini_table1").data
    assert "One budget for all methods" in book.model_note("llava-hf/x", sweep="table1").data  # GPU as CPU
    assert "its authors' code used" in book.model_note("llava-hf/x", sweep="mini_protocols").data
