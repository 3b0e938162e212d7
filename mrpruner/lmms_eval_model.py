"""`llava_next_pruned`: an lmms-eval model that runs a transformers LLaVA-NeXT, LLaVA-OneVision or
InternVL (the family read from the checkpoint's config: `mrpruner.hosts`) with its visual tokens
pruned by `mrpruner.patch`, and reports per batch its prefill latency, token counts and FLOPs.

    python -m lmms_eval --model llava_next_pruned \\
        --model_args pretrained=llava-hf/llama3-llava-next-8b-hf,method=mrpruner,ratio=0.9 --tasks gqa
    accelerate launch --num_processes=8 -m lmms_eval --model llava_next_pruned --model_args ... --tasks ...
    torchrun --nproc_per_node=2 -m lmms_eval --model llava_next_pruned --model_args ...,device=cpu ...

Registered through the entry-point group `lmms_eval.models` (this module's `manifest`), which is
how lmms-eval 0.7.3's `get_model` finds third-party models.

Model arguments (--model_args): pretrained (a hub id or local folder of a LLaVA-NeXT, LLaVA-OneVision
or InternVL checkpoint and its processor, "mini" for the miniature trained here, "tiny",
"tiny-onevision" or "tiny-internvl" for a random tiny one), revision, method ("none", a method of `mrpruner.methods.table()` or an import
path "package.module:function" of your own select function), ratio (fraction of each image's
visual tokens pruned, in [0, 1)), protocol ("exact" or "paper": the budgets of mrpruner.patch),
the method's options (its `defaults` in the table),
device (default: cuda if available, else cpu; with several processes, each process's own GPU, or cpu), dtype (auto,
float16, bfloat16, float32), attn_implementation (sdpa, eager), batch_size, stats_dir (folder
where each process writes rank<N>.json with per-batch timings and token counts).
Two controls, with method "none": resolution ("low": each image's base tokens only, "high": its
grid only; default "both") and images ("blank": every image replaced by a grey one of its size).
Every argument is checked before any model is loaded.

For a task whose documents carry `region` (x0, y0, x1, y1 in the image's pixels: where the answer
lies, as the miniature's tasks do), each sample's stats of a LLaVA-NeXT hold `recall`, the share of
that region's base and grid tokens the language model received (None on the other families: their
region tokens are not mapped yet).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from lmms_eval.api.instance import GenerationResult, Instance, TokenCounts
from lmms_eval.api.model import lmms

from mrpruner import checks, models
from mrpruner.hosts import host_for, llava_next
from mrpruner.seam import recall
from mrpruner.checks import check_ratio
from mrpruner.methods import RESOLUTIONS, check_options, check_renamed, get_method, resolution_only, table
from mrpruner.patch import patch, stats

MODEL_NAME = "llava_next_pruned"
NO_PRUNING = "none"
DTYPES = {"auto": "auto", **checks.DTYPES}  # "auto": the checkpoint's own dtype
ATTENTION = ("sdpa", "eager")
BOTH, IMAGES = "both", ("given", "blank")  # the controls' defaults and choices (module docstring)
# Generation settings the tasks' YAMLs may give; anything else is an error rather than ignored.
GEN_KWARGS = ("until", "max_new_tokens", "temperature", "top_p", "num_beams", "do_sample")


def manifest():
    """The entry point lmms-eval loads (group `lmms_eval.models`). A function, so that importing
    this module first and lmms_eval.models second (which then loads the entry points while this
    module is still being imported) works: nothing here imports lmms_eval.models at import time."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_NAME, simple_class_path=f"{__name__}.LlavaNextPruned")


@dataclasses.dataclass(frozen=True)
class ModelArgs:
    """The validated --model_args of `llava_next_pruned` (defaults: the paper's model, unpruned)."""

    pretrained: str = "llava-hf/llama3-llava-next-8b-hf"
    revision: str | None = None
    method: str = NO_PRUNING
    ratio: float = 0.0
    protocol: str = "exact"
    options: dict = dataclasses.field(default_factory=dict)
    device: str | None = None
    dtype: str = "auto"
    attn_implementation: str = "sdpa"
    batch_size: int = 1
    stats_dir: str | None = None
    resolution: str = BOTH
    images: str = "given"


_ARG_NAMES = tuple(f.name for f in dataclasses.fields(ModelArgs) if f.name != "options")


def check_model_args(model_args: str | dict[str, Any]) -> ModelArgs:
    """Parse (a string, as lmms-eval parses --model_args) and validate model arguments; every
    problem is a ValueError/TypeError naming the argument, raised before any model is loaded."""
    if isinstance(model_args, str):
        from lmms_eval.utils import simple_parse_args_string

        model_args = simple_parse_args_string(model_args)
    args = dict(model_args)
    method = args.get("method", NO_PRUNING)
    if method != NO_PRUNING:
        try:
            entry = get_method(method)
        except ValueError:
            raise ValueError(f"method must be {NO_PRUNING!r}, one of {tuple(table())} or an import path "
                             f"'package.module:function' of your own select function, got {method!r}") from None
    options = {k: args.pop(k) for k in list(args) if k not in _ARG_NAMES}
    allowed = {}
    if method != NO_PRUNING:
        check_renamed(entry, options)
        allowed = entry.defaults
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"unknown model argument(s) {unknown} for {MODEL_NAME}: its arguments are "
                         f"{list(_ARG_NAMES)}, and method {method!r} takes the options {sorted(allowed) or 'none'}")
    parsed = ModelArgs(**args, options=options)
    if parsed.resolution not in (BOTH, *RESOLUTIONS):
        raise ValueError(f"resolution must be one of {(BOTH, *RESOLUTIONS)}, got {parsed.resolution!r}")
    if parsed.resolution != BOTH and parsed.method != NO_PRUNING:
        raise ValueError(f"resolution={parsed.resolution!r} is a control of the unpruned model: method must be "
                         f"{NO_PRUNING!r}, got {parsed.method!r}")
    if parsed.images not in IMAGES:
        raise ValueError(f"images must be one of {IMAGES}, got {parsed.images!r}")
    if parsed.method == NO_PRUNING:
        if parsed.ratio != 0:
            raise ValueError(f"method {NO_PRUNING!r} prunes nothing: ratio must be 0, got {parsed.ratio!r}")
    else:
        check_ratio(parsed.ratio)
        check_options(parsed.method, parsed.options)
    checks.check_protocol(parsed.protocol)
    if parsed.dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {parsed.dtype!r}")
    if parsed.attn_implementation not in ATTENTION:
        raise ValueError(f"attn_implementation must be one of {ATTENTION}, got {parsed.attn_implementation!r}")
    if parsed.device is not None:
        try:
            torch.device(parsed.device)
        except (RuntimeError, TypeError):
            raise ValueError(f"device must be a torch device such as cuda, cuda:1 or cpu, "
                             f"got {parsed.device!r}") from None
    batch = parsed.batch_size
    if isinstance(batch, str) and batch.isdigit():  # lmms-eval's --batch_size arrives as a string
        batch = int(batch)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch_size must be a positive integer (not 'auto'), got {parsed.batch_size!r}")
    if parsed.revision is not None and not isinstance(parsed.revision, str):
        raise ValueError(f"revision must be a branch, tag or commit of the model repository, got {parsed.revision!r}")
    if parsed.stats_dir is not None and not isinstance(parsed.stats_dir, str):
        raise ValueError(f"stats_dir must be a folder path, got {parsed.stats_dir!r}")
    models.check_model(parsed.pretrained, "pretrained")
    return dataclasses.replace(parsed, batch_size=batch)


def truncate(text: str, until: list[str]) -> str:
    """The text up to the first occurrence of any stop string (lmms-eval's `until`)."""
    for stop in until:
        if stop:
            text = text.split(stop, 1)[0]
    return text


class PrefillTimer:
    """Times each generate() call from its start to the end of its first forward pass (the prefill:
    vision tower, projector, pruning, the language model over the prompt) and to its end. CUDA
    events on GPU, read after a synchronisation; perf_counter on CPU (synchronous)."""

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self._armed = False
        self._marks: list[Any] = []
        model.register_forward_hook(self._first_forward)

    def _mark(self) -> Any:
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def start(self) -> None:
        self._marks = [self._mark()]
        self._armed = True

    def _first_forward(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if self._armed:
            self._armed = False
            self._marks.append(self._mark())

    def stop(self) -> tuple[float, float]:
        """(prefill seconds, generate seconds) of the call since `start`."""
        if self._armed or len(self._marks) != 2:
            raise RuntimeError("generate() ran no forward pass: no prefill to time")
        start, prefill = self._marks
        end = self._mark()
        if self.cuda:
            end.synchronize()
            return start.elapsed_time(prefill) / 1e3, start.elapsed_time(end) / 1e3
        return prefill - start, end - start


class LlavaNextPruned(lmms):
    """lmms-eval model (generation tasks) for LLaVA-NeXT, LLaVA-OneVision and InternVL with visual-token
    pruning (module docstring); `host` is the family's `mrpruner.hosts` module."""

    is_simple = True

    def __init__(self, **model_args: Any) -> None:
        args = check_model_args(model_args)
        super().__init__()
        from accelerate import Accelerator
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

        accelerator = Accelerator()
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if accelerator.num_processes > 1 and device.type == "cuda":
            device = torch.device(f"cuda:{accelerator.local_process_index}")  # one GPU per process
        if device.type == "cuda":
            torch.cuda.set_device(device)
        source = models.resolve(args.pretrained, "pretrained")
        self.host = host_for(AutoConfig.from_pretrained(source, revision=args.revision).model_type)
        self._model = AutoModelForImageTextToText.from_pretrained(
            source, revision=args.revision, dtype=DTYPES[args.dtype],
            attn_implementation=args.attn_implementation, device_map=str(device)).eval()
        self._processor = AutoProcessor.from_pretrained(source, revision=args.revision)
        if self._processor.chat_template is None:
            raise ValueError(f"the processor of {args.pretrained!r} has no chat template")
        self._processor.tokenizer.padding_side = "left"  # batched generation
        if args.method != NO_PRUNING:
            patch(self._model, args.method, args.ratio, protocol=args.protocol, **args.options)
        elif args.resolution != BOTH:
            patch(self._model, resolution_only(args.resolution), 0.0)
        self._patched = args.method != NO_PRUNING or args.resolution != BOTH
        self.args = args
        self.options = {} if args.method == NO_PRUNING else check_options(args.method, args.options)
        self.accelerator = accelerator
        self._device = device
        self._rank = accelerator.process_index
        self._world_size = accelerator.num_processes
        self._timer = PrefillTimer(self._model, device)
        self._batches: list[dict[str, Any]] = []
        self._elapsed = 0.0

    @property
    def model(self) -> torch.nn.Module:
        return self._model

    @property
    def tokenizer(self) -> Any:
        return self._processor.tokenizer

    @property
    def batch_size(self) -> int:
        return self.args.batch_size

    @property
    def device(self) -> torch.device:
        return self._device

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError(f"{MODEL_NAME} runs generation tasks only (all eight of the paper's benchmarks "
                                  "are); loglikelihood tasks are not supported")

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError(f"{MODEL_NAME} does not support multi-round generation tasks")

    def generate_until(self, requests: list[Instance]) -> list[GenerationResult]:
        """Answer every request, batch_size prompts at a time; record per batch its timings and
        per sample its token counts and prefill FLOPs (written to stats_dir, logged to lmms-eval)."""
        from lmms_eval import utils
        from tqdm import tqdm

        if not requests:
            return []
        started, first = time.perf_counter(), len(self._batches)
        # Longest prompts first (less padding per batch), grouped by generation settings.
        collator = utils.Collator([r.args for r in requests], lambda x: (-len(x[0]), x[3]), grouping=True)
        answers = []
        bar = tqdm(total=len(requests), disable=self.rank != 0, desc=f"{MODEL_NAME} responding")
        for chunk in collator.get_batched(n=self.batch_size):
            answers.extend(self._generate_batch(chunk))
            bar.update(len(chunk))
        bar.close()
        seconds = time.perf_counter() - started
        self._elapsed += seconds
        self._report(self._batches[first:], seconds)
        return collator.get_original(answers)

    def _generate_batch(self, chunk: list[tuple]) -> list[GenerationResult]:
        contexts, all_gen_kwargs, doc_to_visuals, doc_ids, tasks, splits = zip(*chunk)
        gen = dict(all_gen_kwargs[0])  # the Collator grouped the chunk by these settings
        unknown = sorted(set(gen) - set(GEN_KWARGS))
        if unknown:
            raise ValueError(f"generation settings {unknown} are not supported by {MODEL_NAME}; "
                             f"supported: {GEN_KWARGS}")
        until = gen.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        docs = [self.task_dict[task][split][doc_id] for task, split, doc_id in zip(tasks, splits, doc_ids)]
        visuals = [fn(doc) for fn, doc in zip(doc_to_visuals, docs)]
        for visual in visuals:
            if any(not hasattr(v, "convert") for v in visual):
                raise ValueError(f"{MODEL_NAME} takes image inputs (PIL images) only, "
                                 f"got {[type(v).__name__ for v in visual]}")
        prompts = [self._prompt(context, len(visual)) for context, visual in zip(contexts, visuals)]
        images = [v.convert("RGB") for visual in visuals for v in visual]
        if self.args.images == "blank":
            images = [Image.new("RGB", image.size, (128, 128, 128)) for image in images]
        inputs = self._processor(images=images or None, text=prompts, return_tensors="pt", padding=True)
        if images and "image_sizes" not in inputs:  # InternVL's processor gives none; a pruned InternVL needs them
            inputs["image_sizes"] = torch.tensor([(image.height, image.width) for image in images])
        inputs = inputs.to(self.device, self.model.dtype)
        temperature = gen.get("temperature", 0)
        sample = temperature > 0  # lmms-eval's convention: greedy at temperature 0
        last = stats(self.model) if self._patched else None
        self._timer.start()
        output = self.model.generate(
            **inputs, max_new_tokens=gen.get("max_new_tokens", 1024), do_sample=sample,
            temperature=temperature if sample else None, top_p=gen.get("top_p") if sample else None,
            num_beams=gen.get("num_beams", 1), pad_token_id=self.tokenizer.pad_token_id, use_cache=True)
        prefill_s, generate_s = self._timer.stop()
        new = output[:, inputs["input_ids"].shape[1]:]
        texts = [truncate(text, until) for text in self.tokenizer.batch_decode(new, skip_special_tokens=True)]
        samples = self._sample_stats(inputs, new, bool(images), last)
        self._region_recall(samples, docs, visuals, images)
        self._batches.append({"tasks": list(tasks), "doc_ids": list(doc_ids), "prefill_s": prefill_s,
                              "generate_s": generate_s, "samples": samples})
        for context, text in zip(contexts, texts):
            self.cache_hook.add_partial("generate_until", (context, gen), text)
        return [GenerationResult(text, TokenCounts(input_tokens=x["text_tokens"] + x["visual_tokens"],
                                                   output_tokens=x["generated_tokens"]))
                for text, x in zip(texts, samples)]

    def _prompt(self, context: str, images: int) -> str:
        """The chat prompt of one request: the images (unless the context places them itself) then
        the text, in one user turn, with the generation prompt."""
        if images and self._processor.image_token not in context:
            content: Any = [{"type": "image"}] * images + [{"type": "text", "text": context}]
        else:
            content = [{"type": "text", "text": context}]
        messages = [{"role": "user", "content": content}]
        return self._processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _sample_stats(self, inputs: Any, new: torch.Tensor, has_images: bool, last: Any) -> list[dict[str, Any]]:
        """Per row: text and visual tokens, visual tokens the language model keeps (in all and per
        image: images_kept, images_visual), generated tokens and prefill FLOPs
        (mrpruner.flops.prefill_flops, from mrpruner.patch.stats when pruned)."""
        from mrpruner.flops import DecoderShape, prefill_flops

        visual = (inputs["input_ids"] == self.model.config.image_token_id).sum(1).tolist()
        generated = (new != self.tokenizer.pad_token_id).sum(1).tolist()
        per_image: list[list[tuple[int, int]]] = [[] for _ in visual]  # (visual, kept) of each image of a row
        if not self._patched or not has_images:
            lengths = inputs["attention_mask"].sum(1).tolist()
            shape = DecoderShape.from_config(self.model.config)
            pruned = [prefill_flops(n, shape, lm_head=True) for n in lengths]
            dense = pruned
            row = 0
            layouts = self.host.image_layouts(list(inputs.get("image_sizes", [])), self.model.config,
                                              inputs.get("batch_num_images"))
            for layout in layouts:  # the processor's images follow the rows' order; each keeps all its tokens
                while sum(v for v, _ in per_image[row]) == visual[row]:
                    row += 1
                per_image[row].append((layout.total, layout.total))
        else:
            call = stats(self.model)
            if call is last:
                raise RuntimeError("mrpruner.patch recorded no prefill for this batch")
            lengths, dense, pruned = call.lengths_before, call.dense_prefill_flops, call.prefill_flops
            for image in call.images:
                per_image[image.row].append((image.tokens_before, image.tokens_after))
        return [{"text_tokens": n - v, "visual_tokens": v, "kept_tokens": sum(k for _, k in images),
                 "images_visual": [v for v, _ in images], "images_kept": [k for _, k in images],
                 "generated_tokens": g, "prefill_flops": p, "dense_prefill_flops": d}
                for n, v, images, g, p, d in zip(lengths, visual, per_image, generated, pruned, dense)]

    def _region_recall(self, samples: list[dict[str, Any]], docs: list, visuals: list, images: list) -> None:
        """Add each sample's `recall` (module docstring) where its document has a region and one
        image; None elsewhere."""
        at = [i for i, (doc, visual) in enumerate(zip(docs, visuals)) if len(visual) == 1 and "region" in doc]
        for x in samples:
            x["recall"] = None
        if not at or self.host is not llava_next:
            return
        offsets = [sum(len(v) for v in visuals[:i]) for i in at]
        regions = llava_next.region_tokens(self.model, self._processor, [images[o] for o in offsets],
                                           [tuple(int(v) for v in docs[i]["region"]) for i in at])
        kept = {}
        if self._patched:
            kept = {image.row: image.kept for image in stats(self.model).images}
        for i, region in zip(at, regions):
            keep = kept.get(i, torch.arange(samples[i]["visual_tokens"]))
            samples[i]["recall"] = recall(keep, region)

    def _report(self, batches: list[dict[str, Any]], seconds: float) -> None:
        """Write this process's stats (stats_dir/rank<N>.json, whole) and log a summary to lmms-eval's
        throughput metrics (results['throughput'])."""
        from lmms_eval.models.model_utils.gen_metrics import log_metrics

        from mrpruner.results import atomic_write_json, device_name

        if self.args.stats_dir is not None:
            atomic_write_json(Path(self.args.stats_dir) / f"rank{self.rank}.json", {
                "model": self.args.pretrained, "revision": self.args.revision,
                "model_commit": getattr(self.model.config, "_commit_hash", None),
                "host": self.host.__name__.rsplit(".", 1)[1], "method": self.args.method,
                "ratio": self.args.ratio, "protocol": self.args.protocol, "options": self.options,
                "dtype": str(self.model.dtype).removeprefix("torch."),
                "device": str(self.device), "device_name": device_name(self.device), "rank": self.rank,
                "world_size": self.world_size, "batch_size": self.batch_size, "elapsed_s": self._elapsed,
                "batches": self._batches})
        samples = [x for b in batches for x in b["samples"]]
        generated = sum(x["generated_tokens"] for x in samples)
        log_metrics(total_elapsed_time=seconds, total_gen_tokens=generated,
                    avg_speed=generated / seconds if seconds > 0 else 0.0,
                    additional_metrics={"total_requests": len(samples), "samples_per_s": len(samples) / seconds,
                                        "prefill_ms": 1e3 * statistics.fmean(b["prefill_s"] for b in batches),
                                        "kept_visual_tokens": statistics.fmean(x["kept_tokens"] for x in samples),
                                        "rank": self.rank})
