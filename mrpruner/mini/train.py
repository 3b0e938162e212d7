"""Training the miniature from scratch on two CPU cores: `python -m mrpruner.mini train --out DIR`.

Recipe (the model card states it): AdamW, cosine learning rate with warm-up, batches of the
train stream in order (batch b holds samples b*B .. b*B+B-1, so a resumed run sees the very batches
an uninterrupted one would). Loss = cross-entropy on the answer word and the end-of-turn token
+ `dense_weight` x dense supervision of the visual tokens: linear heads read every projected token
and predict what its patch holds (`dense_targets`: the small mark's pattern on grid tokens; on
"marks" the big shape's colour on all tokens, on "tiles" its form on the base tokens only, which
alone see it whole; or background), each class-balanced (shape and background weigh the same).
Without them, detail questions stayed at chance for 30 minutes
(shared/notes/miniature-probe.md). The heads are a training aid: the saved model is the plain `LlavaNextForConditionalGeneration`.

A checkpoint (`state.pt`, written atomically) every `save_every` steps; a run started again on the
same folder resumes from it. The finished model is written with `save_pretrained` beside its log.
"""

from __future__ import annotations

import io
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch
from torch.nn import functional as F

from mrpruner.hosts.llava_next import packed_layout, token_coverage
from mrpruner.mini import Recipe, data
from mrpruner.mini import model as mini_model
from mrpruner.results import atomic_write_bytes

MARK, IGNORE = 0.15, 0.02  # a grid token is the mark's if it covers > 15% of its patch, background under 2%


def prompts(proc, batch: list[data.Sample], with_answer: bool) -> list[str]:
    """The chat text of each sample: one user turn (image, question), the assistant header, and
    with_answer: the answer word and the end of turn."""
    texts = []
    for s in batch:
        turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": s.question}]}]
        text = proc.apply_chat_template(turn, add_generation_prompt=True)
        texts.append(text + f"{s.answer}<|eot_id|>" if with_answer else text)
    return texts


def encode(proc, batch: list[data.Sample], with_answer: bool) -> dict:
    """Left-padded model inputs with position ids counted over the unpadded tokens (as generate does)."""
    inputs = proc(images=[s.image for s in batch], text=prompts(proc, batch, with_answer), return_tensors="pt",
                  padding=True)
    inputs["position_ids"] = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    return dict(inputs)


# Each task's dense heads: name -> classes (background first).
HEADS = {"marks": {"mark_pattern": len(data.PATTERNS) + 1, "big_colour": len(data.COLOURS) + 1},
         "tiles": {"mark_pattern": len(data.PATTERNS) + 1, "big_form": len(data.SHAPES) + 1}}


def dense_targets(model, proc, batch: list[data.Sample], task: str = "marks") -> dict[str, torch.Tensor]:
    """The class of every packed visual token of the batch (concatenated) for each of `task`'s dense
    heads, 0 for background, -100 to ignore (newlines, and tokens a shape only grazes):
    mark_pattern: the small mark's pattern + 1 on the grid tokens it covers (base tokens ignored:
    they cannot see it);
    big_colour ("marks"): the big shape's colour + 1 on the base and grid tokens it covers;
    big_form ("tiles"): the big shape's form + 1 on the base tokens it covers (grid tokens ignored:
    each tile sees only a part of it)."""
    from PIL import Image

    masks = []
    for s in batch:
        mask = Image.new("RGB", s.image.size)
        data.draw_mark(mask, s.small, fill=(255, 0, 0))
        data.draw_shape(mask, s.big, fill=(0, 255, 0))
        masks.append(mask)
    out: dict[str, list[torch.Tensor]] = {name: [] for name in HEADS[task]}
    base = (data.TILE // data.PATCH) ** 2
    for s, cover in zip(batch, token_coverage(model, proc, masks)):
        grid = torch.arange(len(cover)) >= base
        big = (("big_colour", cover[:, 1], torch.ones_like(grid), list(data.COLOURS).index(s.big.colour) + 1)
               if task == "marks" else ("big_form", cover[:, 1], ~grid, data.SHAPES.index(s.big.shape) + 1))
        for name, share, where, label in (
            ("mark_pattern", cover[:, 0], grid, data.PATTERNS.index(s.small.pattern) + 1), big):
            target = torch.full_like(share, -100, dtype=torch.long)
            target[where & (share >= 0) & (share < IGNORE)] = 0
            target[where & (share > MARK)] = label
            out[name].append(target)
    return {name: torch.cat(parts) for name, parts in out.items()}


DECOYS = 1000  # decoy scenes come from the task's stream DECOYS + the training seed


def decoy_grids(model, proc, batch: list[data.Sample], inputs: dict, targets: dict[str, torch.Tensor],
                decoys: list[data.Sample]) -> None:
    """In place: each form question's grid tiles (pixels and dense targets) replaced by those of
    its decoy (`decoys`: one per form question, in order), another scene of the same size, so that
    in training the grid never tells the big shape's form and the model learns it from the base
    image, the one view that holds the shape whole. Attempt 1 of the "tiles" task, without decoys, learned the form from the grid's
    four parts as well (the card, issue 19)."""
    which = [i for i, s in enumerate(batch) if s.topic == "big_form"]
    if len(decoys) != len(which):
        raise ValueError(f"decoys must hold one scene per form question ({len(which)}), got {len(decoys)}")
    if not which:
        return
    for i, decoy in zip(which, decoys):
        if decoy.image.size != batch[i].image.size:
            raise ValueError(f"a decoy must have its sample's size, got {decoy.image.size} for {batch[i].image.size}")
    pixels = proc.image_processor([d.image for d in decoys], return_tensors="pt")["pixel_values"]
    replaced = dense_targets(model, proc, decoys, "tiles")
    base = (data.TILE // data.PATCH) ** 2
    starts = torch.tensor([0] + [packed_layout((s.image.height, s.image.width), model.config).total
                                 for s in batch]).cumsum(0)
    for j, i in enumerate(which):
        inputs["pixel_values"][i, 1:] = pixels[j, 1:].to(inputs["pixel_values"].dtype)
        length = int(starts[i + 1] - starts[i])
        for name, target in targets.items():
            target[starts[i] + base:starts[i + 1]] = replaced[name][j * length + base:(j + 1) * length]


def balanced_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy where background (class 0) and the mark's tokens (classes > 0) weigh the same."""
    keep = target >= 0
    logits, target = logits[keep], target[keep]
    loss = F.cross_entropy(logits, target, reduction="none")
    fg = target > 0
    parts = [loss[fg].mean() if fg.any() else None, loss[~fg].mean() if (~fg).any() else None]
    parts = [p for p in parts if p is not None]
    return sum(parts) / len(parts)


def forward(model, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits of the last 3 positions, the packed projected visual tokens of the batch): the
    model's own computation, with the visual tokens kept for the dense heads."""
    inner = model.model
    features = torch.cat(inner.get_image_features(inputs["pixel_values"], inputs["image_sizes"]).pooler_output)
    embeds = inner.get_input_embeddings()(inputs["input_ids"])
    mask = (inputs["input_ids"] == model.config.image_token_index).unsqueeze(-1).expand_as(embeds)
    embeds = embeds.masked_scatter(mask, features.to(embeds.dtype))
    out = model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"], position_ids=inputs["position_ids"],
                logits_to_keep=3, use_cache=False)
    return out.logits, features


@torch.no_grad()
def accuracy(model, proc, batch_samples: list[data.Sample], batch: int = 32) -> dict[str, float]:
    """Greedy first-token accuracy per kind and overall (unpruned)."""
    model.eval()
    hits: dict[str, list[bool]] = {k: [] for k in data.KINDS}
    for at in range(0, len(batch_samples), batch):
        chunk = batch_samples[at:at + batch]
        inputs = encode(proc, chunk, with_answer=False)
        logits = model(**inputs, logits_to_keep=1, use_cache=False).logits[:, -1]
        words = proc.tokenizer.convert_ids_to_tokens(logits.argmax(-1).tolist())
        for s, w in zip(chunk, words):
            hits[s.kind].append(w == s.answer)
    out = {k: sum(v) / len(v) for k, v in hits.items() if v}
    out["all"] = sum(sum(v) for v in hits.values()) / len(batch_samples)
    return out


def _lr(recipe: Recipe, step: int) -> float:
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    t = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
    return recipe.lr * (recipe.min_lr_share + (1 - recipe.min_lr_share) * 0.5 * (1 + math.cos(math.pi * t)))


def _atomic_save(obj, path: Path) -> None:
    """torch.save `obj` to `path` whole or not at all (`mrpruner.results.atomic_write_bytes`)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def train(out: str | Path, recipe: Recipe = Recipe(), *, until: int | None = None, progress: bool = True) -> Path:
    """Train the miniature into `out` (resuming from `out/state.pt` if present); returns `out`.
    until: stop after that step with a checkpoint (run again to go on), e.g. to train in parts."""
    if until is not None and (isinstance(until, bool) or not isinstance(until, int) or until < 1):
        raise ValueError(f"until must be a positive int (a step to stop after) or None, got {until!r}")

    threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    try:
        return _train(Path(out), recipe, until, progress)
    finally:
        torch.set_num_threads(threads)


def _train(out: Path, recipe: Recipe, until: int | None, progress: bool) -> Path:
    from tqdm.auto import tqdm

    out.mkdir(parents=True, exist_ok=True)
    data.check_task(recipe.task)
    proc = mini_model.processor(recipe.task)
    model = mini_model.new_model(proc, seed=recipe.seed)
    hidden = model.config.text_config.hidden_size
    with torch.random.fork_rng():
        torch.manual_seed(recipe.seed + 1)
        heads = torch.nn.ModuleDict({name: torch.nn.Linear(hidden, classes)
                                     for name, classes in HEADS[recipe.task].items()})
    params = list(model.parameters()) + list(heads.parameters())
    optim = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    state_path, log_path = out / "state.pt", out / "train_log.jsonl"
    step, elapsed = 0, 0.0
    if state_path.exists():
        state = torch.load(state_path, weights_only=False)
        if state["recipe"] != asdict(recipe):
            raise ValueError(f"{state_path} was written by another recipe: {state['recipe']} (now {asdict(recipe)}); "
                             "use another --out or the same settings")
        model.load_state_dict(state["model"])
        heads.load_state_dict(state["heads"])
        optim.load_state_dict(state["optim"])
        step, elapsed = state["step"], state["elapsed"]
        torch.set_rng_state(state["rng"])
        rows = [r for r in log_path.read_text().splitlines() if json.loads(r)["step"] <= step] if log_path.exists() else []
        log_path.write_text("".join(r + "\n" for r in rows))  # drop what was logged after the checkpoint
    elif log_path.exists():
        log_path.unlink()
    validation = data.samples(recipe.validation_size, recipe.validation_seed, task=recipe.task)
    eot = proc.tokenizer.convert_tokens_to_ids("<|eot_id|>")
    bar = tqdm(total=recipe.steps, initial=step, disable=not progress, desc="train mini")
    window: list[dict] = []
    while step < min(recipe.steps, until or recipe.steps):
        started = time.perf_counter()
        model.train()
        batch = [data.sample(recipe.train_seed, step * recipe.batch + i, detail_share=recipe.detail_share,
                             task=recipe.task) for i in range(recipe.batch)]
        inputs = encode(proc, batch, with_answer=True)
        targets = dense_targets(model, proc, batch, recipe.task)
        if recipe.decoy_grids:
            decoy_grids(model, proc, batch, inputs, targets,
                        [data.sample(DECOYS + recipe.train_seed, step * recipe.batch + i, task=recipe.task)
                         for i, s in enumerate(batch) if s.topic == "big_form"])
        logits, features = forward(model, inputs)
        answer = inputs["input_ids"][:, -2]
        lm = F.cross_entropy(logits[:, 0], answer) + F.cross_entropy(logits[:, 1], torch.full_like(answer, eot))
        dense = sum(balanced_ce(heads[name](features), target) for name, target in targets.items()) / len(targets)
        loss = lm + recipe.dense_weight * dense
        for group in optim.param_groups:
            group["lr"] = _lr(recipe, step)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optim.step()
        step += 1
        elapsed += time.perf_counter() - started
        window.append({"lm": lm.item(), "dense": dense.item(),
                       "hit": (logits[:, 0].argmax(-1) == answer).float().mean().item()})
        bar.update(1)
        if step % 50 == 0 or step == recipe.steps:
            row = {"step": step, "seconds": round(elapsed, 1), "lr": _lr(recipe, step - 1),
                   **{f"train_{k}": round(sum(w[k] for w in window) / len(window), 4) for k in window[0]}}
            window = []
            if step % recipe.validate_every == 0 or step == recipe.steps:
                row.update({f"val_{k}": round(v, 4) for k, v in accuracy(model, proc, validation).items()})
            bar.set_postfix({k: row[k] for k in row if k.startswith(("train_lm", "val_"))})
            with open(log_path, "a") as f:
                f.write(json.dumps(row) + "\n")
        if step < recipe.steps and (step % recipe.save_every == 0 or step == until):
            _atomic_save({"model": model.state_dict(), "heads": heads.state_dict(), "optim": optim.state_dict(),
                          "step": step, "elapsed": elapsed, "rng": torch.get_rng_state(), "recipe": asdict(recipe)},
                         state_path)
    bar.close()
    if step < recipe.steps:
        return out
    model.eval()
    model.save_pretrained(out)
    proc.save_pretrained(out)
    (out / "recipe.json").write_text(json.dumps(asdict(recipe), indent=1) + "\n")
    state_path.unlink(missing_ok=True)
    return out
