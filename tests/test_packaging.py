"""The wheel `pip install` gets holds every module and data file of the package and its entry points."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_holds_the_package_its_data_and_entry_points(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source)
    shutil.copytree(ROOT / "mrpruner", source / "mrpruner", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist")], check=True)
    wheel = zipfile.ZipFile(next((tmp_path / "dist").glob("mrpruner-*.whl")))
    names = set(wheel.namelist())
    files = {p.relative_to(source).as_posix() for p in (source / "mrpruner").rglob("*") if p.is_file()}
    assert files and files <= names, sorted(files - names)
    assert any(name.startswith("mrpruner/data/sweeps/") for name in files)  # data files are among them
    info = next(name.split("/")[0] for name in names if name.endswith(".dist-info/METADATA"))
    entry_points = wheel.read(f"{info}/entry_points.txt").decode()
    assert "llava_next_pruned = mrpruner.lmms_eval_model:manifest" in entry_points
    assert "mrpruner-sweep = mrpruner.sweep.cli:main" in entry_points
    metadata = wheel.read(f"{info}/METADATA").decode()
    assert "Provides-Extra: bench" in metadata and "Requires-Dist: torch>=2.4" in metadata


def test_the_citation_pages_companion_entry_matches_citation_cff():
    import yaml

    import mrpruner

    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    page = (ROOT / "book" / "citation.md").read_text()
    entry = page[page.index("@software{"):]
    entry = entry[:entry.index("\n}")]
    title = cff["title"].replace("mrpruner", "{mrpruner}").replace("MR-Pruner", "{MR-Pruner}").replace("WACV", "{WACV}")
    assert f"title   = {{{title}}}" in entry
    assert f"version = {{{cff['version']}}}" in entry and cff["version"] == mrpruner.__version__
    assert f"license = {{{cff['license']}}}" in entry
    assert f"author  = {{{{{cff['authors'][0]['name']}}}}}" in entry
