"""The lmms-eval plug-in `llava_next_pruned`: registration through the entry point, argument checks
before any model is loaded, per-batch timings/token counts/FLOPs, the paper's benchmark mapping,
the tiny offline task, a task's documents through lmms-eval's task code, and a real
`python -m lmms_eval` run on the tiny model."""

import json
import os
import re
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mrpruner.benchmarks import (
    BENCHMARKS,
    TINY,
    benchmark_for_task,
    task_name,
    task_questions,
    tiny_doc_to_visual,
    write_tiny_task,
)
from mrpruner.budget import keep_count, plan
from mrpruner.hosts import FAMILIES
from mrpruner.lmms_eval_model import MODEL_NAME, LlavaNextPruned, check_model_args, truncate
from mrpruner.results import read_json


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """The tiny random LLaVA-NeXT and its processor saved like a hub checkpoint."""
    from mrpruner.models import tiny_checkpoint

    return tiny_checkpoint(tmp_path_factory.mktemp("tiny-llava-next"))


@pytest.fixture(scope="module")
def family_dirs(tiny_dir, tmp_path_factory) -> dict[str, Path]:
    """A checkpoint folder of each family's random tiny model, by family."""
    from mrpruner.models import tiny_checkpoint

    folder = tmp_path_factory.mktemp("families")
    return {"llava_next": tiny_dir, "llava_onevision": tiny_checkpoint(folder, name="tiny-onevision"),
            "internvl": tiny_checkpoint(folder, name="tiny-internvl")}


def offline_env(tmp: Path) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp / "hf"),
            "TOKENIZERS_PARALLELISM": "false"}


# --- registration and arguments ----------------------------------------------------------------

def test_entry_point_registers_the_model():
    found = [ep for ep in entry_points(group="lmms_eval.models") if ep.name == MODEL_NAME]
    assert [ep.value for ep in found] == ["mrpruner.lmms_eval_model:manifest"], \
        "declare it in pyproject.toml [project.entry-points.\"lmms_eval.models\"] and reinstall"
    from lmms_eval.models import get_model

    assert get_model(MODEL_NAME) is LlavaNextPruned


def test_model_args_parse_like_lmms_eval():
    args = check_model_args("pretrained=some/model,method=mrpruner,ratio=0.9,alpha=0.3,intra=false,"
                            "variant=released,dtype=float16,batch_size=2")
    assert (args.pretrained, args.method, args.ratio, args.dtype, args.batch_size) == (
        "some/model", "mrpruner", 0.9, "float16", 2)
    assert args.options == {"alpha": 0.3, "intra": False, "variant": "released"}
    assert check_model_args({"method": "fastv", "ratio": 0.5, "layer": 3, "batch_size": "4"}).batch_size == 4
    assert check_model_args("pretrained=mini").method == "none"


@pytest.mark.parametrize("model_args, message", [
    ("method=magic,ratio=0.5", "method must be 'none', one of .* or an import path"),
    ("method=mrpruner,ratio=0.5,colour=red", r"unknown model argument\(s\) \['colour'\]"),
    ("method=mrpruner,ratio=0.5,layer=2", r"unknown model argument\(s\) \['layer'\].*options"),
    ("method=none,ratio=0.5", "prunes nothing"),
    ("method=none,ratio=0,seed=1", r"unknown model argument\(s\) \['seed'\]"),
    ("method=random,ratio=1.0", "ratio must be in"),
    ("method=mrpruner,ratio=0.5,intra=maybe", "intra must be True or False"),
    ("method=mrpruner,ratio=0.5,budget=released", "budget was replaced by patch's protocol"),
    ("method=mrpruner,ratio=0.5,protocol=released", "protocol must be one of"),
    ("dtype=float8", "dtype must be one of"),
    ("attn_implementation=flash", "attn_implementation must be one of"),
    ("batch_size=auto", "batch_size must be a positive integer"),
    ("device=gpu7", "device must be a torch device"),
])
def test_bad_model_args_fail_before_loading(model_args, message):
    with pytest.raises((ValueError, TypeError), match=message):
        check_model_args(model_args)
    # The model class checks first: the missing checkpoint is never reached.
    with pytest.raises((ValueError, TypeError), match=message):
        LlavaNextPruned.create_from_arg_string(f"pretrained=/no/such/checkpoint,{model_args}")


def test_truncate_at_stop_strings():
    assert truncate("yes\nASSISTANT: no", ["ASSISTANT:", "\n"]) == "yes"
    assert truncate("a cat", []) == "a cat"


# --- the model on the tiny checkpoint ----------------------------------------------------------

def _requests(docs: list[dict], gen: dict) -> list:
    from lmms_eval.api.instance import Instance

    return [Instance("generate_until", (doc["question"], dict(gen), tiny_doc_to_visual, i, TINY.task, "test"),
                     idx=0, metadata={"task": TINY.task, "doc_id": i, "repeats": 1}) for i, doc in enumerate(docs)]


def _visual_tokens(folder: Path, docs: list[dict]) -> list[int]:
    """Image placeholders the processor inserts for each doc's photo."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(folder)
    counts = []
    for doc in docs:
        ids = processor(images=tiny_doc_to_visual(doc), text=f"{processor.image_token}\nq", return_tensors="pt")["input_ids"]
        counts.append(int((ids == processor.tokenizer.convert_tokens_to_ids(processor.image_token)).sum()))
    return counts


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method, ratio, protocol", [("random", 0.75, "exact"), ("none", 0, "exact"),
                                                     ("mrpruner", 0.9, "paper")])
def test_generate_until_records_prefill_tokens_and_flops(family_dirs, tmp_path, family, method, ratio, protocol):
    """Each family, found from its checkpoint's config, keeps each image's budget of its own layout
    (`mrpruner.hosts`), in batches, with the same stats."""
    folder = family_dirs[family]
    docs = pq.read_table(write_tiny_task(tmp_path / "task") / f"{TINY.task}.parquet").to_pylist()[:3]
    lm = LlavaNextPruned.create_from_arg_string(
        f"pretrained={folder},method={method},ratio={ratio},protocol={protocol},device=cpu,"
        f"stats_dir={tmp_path / 'stats'}", {"batch_size": "2", "device": None})
    assert lm.host.__name__ == f"mrpruner.hosts.{family}"
    lm.task_dict = {TINY.task: {"test": docs}}
    answers = lm.generate_until(_requests(docs, {"max_new_tokens": 2, "temperature": 0, "until": ["\n"]}))

    stats = read_json(tmp_path / "stats" / "rank0.json")
    assert (stats["method"], stats["ratio"], stats["protocol"], stats["world_size"], stats["batch_size"]) == (
        method, ratio, protocol, 1, 2)
    assert [len(b["samples"]) for b in stats["batches"]] == [2, 1]
    by_doc = {d: s for b in stats["batches"] for d, s in zip(b["doc_ids"], b["samples"])}
    visual = _visual_tokens(folder, docs)
    assert len(set(visual)) >= 2  # the photos differ in aspect ratio, so in token count
    for i, n in enumerate(visual):
        sample = by_doc[i]
        width, height = tiny_doc_to_visual(docs[i])[0].size
        layout = lm.host.packed_layout((height, width), lm.model.config)
        assert layout.total == n
        kept = n if method == "none" else plan(method, protocol, ratio, base=layout.base, rows=layout.rows,
                                               cols=layout.cols, newlines=layout.newlines).total
        assert kept == (keep_count(n, ratio) if protocol == "exact" else n // 10 + layout.newlines)  # newlines on top
        assert sample["visual_tokens"] == n and sample["images_visual"] == [n]
        assert sample["kept_tokens"] == kept and sample["images_kept"] == [kept]
        assert sample["text_tokens"] > 0 and 1 <= sample["generated_tokens"] <= 2
        assert answers[i].token_counts.output_tokens == sample["generated_tokens"]
        assert answers[i].token_counts.input_tokens == n + sample["text_tokens"]
        if method == "none":
            assert sample["prefill_flops"] == sample["dense_prefill_flops"]
        else:
            assert sample["prefill_flops"] < sample["dense_prefill_flops"]
    for batch in stats["batches"]:
        assert 0 < batch["prefill_s"] < batch["generate_s"]
    assert stats["elapsed_s"] >= sum(b["generate_s"] for b in stats["batches"])
    assert all(isinstance(a.text, str) for a in answers)


def test_a_checkpoint_of_another_family_is_refused_naming_the_supported_ones(tmp_path):
    """A config whose model_type no host drives stops the model before any weight is loaded."""
    from transformers import LlamaConfig

    LlamaConfig(hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"pretrained must be a checkpoint of one of LLaVA-NeXT \('llava_next'\), "
                                         r"LLaVA-OneVision \('llava_onevision'\), InternVL \('internvl'\).*got "
                                         r"model_type 'llama'"):
        LlavaNextPruned(pretrained=str(tmp_path), device="cpu")


# --- benchmarks and the tiny task --------------------------------------------------------------

def test_benchmarks_are_installed_lmms_eval_tasks_with_their_metric():
    import lmms_eval
    from lmms_eval.utils import load_yaml_config

    index = {}
    for path in (Path(lmms_eval.__file__).parent / "tasks").rglob("*.yaml"):
        found = re.search(r'^task:\s*["\']?([\w.-]+)["\']?\s*$', path.read_text(errors="replace"), re.M)
        if found:
            index[found.group(1)] = path
    assert list(BENCHMARKS) == ["gqa", "vqav2", "mme", "pope", "mmb_en", "mmb_cn", "textvqa", "sqa_img"]
    for bench in BENCHMARKS.values():
        config = load_yaml_config(str(index[bench.task]), mode="simple")
        assert bench.metric.split(",")[0] in [m["metric"] for m in config["metric_list"]], bench
        assert benchmark_for_task(bench.task) is bench and task_name(bench.key) == bench.task
    assert task_name("mmbench_en_test") == "mmbench_en_test" and benchmark_for_task("mmbench_en_test") is None


def test_benchmark_score_in_paper_units():
    assert BENCHMARKS["gqa"].score({"exact_match,none": 0.6538}) == pytest.approx(65.38)
    assert BENCHMARKS["mme"].score({"mme_perception_score,none": 1587.72}) == pytest.approx(1587.72)
    with pytest.raises(KeyError, match="no metric 'pope_f1_score,none'"):
        BENCHMARKS["pope"].score({"pope_accuracy,none": 0.9})


def test_tiny_task_is_a_loadable_local_lmms_eval_task(tmp_path):
    from lmms_eval.utils import load_yaml_config

    folder = write_tiny_task(tmp_path)
    rows = pq.read_table(folder / f"{TINY.task}.parquet").to_pylist()
    assert [r["answer"] for r in rows] == ["astronaut", "coffee", "cat", "rocket", "camera", "coins", "text"]
    sizes = {tiny_doc_to_visual(r)[0].size for r in rows}
    assert len(sizes) >= 5 and all(im.mode == "RGB" for r in rows for im in tiny_doc_to_visual(r))
    config = load_yaml_config(str(folder / f"{TINY.task}.yaml"))
    assert config["task"] == TINY.task
    assert Path(config["dataset_kwargs"]["data_files"]["test"]) == folder / f"{TINY.task}.parquet"
    assert config["doc_to_visual"] is tiny_doc_to_visual
    assert not list(folder.glob(".*"))  # no temporary files left


def test_task_questions_are_the_tasks_documents_as_lmms_eval_builds_them(tmp_path, local_task):
    folder = local_task(tmp_path / "tasks", "local_vqa")
    questions = task_questions("local_vqa", 3, include_path=folder)
    rows = pq.read_table(folder / "local_vqa.parquet").to_pylist()[:3]
    assert questions.task == "local_vqa" and len(questions.frame) == 3
    assert [im.size for im in questions.frame["image"]] == [tiny_doc_to_visual(r)[0].size for r in rows]
    assert all(im.mode == "RGB" for im in questions.frame["image"])
    post = "\nAnswer the question using a single word or phrase."  # the task's default post_prompt
    assert questions.frame["question"].tolist() == [r["question"] + post for r in rows]
    assert questions.frame["answer"].tolist() == ["astronaut", "coffee", "cat"]
    assert questions.score(2, "Cat.") == 1.0 and questions.score(2, "dog") == 0.0  # exact_match, case and . ignored
    with pytest.raises(ValueError, match="samples must be at most the 7 documents of task 'local_vqa', got 8"):
        task_questions("local_vqa", 8, include_path=folder)
    with pytest.raises(ValueError, match="samples must be in"):
        task_questions("local_vqa", 0, include_path=folder)


def test_task_questions_match_the_target_where_the_task_scores_later(tmp_path, local_task):
    """MMB-EN's process_results gives no number (GPT judges its answers when lmms-eval aggregates):
    an answer then scores 1 when it is the target up to case and punctuation."""
    folder = local_task(tmp_path / "tasks", "local_judged", "process_results: !function judged.results\n")
    (folder / "judged.py").write_text("def results(doc, outputs):\n"
                                      "    return {'exact_match': {'prediction': outputs[0]}}\n")
    questions = task_questions("local_judged", 2, include_path=folder)
    assert questions.score(1, " Coffee!") == 1.0 and questions.score(1, "tea") == 0.0


def test_task_questions_name_an_unknown_task(tmp_path):
    with pytest.raises(ValueError, match=r"unknown lmms-eval task\(s\) \['no_such_task_anywhere'\]"):
        task_questions("no_such_task_anywhere", 1, include_path=write_tiny_task(tmp_path))


# --- the real command line ---------------------------------------------------------------------

@pytest.mark.slow
def test_lmms_eval_cli_runs_the_plugin(tiny_dir, tmp_path):
    task = write_tiny_task(tmp_path / "task")
    command = [sys.executable, "-m", "lmms_eval", "--model", MODEL_NAME,
               "--model_args", f"pretrained={tiny_dir},method=mrpruner,ratio=0.5,alpha=0.4,device=cpu,"
                               f"stats_dir={tmp_path / 'stats'}",
               "--tasks", TINY.task, "--include_path", str(task), "--limit", "3", "--batch_size", "2",
               "--output_path", str(tmp_path / "out")]
    done = subprocess.run(command, env=offline_env(tmp_path), capture_output=True, text=True, timeout=600)
    found = list((tmp_path / "out").glob("**/*_results.json"))
    # The CLI exits 0 even when evaluation fails: the results file is the proof.
    assert done.returncode == 0 and len(found) == 1, done.stdout[-4000:] + done.stderr[-4000:]
    results = json.loads(found[0].read_text())
    assert results["n-samples"][TINY.task]["effective"] == 3
    assert 0 <= results["results"][TINY.task]["exact_match,none"] <= 1
    assert results["throughput"]["avg_samples_per_s"] > 0 and results["throughput"]["avg_prefill_ms"] > 0
    stats = read_json(tmp_path / "stats" / "rank0.json")
    assert stats["options"]["alpha"] == 0.4 and stats["options"]["variant"] == "paper"
    assert sum(len(b["samples"]) for b in stats["batches"]) == 3 and stats["batch_size"] == 2
