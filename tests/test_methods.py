"""The table of methods and bringing your own: a method defined in its own file and the shipped
DivPrune example, each through patch + generate() (KV cache, a batch of two images), the real
`python -m lmms_eval` command line and a sweep cell."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import mrpruner
from mrpruner import methods
from mrpruner.benchmarks import TINY, write_tiny_task
from mrpruner.budget import keep_count
from mrpruner.examples.divprune import divprune
from mrpruner.lmms_eval_model import MODEL_NAME
from mrpruner.testing import argmax_margin, chat_inputs, sample_images, tiny_llava_next

USER = "user_rule:keep_last"
DIVPRUNE = "mrpruner.examples.divprune:divprune"
# A rule that chooses by position only, so what it keeps can be stated exactly.
USER_FILE = '''
import torch


def keep_last(features, keep, layout, skip=0):
    """The `keep` tokens just before the last `skip` ones."""
    end = layout.total - skip
    return torch.arange(end - keep, end, device=features.device)
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """The user's own file, importable here and in child processes (PYTHONPATH)."""
    (tmp_path / "user_rule.py").write_text(textwrap.dedent(USER_FILE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    yield tmp_path
    for name in [name for name in methods.table() if name not in methods.METHODS]:
        methods._TABLE.pop(name)  # registrations must not leak into other tests


def test_table_holds_the_papers_methods_with_their_options():
    table = methods.table()
    assert tuple(table)[:5] == methods.METHODS == ("random", "tome", "fastv", "gprune", "mrpruner")
    assert table["fastv"].where == "inside the language model"
    assert {table[m].where for m in ("random", "tome", "gprune", "mrpruner")} == {"before the language model"}
    assert table["mrpruner"].defaults == {"variant": "paper", "s_a": 0.5, "s_c": 0.5, "alpha": None, "intra": True,
                                          "cross": True, "adaptive": True}
    with pytest.raises(TypeError):
        table["new"] = table["random"]  # read-only: add methods with register_method


def test_one_options_object_for_mrpruner():
    assert mrpruner.MROptions(variant="released").weight == 0.5 and mrpruner.MROptions().weight == 0.3
    with pytest.raises(ValueError, match="s_c must be in"):
        mrpruner.MROptions(s_c=3.0)
    low, high = torch.randn(16, 8, generator=torch.Generator().manual_seed(0)), torch.randn(40, 8)
    options = mrpruner.MROptions(variant="released", alpha=0.2)
    a, b = mrpruner.mr_prune(low, high, 20, options), mrpruner.mr_prune(low, high, 20, variant="released", alpha=0.2)
    assert torch.equal(a.low, b.low) and torch.equal(a.high, b.high)  # the same code on the same input
    with pytest.raises(TypeError, match="not both"):
        mrpruner.mr_prune(low, high, 20, options, alpha=0.1)


def test_register_method_checks_its_arguments_and_the_answers(user_module):
    model, processor = tiny_llava_next()
    inputs = chat_inputs(processor, [([sample_images()["chelsea"]], "What is this ?")])
    with pytest.raises(ValueError, match="built-in method"):
        mrpruner.register_method("random", lambda features, keep, layout: None)
    with pytest.raises(ValueError, match="names no importable function"):
        mrpruner.patch(model, "user_rule:no_such_function", 0.5)
    assert methods.get_method(USER).defaults == {"skip": 0}  # read from the signature
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['colour'\] for method 'user_rule:keep_last'"):
        mrpruner.patch(model, USER, 0.5, colour="red")

    answers = {"floats": lambda f, k, layout: torch.zeros(k), "too_few": lambda f, k, layout: torch.arange(k - 1),
               "unsorted": lambda f, k, layout: torch.arange(k).flip(0),
               "outside": lambda f, k, layout: torch.arange(layout.total, layout.total + k)}
    messages = {"floats": "1-D integer tensor", "too_few": "the budget is", "unsorted": "sorted, distinct",
                "outside": "sorted, distinct"}
    for name, select in answers.items():
        mrpruner.register_method(name, select)
        with mrpruner.pruned(model, name, 0.5), pytest.raises((TypeError, ValueError), match=messages[name]):
            model(**inputs)


@pytest.mark.parametrize("method", [USER, DIVPRUNE])
def test_own_method_through_generate_with_cache_on_a_batch_of_two(user_module, method):
    model, processor = tiny_llava_next()
    photos = sample_images()
    inputs = chat_inputs(processor, [([photos["astronaut_portrait"]], "What is shown in this image ?"),
                                     ([photos["chelsea"]], "Describe the photo briefly please .")])
    options = {"skip": 3} if method == USER else {}
    generation = dict(max_new_tokens=4, do_sample=False, output_logits=True, return_dict_in_generate=True)
    with mrpruner.pruned(model, method, 0.7, **options):
        with torch.no_grad():
            features = model.model.get_image_features(inputs["pixel_values"], inputs["image_sizes"]).pooler_output
        cached = model.generate(**inputs, **generation)
        call = mrpruner.stats(model)
        assert argmax_margin(torch.stack(cached.logits)) > 1e-4  # greedy steps clear of ties
        uncached = model.generate(**inputs, use_cache=False, **generation)
    assert torch.equal(cached.sequences, uncached.sequences)
    for a, b in zip(cached.logits, uncached.logits):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert call.method == method and len(call.images) == 2
    for image, feature in zip(call.images, features):
        n, keep = image.layout.total, keep_count(image.layout.total, 0.7)
        expected = (torch.arange(n - 3 - keep, n - 3) if method == USER
                    else divprune(feature, keep, image.layout))
        assert torch.equal(image.kept, expected) and image.tokens_after == keep
    assert call.lengths_after == tuple(b - (i.tokens_before - i.tokens_after)
                                       for b, i in zip(call.lengths_before, sorted(call.images, key=lambda i: i.row)))


def test_divprune_keeps_one_token_per_cluster_and_the_outlier_first():
    directions = torch.eye(8)[:4]
    noise = 0.01 * torch.randn(13, 8, generator=torch.Generator().manual_seed(0))
    features = torch.cat([directions[c].expand(4, 8) for c in range(3)] + [directions[3:4]]) + noise
    assert divprune(features, 1, None).tolist() == [12]  # the outlier is farthest from its nearest neighbour
    kept = divprune(features, 4, None)
    assert kept.tolist()[-1] == 12 and sorted(int(i) // 4 for i in kept[:3]) == [0, 1, 2]
    assert divprune(features, 13, None).tolist() == list(range(13)) and divprune(features, 0, None).numel() == 0


@pytest.fixture
def tiny_files(tmp_path):
    """The tiny model saved as a checkpoint folder, and the offline tiny lmms-eval task's folder."""
    model, processor = tiny_llava_next()
    model.save_pretrained(tmp_path / "tiny")
    processor.save_pretrained(tmp_path / "tiny")
    return tmp_path / "tiny", write_tiny_task(tmp_path / "task")


@pytest.mark.slow
def test_own_method_through_the_lmms_eval_command_line(user_module, tiny_files, tmp_path):
    checkpoint, task = tiny_files
    command = [sys.executable, "-m", "lmms_eval", "--model", MODEL_NAME,
               "--model_args", f"pretrained={checkpoint},method={USER},ratio=0.5,skip=2,device=cpu,"
                               f"stats_dir={tmp_path / 'stats'}",
               "--tasks", TINY.task, "--include_path", str(task), "--limit", "2", "--output_path", str(tmp_path / "out")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "hf")}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)  # PYTHONPATH: user_module
    found = list((tmp_path / "out").glob("**/*_results.json"))
    assert done.returncode == 0 and len(found) == 1, done.stdout[-4000:] + done.stderr[-4000:]
    stats = json.loads((tmp_path / "stats" / "rank0.json").read_text())
    assert stats["method"] == USER and stats["options"] == {"skip": 2}
    samples = [sample for batch in stats["batches"] for sample in batch["samples"]]
    assert len(samples) == 2 and all(kept == keep_count(visual, 0.5) for sample in samples
                                     for visual, kept in zip(sample["images_visual"], sample["images_kept"]))


@pytest.mark.slow
def test_own_method_and_divprune_in_a_sweep(user_module, tiny_files, tmp_path):
    from mrpruner import results
    from mrpruner.sweep import grid as grids, run

    checkpoint, task = tiny_files
    grid = grids.grid_from_config({
        "name": "own", "model": str(checkpoint), "tasks": [TINY.key], "limit": 1, "device": "cpu",
        "include_path": str(task), "methods": [{"method": USER, "label": "keep last", "options": {"skip": 1},
                                                 "ratios": [0.5]}, {"method": DIVPRUNE, "ratios": [0.9]}]})
    report = run.run_sweep(grid, tmp_path / "results", progress=False)
    assert not report.failed
    frame = results.load_results(tmp_path / "results")
    assert set(zip(frame.method, frame.ratio)) == {(USER, 0.5), (DIVPRUNE, 0.9)}
    assert (frame.kept_tokens == [keep_count(int(v), r) for v, r in zip(frame.visual_tokens, frame.ratio)]).all()


def _example(path: str, heading: str) -> str:
    """The first python block after `heading` in a markdown file."""
    from pathlib import Path

    text = Path(__file__).parent.parent.joinpath(path).read_text()
    return text.split(heading, 1)[1].split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_and_api_page_examples_of_ones_own_method_run():
    """The README's five lines register and patch a method; the API page's longer example runs too."""
    readme = _example("README.md", "## Your own pruning method")
    api = _example("book/api.md", "## Your own pruning method")
    assert len([line for line in readme.splitlines() if line.strip()]) <= 6 < len(api.splitlines()) <= 20
    model, processor = tiny_llava_next()
    inputs = chat_inputs(processor, [([sample_images()["chelsea"]], "What is this ?")])
    try:
        exec(readme, {"model": model, "inputs": inputs})
        model.generate(**inputs, max_new_tokens=1)
        image = mrpruner.stats(model).images[0]
        assert image.tokens_after == keep_count(image.tokens_before, 0.9)  # the exact budget
        mrpruner.unpatch(model)
        methods._TABLE.pop("far_from_mean")
        exec(api, {"model": model, "inputs": inputs})
        assert methods.get_method("far_from_mean").defaults == {"power": 2.0}
    finally:
        methods._TABLE.pop("far_from_mean", None)
