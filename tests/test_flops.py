"""The analytic FLOPs model against torch's FLOP counter on real forward passes and on the
package's own selection functions, plus hand-worked in-LLM pruning and bad input."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode
from transformers import LlamaConfig, LlamaForCausalLM, LlamaModel, LlavaNextConfig

import mrpruner
from mrpruner.methods import METHODS, flops_reduction
from mrpruner.flops import (
    LLAVA_NEXT_8B,
    LLAVA_NEXT_8B_ENCODER,
    DecoderShape,
    EncoderShape,
    encoder_flops,
    fastv_flops,
    gprune_flops,
    layer_flops,
    mr_prune_flops,
    prefill_flops,
    tome_flops,
)

# hidden 8, 2 query heads of 4, 1 KV head, MLP 12: per layer 960 n + 32 n^2 FLOPs
# (q, o 2*n*8*8 each; k, v 2*n*8*4 each; attention 2*2*n^2*8; MLP 3*2*n*8*12).
TINY = DecoderShape(hidden=8, layers=4, heads=2, kv_heads=1, intermediate=12, vocab=10)


def llama_config(layers: int = 2, **overrides) -> LlamaConfig:
    sizes = {"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 96,
             "vocab_size": 100}
    return LlamaConfig(num_hidden_layers=layers, attn_implementation="sdpa", **{**sizes, **overrides})


def counted(fn, *args, **kwargs) -> int:
    """FLOPs that torch's counter sees. CPU sdpa normally runs a fused kernel that torch 2.14's counter
    has no formula for (it would count 0); the math backend runs the same attention as two batched
    matmuls (full n x n), which the counter counts exactly as its formula for the CUDA kernels does."""
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return counter.get_total_flops()


def run_llama(config: LlamaConfig, seq_len: int, **kwargs):
    torch.manual_seed(0)
    model_class = LlamaForCausalLM if "logits_to_keep" in kwargs else LlamaModel
    model = model_class(config).eval()
    return counted(model, input_ids=torch.randint(0, config.vocab_size, (1, seq_len)), **kwargs)


@pytest.mark.parametrize("overrides", [{}, {"num_key_value_heads": 4}, {"num_key_value_heads": 1, "head_dim": 8}])
@pytest.mark.parametrize("seq_len", [1, 13])
def test_prefill_equals_counted_llama_forward(overrides, seq_len):
    config = llama_config(**overrides)
    assert prefill_flops(seq_len, DecoderShape.from_config(config)) == run_llama(config, seq_len)


def test_lm_head_counts_the_last_position_like_generate():
    config = llama_config()
    shape = DecoderShape.from_config(config)
    assert prefill_flops(9, shape, lm_head=True) == run_llama(config, 9, logits_to_keep=1)
    assert prefill_flops(9, shape, lm_head=True) - prefill_flops(9, shape) == 2 * 64 * 100


def test_in_llm_pruning_equals_counted_layers_before_and_after():
    # Layers < K on 17 tokens, layers >= K on 6: count a K-layer and an (L-K)-layer model.
    shape = DecoderShape.from_config(llama_config(layers=3))
    expected = run_llama(llama_config(layers=1), 17) + run_llama(llama_config(layers=2), 6)
    assert prefill_flops(17, shape, prune_layer=1, pruned_len=6) == expected


def test_in_llm_pruning_by_hand():
    assert layer_flops(10, TINY) == 9600 + 3200
    assert layer_flops(4, TINY) == 3840 + 512
    assert prefill_flops(10, TINY) == 4 * 12800
    assert prefill_flops(10, TINY, prune_layer=1, pruned_len=4, selection_flops=100) == 12800 + 3 * 4352 + 100
    assert prefill_flops(10, TINY, prune_layer=0, pruned_len=4) == prefill_flops(4, TINY)
    assert prefill_flops(10, TINY, prune_layer=4, pruned_len=4) == prefill_flops(10, TINY)
    assert prefill_flops(10, TINY, prune_layer=2, pruned_len=4, lm_head=True) == 2 * 12800 + 2 * 4352 + 2 * 8 * 10
    assert prefill_flops(0, TINY, lm_head=True) == 0


def test_fastv_ranking_by_hand():
    assert fastv_flops(100, TINY) == 2 * 100 * 2 * 4
    assert fastv_flops(2400, LLAVA_NEXT_8B) == 2 * 2400 * 4096


@pytest.mark.parametrize("variant", ["paper", "released"])
@pytest.mark.parametrize(("n_low", "n_high"), [(9, 30), (16, 7)])
def test_mr_prune_flops_equal_counted_mr_prune(variant, n_low, n_high):
    low, high = torch.randn(n_low, 24), torch.randn(n_high, 24)
    keep = (n_low + n_high) // 3
    assert mr_prune_flops(n_low, n_high, 24) == counted(mrpruner.mr_prune, low, high, keep, variant=variant)


@pytest.mark.parametrize("n", [1, 2, 21, 40])
def test_gprune_flops_equal_counted_gprune(n):
    tokens = torch.randn(n, 12)
    assert gprune_flops(n, 12, iterations=5) == counted(mrpruner.gprune, tokens, n // 2, iterations=5)
    assert gprune_flops(n, 12, iterations=2) == counted(mrpruner.gprune, tokens, n // 2, iterations=2)


@pytest.mark.parametrize("iterations", [1, 2, 5, 8])
def test_gprune_matrix_power_count_equals_counted_matrix_power(iterations):
    # The released G-Prune: Gram, P^n via torch.linalg.matrix_power, then w P^n.
    tokens = torch.randn(11, 6)

    def released(x):
        probs = torch.softmax(x @ x.T, dim=-1)
        return x.norm(dim=-1) @ torch.linalg.matrix_power(probs, iterations)

    assert gprune_flops(11, 6, iterations=iterations, matrix_power=True) == counted(released, tokens)


@pytest.mark.parametrize(("n", "keep"), [(1, 1), (2, 1), (9, 0), (9, 4), (30, 3), (31, 30)])
def test_tome_flops_equal_counted_tome_merge(n, keep):
    assert tome_flops(n, 10, keep) == counted(mrpruner.tome_merge, torch.randn(n, 10), keep)


def test_flops_reduction_by_hand():
    # 4 base tokens + a 2 x 2 grid with 2 newlines = 10 visual, 2 text tokens; ratio 0.5 keeps 5:
    # dense 12 tokens, pruned 7. mr_prune and gprune score the 4 base and 4 grid tokens.
    dense, pruned = 4 * (960 * 12 + 32 * 144), 4 * (960 * 7 + 32 * 49)
    kwargs = {"n_text": 2, "n_low": 4, "rows": 2, "cols": 2, "shape": TINY}
    assert flops_reduction("random", 0.5, **kwargs) == 1 - pruned / dense
    selection = 2 * (16 + 16 + 16) * 8 + 2 * (16 + 16 + 16)  # three 4 x 4 products over d = 8, three mat-vecs
    assert flops_reduction("mrpruner", 0.5, **kwargs) == 1 - (pruned + selection) / dense
    selection = 2 * (2 * 16 * 8 + 5 * 2 * 16)  # two graphs: Gram + 5 vector-matrix products each
    assert flops_reduction("gprune", 0.5, **kwargs) == 1 - (pruned + selection) / dense
    selection = 2 * 5 * 5 * 8  # ToMe: one round, A = B = 5 of the 10 tokens
    assert flops_reduction("tome", 0.5, **kwargs) == 1 - (pruned + selection) / dense
    # FastV: layers 0-1 on 12 tokens, layers 2-3 on 7, plus the last query row against 12 keys.
    fastv = 2 * (960 * 12 + 32 * 144) + 2 * (960 * 7 + 32 * 49) + 2 * 12 * 8
    assert flops_reduction("fastv", 0.5, **kwargs) == 1 - fastv / dense


@pytest.mark.parametrize("name", ["chelsea", "astronaut_portrait", "coffee"])
def test_encoder_flops_equal_counted_vision_tower_and_projector(name):
    from mrpruner.testing import chat_inputs, sample_images, tiny_llava_next

    model, processor = tiny_llava_next()
    inputs = chat_inputs(processor, [([sample_images()[name]], "What is shown ?")])
    tiles = inputs["pixel_values"].shape[1]  # the base tile and the anyres grid's tiles
    assert tiles > 1
    expected = encoder_flops(tiles, EncoderShape.from_config(model.config))
    assert expected == counted(model.model.get_image_features, inputs["pixel_values"], inputs["image_sizes"])


def test_model_scope_adds_the_encoder_to_both_sides():
    # TINY's 10 visual + 2 text tokens (as in test_flops_reduction_by_hand) behind a small encoder.
    encoder = EncoderShape(hidden=4, layers=2, intermediate=8, text_hidden=8, image=28, patch=14)
    cost = 3 * (2 * 4 * 4 * 3 * 196 + 2 * (2 * 5 * 4 * 4 * 4 + 2 * 2 * 25 * 4 + 2 * 2 * 5 * 4 * 8)
                + 2 * 4 * (4 * 8 + 8 * 8))  # 3 tiles: embedding, 2 layers on 4 + 1 tokens, projector
    assert encoder_flops(3, encoder) == cost
    dense, pruned = 4 * (960 * 12 + 32 * 144), 4 * (960 * 7 + 32 * 49)
    kwargs = {"n_text": 2, "n_low": 4, "rows": 2, "cols": 2, "shape": TINY, "tiles": 3, "encoder": encoder}
    assert flops_reduction("random", 0.5, scope="model", **kwargs) == 1 - (pruned + cost) / (dense + cost)
    assert flops_reduction("random", 0.5, scope="llm", **kwargs) == 1 - pruned / dense
    # LLaVA-NeXT-8B, one 480x640 image: the encoder is about 5% of the unpruned whole.
    share = encoder_flops(5) / (encoder_flops(5) + prefill_flops(2400, LLAVA_NEXT_8B))
    assert 0.04 < share < 0.06 and encoder_flops(5, LLAVA_NEXT_8B_ENCODER) == encoder_flops(5)
    for method in METHODS:
        assert flops_reduction(method, 0.9, n_text=60, scope="model") < flops_reduction(method, 0.9, n_text=60)


def test_paper_protocol_costs_each_methods_own_budget():
    # 480x640 at 90%: mrpruner keeps 270 tokens, gprune 265, the others 234 (tests/test_protocol.py).
    for method, kept in [("mrpruner", 270), ("gprune", 265), ("random", 234)]:
        by_tokens = 1 - prefill_flops(60 + kept, LLAVA_NEXT_8B) / prefill_flops(60 + 2340, LLAVA_NEXT_8B)
        if method == "random":
            assert flops_reduction(method, 0.9, n_text=60, protocol="paper") == by_tokens
        else:  # the selection's own FLOPs come on top
            assert 0 < by_tokens - flops_reduction(method, 0.9, n_text=60, protocol="paper") < 0.01


@pytest.mark.parametrize("method", METHODS)
def test_flops_reduction_on_llava_next_grows_with_the_ratio(method):
    reductions = [flops_reduction(method, ratio, n_text=60) for ratio in (0.0, 0.5, 0.7, 0.9)]
    assert reductions == sorted(reductions)
    assert reductions[0] <= 0 if method != "random" else reductions[0] == 0
    # The selection costs little next to the LLM: within 1% of pruning for free.
    assert 0.85 < reductions[-1] < 0.9 if method != "fastv" else 0.8 < reductions[-1] < 0.85


def test_from_config_reads_llama_and_llava_next_configs():
    text = llama_config(layers=3)
    shape = DecoderShape(hidden=64, layers=3, heads=4, kv_heads=2, intermediate=96, vocab=100)
    assert DecoderShape.from_config(text) == shape
    assert DecoderShape.from_config(LlavaNextConfig(text_config=text.to_dict())) == shape
    assert shape.head_dim == 16
    assert LLAVA_NEXT_8B.head_dim == 128


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: prefill_flops(-1, TINY), "seq_len"),
        (lambda: prefill_flops(5, TINY, prune_layer=2, pruned_len=6), "pruned_len"),
        (lambda: prefill_flops(5, TINY, prune_layer=2, pruned_len=-1), "pruned_len"),
        (lambda: prefill_flops(5, TINY, prune_layer=-1, pruned_len=3), "prune_layer"),
        (lambda: prefill_flops(5, TINY, prune_layer=5, pruned_len=3), "prune_layer"),
        (lambda: prefill_flops(5, TINY, prune_layer=2), "pruned_len"),
        (lambda: prefill_flops(5, TINY, selection_flops=-1), "selection_flops"),
        (lambda: prefill_flops(5, DecoderShape(8, 4, 2, 1, 12), lm_head=True), "vocab"),
        (lambda: layer_flops(-3, TINY), "n"),
        (lambda: mr_prune_flops(-1, 5, 8), "n_low"),
        (lambda: mr_prune_flops(0, 0, 8), "n_high"),
        (lambda: gprune_flops(5, 8, iterations=0), "iterations"),
        (lambda: tome_flops(5, 8, 6), "keep"),
        (lambda: fastv_flops(-1, TINY), "seq_len"),
        (lambda: flops_reduction("fastv", 0.5, n_text=2, shape=TINY, fastv_layer=5), "fastv_layer"),
        (lambda: flops_reduction("fastv", 1.0, n_text=2), "ratio"),
        (lambda: flops_reduction("pdrop", 0.5, n_text=2), "method"),
        (lambda: flops_reduction("random", 0.5, n_text=-2), "n_text"),
        (lambda: flops_reduction("random", 0.5, n_text=2, rows=0), "rows"),
        (lambda: flops_reduction("random", 0.5, n_text=2, scope="vision"), "scope"),
        (lambda: flops_reduction("random", 0.5, n_text=2, protocol="released"), "protocol"),
        (lambda: encoder_flops(-1), "tiles"),
        (lambda: EncoderShape(4, 0, 8, 8), "layers"),
        (lambda: DecoderShape(8, 4, 3, 2, 12), "kv_heads"),
        (lambda: DecoderShape(9, 4, 2, 1, 12), "head_dim"),
        (lambda: DecoderShape(8, 0, 2, 1, 12), "layers"),
    ],
)
def test_bad_input_names_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


@pytest.mark.parametrize(
    "call",
    [
        lambda: prefill_flops(2.5, TINY),
        lambda: prefill_flops(True, TINY),
        lambda: prefill_flops(5, "llava"),
        lambda: prefill_flops(5, TINY, lm_head=1),
        lambda: DecoderShape.from_config(object()),
        lambda: EncoderShape.from_config(object()),
        lambda: encoder_flops(5, LLAVA_NEXT_8B),
    ],
)
def test_wrong_types_raise_type_error(call):
    with pytest.raises(TypeError):
        call()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("build", ["tiny_llava_next", "tiny_llava_onevision", "tiny_internvl"])
def test_flops_reduction_on_any_hosts_layout_equals_what_the_plugin_counts(build, method):
    """On one image of each family, flops_reduction(layout=the host's layout) with the model's own
    decoder is what `mrpruner.patch` counts on the real prefill (lm_head of the last position aside)."""
    from mrpruner import testing
    from mrpruner.hosts import host_of, internvl
    from mrpruner.patch import pruned, stats

    model, processor = getattr(testing, build)()
    image = testing.sample_images()["coffee"]
    inputs = testing.chat_inputs(processor, [([image], "What is shown ?")])
    sizes = {"image_sizes": internvl.image_sizes([image])} if host_of(model) is internvl else {}
    with pruned(model, method, 0.8), torch.no_grad():
        model(**inputs, **sizes)
        call = stats(model)
    layout = call.images[0].layout
    assert layout == host_of(model).packed_layout((image.height, image.width), model.config)
    shape = DecoderShape.from_config(model.config)
    head = 2 * shape.hidden * shape.vocab  # the LM head on the last position, which the plug-in adds
    expected = flops_reduction(method, 0.8, n_text=call.lengths_before[0] - layout.total, layout=layout, shape=shape)
    assert expected == pytest.approx(1 - (call.prefill_flops[0] - head) / (call.dense_prefill_flops[0] - head), rel=1e-12)
    if build == "tiny_llava_next":  # LLaVA-NeXT's packing: the same as giving its three counts
        assert expected == flops_reduction(method, 0.8, n_text=call.lengths_before[0] - layout.total,
                                           n_low=layout.base, rows=layout.rows, cols=layout.cols, shape=shape)
