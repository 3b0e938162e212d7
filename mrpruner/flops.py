"""Analytic FLOPs of a Llama-style decoder's prefill, with visual tokens pruned before the
language model or inside it (FastV), plus each selection method's own cost (Figure 4's x-axis: `mrpruner.methods.flops_reduction`).

What is counted is what `torch.utils.flop_counter.FlopCounterMode` counts: matrix products
(matrix-matrix and matrix-vector), at 2 FLOPs per multiply-add. Per decoder layer and prefill of
n tokens (hidden d, H query heads and G key/value heads of size h, MLP width m):

- projections: q and o 2*n*d*(H*h) each, k and v 2*n*d*(G*h) each (grouped KV heads);
- attention: scores and weighted sum 2*(2*n^2*H*h), the full n x n square, as torch counts
  `scaled_dot_product_attention` (a causal kernel skips about half of it);
- SwiGLU MLP: gate, up and down projections, 3*(2*n*d*m). Three matrices, not two: a known
  trap (pkunlp-icler/FastV issue #29; DivPrune's tflops.py counts two).

Not counted: RMSNorm, RoPE, softmax, SiLU and residual additions (element-wise, O(n*d)) and the
embedding lookup. The LM head is optional and covers the last position only, as `generate`
computes prefill logits.

Scope: "llm" counts the language model's prefill (and the selection) only; "model" adds the
vision tower and projector (`encoder_flops`), which every method runs in full on every tile (about
5% of the whole for one 480x640 image on LLaVA-NeXT-8B), so the same pruning saves a smaller share.
"""

from __future__ import annotations

from dataclasses import dataclass

from mrpruner.checks import check_count, check_flag

SCOPES = ("llm", "model")  # what a FLOPs count covers: the language model, or the whole model

MAX_COUNT = 2**62  # the largest count a FLOPs function takes


@dataclass(frozen=True)
class DecoderShape:
    """The sizes of a Llama-style decoder that its FLOPs depend on (head_dim: hidden // heads if None)."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int = 0
    head_dim: int | None = None

    def __post_init__(self) -> None:
        for name in ("hidden", "layers", "heads", "kv_heads", "intermediate"):
            check_count(name, getattr(self, name), 1, MAX_COUNT)
        check_count("vocab", self.vocab, 0, MAX_COUNT)
        if self.heads % self.kv_heads:
            raise ValueError(f"heads ({self.heads}) must be a multiple of kv_heads ({self.kv_heads})")
        if self.head_dim is None:
            if self.hidden % self.heads:
                raise ValueError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads}) "
                                 "unless head_dim is given")
            object.__setattr__(self, "head_dim", self.hidden // self.heads)
        check_count("head_dim", self.head_dim, 1, MAX_COUNT)

    @classmethod
    def from_config(cls, config: object) -> DecoderShape:
        """From a transformers LlamaConfig, or a LlavaNextConfig (its .text_config)."""
        text = getattr(config, "text_config", None) or config
        try:
            hidden, heads = text.hidden_size, text.num_attention_heads
            return cls(hidden=hidden, layers=text.num_hidden_layers, heads=heads,
                       kv_heads=getattr(text, "num_key_value_heads", None) or heads,
                       intermediate=text.intermediate_size, vocab=getattr(text, "vocab_size", 0) or 0,
                       head_dim=getattr(text, "head_dim", None))
        except AttributeError as error:
            raise TypeError(f"config must be a Llama-style text config or have one as .text_config: {error}") from None


# llava-hf/llama3-llava-next-8b-hf's language model: Meta-Llama-3-8B-Instruct (4096 hidden, 32 layers,
# 32 heads, 8 KV heads, MLP 14336), its vocabulary of 128256 grown by <image> (128256) and <pad> and
# padded to a multiple of 64 by transformers' convert_llava_next_weights_to_hf.py
# (resize_token_embeddings(vocab_size + 2, pad_to_multiple_of=64)): 128320.
LLAVA_NEXT_8B = DecoderShape(hidden=4096, layers=32, heads=32, kv_heads=8, intermediate=14336, vocab=128320)
# The language model of llava-hf/llava-onevision-qwen2-7b-ov-hf (Qwen2-7B) and of OpenGVLab/InternVL3-8B-hf
# (Qwen2.5-7B), one shape: 3584 hidden, 28 layers, 28 heads, 4 KV heads, MLP 18944 (their config.json);
# vocabulary: Qwen2's 152064 (a converted checkpoint may add a few tokens: they change only the LM head
# of the last position, under 0.01% of a prefill's FLOPs).
QWEN2_7B = DecoderShape(hidden=3584, layers=28, heads=28, kv_heads=4, intermediate=18944, vocab=152064)


@dataclass(frozen=True)
class EncoderShape:
    """LLaVA-NeXT's image encoder: a CLIP ViT (patch embedding, `layers` blocks of width `hidden`
    and MLP width `intermediate`, on (image/patch)^2 patches plus a class token per tile, every
    layer run) and the two-layer projector to the language model's width `text_hidden`."""

    hidden: int
    layers: int
    intermediate: int
    text_hidden: int
    image: int = 336
    patch: int = 14
    channels: int = 3

    def __post_init__(self) -> None:
        for name in ("hidden", "layers", "intermediate", "text_hidden", "image", "patch", "channels"):
            check_count(name, getattr(self, name), 1, MAX_COUNT)

    @classmethod
    def from_config(cls, config: object) -> EncoderShape:
        """From a transformers LlavaNextConfig (one vision feature layer)."""
        try:
            vision, text = config.vision_config, config.text_config
            return cls(hidden=vision.hidden_size, layers=vision.num_hidden_layers,
                       intermediate=vision.intermediate_size, text_hidden=text.hidden_size, image=vision.image_size,
                       patch=vision.patch_size, channels=vision.num_channels)
        except AttributeError as error:
            raise TypeError(f"config must be a LlavaNextConfig (vision_config and text_config): {error}") from None


# llama3-llava-next-8b's CLIP ViT-L/14-336 and its projector to Llama-3-8B's 4096.
LLAVA_NEXT_8B_ENCODER = EncoderShape(hidden=1024, layers=24, intermediate=4096, text_hidden=4096)


def encoder_flops(tiles: int, shape: EncoderShape = LLAVA_NEXT_8B_ENCODER) -> int:
    """FLOPs of the vision tower and projector on `tiles` tiles (one image: its base tile plus its
    anyres grid, 5 for 480x640): per tile the patch embedding, per layer q, k, v, o, the full
    n x n attention and the two-matrix MLP on n = patches + 1 tokens, then the projector on the
    patches (the class token dropped)."""
    tiles = check_count("tiles", tiles, 0, MAX_COUNT)
    if not isinstance(shape, EncoderShape):
        raise TypeError(f"shape must be an EncoderShape, got {type(shape).__name__}")
    d, patches = shape.hidden, (shape.image // shape.patch) ** 2
    n = patches + 1
    layer = 2 * n * d * d * 4 + 2 * (2 * n * n * d) + 2 * (2 * n * d * shape.intermediate)
    embedding = 2 * patches * d * shape.channels * shape.patch**2
    projector = 2 * patches * (d * shape.text_hidden + shape.text_hidden * shape.text_hidden)
    return tiles * (embedding + shape.layers * layer + projector)


def layer_flops(n: int, shape: DecoderShape) -> int:
    """FLOPs of one decoder layer on n tokens: projections, n x n attention, SwiGLU MLP."""
    n, shape = check_count("n", n, 0, MAX_COUNT), check_shape(shape)
    d, q_width, kv_width = shape.hidden, shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    projections = 2 * n * d * (2 * q_width + 2 * kv_width)  # q, o; k, v
    attention = 2 * (2 * n * n * q_width)  # q k^T and (scores) v
    mlp = 3 * (2 * n * d * shape.intermediate)  # gate, up, down
    return projections + attention + mlp


def prefill_flops(
    seq_len: int,
    shape: DecoderShape,
    *,
    prune_layer: int | None = None,
    pruned_len: int | None = None,
    selection_flops: int = 0,
    lm_head: bool = False,
) -> int:
    """FLOPs of prefilling seq_len tokens through the decoder (module docstring: what is counted).

    In-LLM pruning (FastV): layers 0 .. prune_layer-1 run on seq_len tokens, layers prune_layer ..
    layers-1 on pruned_len (give both or neither). Pruning before the LLM is just a shorter seq_len.
    selection_flops (the selection method's own cost) is added as is; lm_head=True adds the LM head
    on the last position (shape.vocab must be set).
    """
    seq_len, shape = check_count("seq_len", seq_len, 0, MAX_COUNT), check_shape(shape)
    if (prune_layer is None) != (pruned_len is None):
        raise ValueError("prune_layer and pruned_len must be given together (in-LLM pruning) or not at all")
    if prune_layer is None:
        prune_layer, pruned_len = shape.layers, seq_len
    prune_layer = check_count("prune_layer", prune_layer, 0, shape.layers)
    pruned_len = check_count("pruned_len", pruned_len, 0, seq_len)
    total = prune_layer * layer_flops(seq_len, shape) + (shape.layers - prune_layer) * layer_flops(pruned_len, shape)
    total += check_count("selection_flops", selection_flops, 0, MAX_COUNT)
    if check_flag("lm_head", lm_head):
        if shape.vocab == 0:
            raise ValueError("lm_head=True needs shape.vocab > 0")
        last_len = pruned_len if prune_layer < shape.layers else seq_len
        total += 2 * shape.hidden * shape.vocab if last_len else 0
    return total


def mr_prune_flops(n_low: int, n_high: int, dim: int) -> int:
    """FLOPs of `mrpruner.mr_prune` (either variant): the intra Gram matrices N_h^2 d and N_l^2 d
    (Eq. 1), the cross product N_l N_h d (Eq. 8) and the three score mat-vecs (Eq. 3, 9).

    The cross graph is computed against all N_h high-resolution tokens with the kept ones masked
    out (so it batches); gathering only the |P^H| pruned ones would make that term N_l |P^H| d.
    Norms, thresholds, softmax and top-k are element-wise or sorting and are not counted.
    """
    n_low = check_count("n_low", n_low, 0, MAX_COUNT)
    n_high = check_count("n_high", n_high, 0 if n_low else 1, MAX_COUNT)
    dim = check_count("dim", dim, 1, MAX_COUNT)
    pairs = n_high * n_high + n_low * n_low + n_low * n_high
    return 2 * pairs * dim + 2 * pairs


def gprune_flops(n: int, dim: int, *, iterations: int = 5, matrix_power: bool = False) -> int:
    """FLOPs of `mrpruner.gprune` on one graph of n tokens: the Gram matrix (2 n^2 d) and `iterations`
    vector-matrix products w P (2 n^2 each).

    matrix_power=True counts the released G-Prune instead, which forms P^n with
    torch.linalg.matrix_power (repeated squaring: floor(log2 n) squarings and popcount(n) - 1 more
    products, 3 dense n^3 products for n = 5) and then one w P^n. On LLaVA-NeXT G-Prune runs on
    two graphs (base and high-resolution tokens): add both.
    """
    n, dim = check_count("n", n, 1, MAX_COUNT), check_count("dim", dim, 1, MAX_COUNT)
    iterations = check_count("iterations", iterations, 1, 1000)
    gram = 2 * n * n * dim
    if not check_flag("matrix_power", matrix_power):
        return gram + iterations * 2 * n * n
    products = iterations.bit_length() - 1 + iterations.bit_count() - 1
    return gram + products * 2 * n**3 + 2 * n * n


def tome_flops(n: int, dim: int, keep: int) -> int:
    """FLOPs of `mrpruner.tome_merge` from n to keep tokens: each round's A x B cosine products
    (A = ceil(n/2) tokens, B = floor(n/2)), 2 |A| |B| d, merging min(n - keep, |A|) tokens per round.
    The size-weighted averages of the merge are element-wise and not counted."""
    n, dim = check_count("n", n, 1, MAX_COUNT), check_count("dim", dim, 1, MAX_COUNT)
    keep = check_count("keep", keep, 0, n)
    total = 0
    while keep and n > keep:  # keep = 0 drops everything without matching
        a = (n + 1) // 2
        total += 2 * a * (n // 2) * dim
        n -= min(n - keep, a)
    return total


def fastv_flops(seq_len: int, shape: DecoderShape) -> int:
    """FLOPs of FastV's ranking: the last query row against all seq_len keys in every head of the
    ranking layer (its q and k are computed by the layer anyway), 2 * seq_len * H * h."""
    seq_len, shape = check_count("seq_len", seq_len, 0, MAX_COUNT), check_shape(shape)
    return 2 * seq_len * shape.heads * shape.head_dim


def check_shape(shape: object) -> DecoderShape:
    """`shape` if it is a DecoderShape, else a TypeError."""
    if not isinstance(shape, DecoderShape):
        raise TypeError(f"shape must be a DecoderShape, got {type(shape).__name__}")
    return shape
