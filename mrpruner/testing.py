"""Offline builders for tests, notebooks and benchmarks: tiny randomly initialised LLaVA-NeXT,
LLaVA-OneVision and InternVL models whose configs mirror `llava-hf/llama3-llava-next-8b-hf`,
`llava-hf/llava-onevision-qwen2-7b-ov-hf` and `OpenGVLab/InternVL3-8B-hf` in structure, their
processors built without the hub, the real-size LLaVA-NeXT config (no weights) for GPU timing,
and real photos from scikit-image."""

from __future__ import annotations

import torch

LLAVA_NEXT_8B_ID = "llava-hf/llama3-llava-next-8b-hf"
# The anyres grid of llama3-llava-next-8b (height, width), from its conversion script.
PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]

_SPECIAL = ["<pad>", "<unk>", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<image>"]
_WORDS = (
    "user assistant system what is shown in the this image picture photo describe a an of and or on at to "
    "with for from by it its there are be can you see here which how many colour color red green blue black "
    "white yellow left right top bottom cat coffee cup rocket person astronaut sky flag space animal table "
    "one two three four five yes no answer question please briefly detail short long . , ? ! : ; ' - \n"
).split(" ")
# Llama-3 chat layout (header, blank line, content, end of turn), images before the text of a turn.
_CHAT_TEMPLATE = (
    "{{ '<|begin_of_text|>' }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for item in message['content'] | selectattr('type', 'equalto', 'text') %}{{ item['text'] }}{% endfor %}"
    "{% endif %}{{ '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def tiny_llava_next(seed: int = 0, dtype: torch.dtype = torch.float32, attn_implementation: str = "sdpa"):
    """(model, processor): a randomly initialised `LlavaNextForConditionalGeneration` in eval mode
    with the real model's structure (CLIP 336/14 -> 24x24 = 576 base tokens, its anyres pinpoints,
    vision layer -2, 'default' strategy, gelu projector, Llama with grouped KV heads) at toy width,
    and a `LlavaNextProcessor` built offline. The global RNG is left untouched."""
    _check_builder_arguments(dtype, attn_implementation)
    processor = tiny_processor()
    config = small_llava_next_config(processor.tokenizer, hidden=64, intermediate=128, layers=4, heads=4, kv_heads=2,
                                     vision=(32, 64, 2, 2), tile=336, pinpoints=PINPOINTS, rope_theta=500000.0,
                                     max_positions=8192)
    model = random_llava_next(config, seed=seed, attn_implementation=attn_implementation)
    return model.to(dtype), processor


def small_llava_next_config(tokenizer, *, hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int,
                            vision: tuple[int, int, int, int], tile: int, pinpoints, rope_theta: float,
                            max_positions: int):
    """A `LlavaNextConfig` with LLaVA-NeXT's structure at toy size: CLIP on `tile`-pixel tiles of
    14-pixel patches (`vision` = hidden, MLP, layers, heads), vision layer -2, the 'default'
    strategy, a gelu projector and a Llama of the given sizes; token ids from `tokenizer`."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextConfig

    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=max_positions,
        rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    v_hidden, v_mlp, v_layers, v_heads = vision
    vision_config = CLIPVisionConfig(hidden_size=v_hidden, intermediate_size=v_mlp, num_hidden_layers=v_layers,
                                     num_attention_heads=v_heads, image_size=tile, patch_size=14,
                                     projection_dim=v_hidden, hidden_act="quick_gelu")
    return LlavaNextConfig(
        vision_config=vision_config, text_config=text, image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=pinpoints, vision_feature_layer=-2, vision_feature_select_strategy="default",
        projector_hidden_act="gelu", image_seq_length=(tile // 14) ** 2, tie_word_embeddings=False,
    )


def random_llava_next(config, *, seed: int = 0, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                      attn_implementation: str = "sdpa"):
    """A randomly initialised `LlavaNextForConditionalGeneration` of `config` in eval mode, built
    directly on `device` in `dtype` (a model of the real size never passes through host memory).
    Seeded; the global RNGs are left untouched. Sets `config.dtype`, as transformers does."""
    from transformers import LlavaNextForConditionalGeneration

    return random_model(LlavaNextForConditionalGeneration, config, seed=seed, dtype=dtype, device=device,
                        attn_implementation=attn_implementation)


def random_model(model_class, config, *, seed: int = 0, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu", attn_implementation: str = "sdpa"):
    """A randomly initialised `model_class` (a transformers image-text model) of `config` in eval
    mode, built on `device` in `dtype`, seeded without touching the global RNGs; its generation
    config pads with the text model's pad token."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), device:
        torch.manual_seed(seed)
        model = model_class._from_config(config, dtype=dtype, attn_implementation=attn_implementation)
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    return model.eval()


def real_size_llava_next(*, seed: int = 0, dtype: torch.dtype = torch.bfloat16, device: torch.device | str = "cuda",
                         attn_implementation: str = "sdpa"):
    """(model, processor): random weights of llama3-llava-next-8b's real size and structure
    (`llava_next_8b_config`; 16.7 GB in bf16) built on `device`, and the offline processor of the
    tiny model, whose token ids the config takes. For timing: dense kernels take the same time
    whatever the weights, while the selections see features that mean nothing."""
    processor = tiny_processor()
    tokenizer = processor.tokenizer
    config = llava_next_8b_config()
    config.image_token_index = tokenizer.convert_tokens_to_ids("<image>")
    config.text_config.bos_token_id, config.text_config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    config.text_config.pad_token_id = tokenizer.pad_token_id
    model = random_llava_next(config, seed=seed, dtype=dtype, device=device, attn_implementation=attn_implementation)
    return model, processor


def tiny_processor():
    """A `LlavaNextProcessor` for the tiny model: a WordLevel tokenizer (Llama-3 style special tokens,
    `<image>`, left padding, a Llama-3 chat template) and the real model's image processor settings."""
    return offline_processor([w for w in _WORDS if w.strip()])


def offline_processor(words, *, tile: int = 336, pinpoints=PINPOINTS):
    """A `LlavaNextProcessor` built without the hub: a WordLevel tokenizer over the Llama-3 special
    tokens, `<image>` and `words` (left padding, Llama-3 chat template), and LLaVA-NeXT's image
    processor on `tile`-pixel tiles and the anyres `pinpoints` (14-pixel patches, CLS counted)."""
    from transformers import LlavaNextImageProcessor, LlavaNextProcessor

    tokenizer = word_tokenizer(_SPECIAL, words, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                               pad_token="<pad>", additional_special_tokens=_SPECIAL[3:])
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": tile}, crop_size={"height": tile, "width": tile}, image_grid_pinpoints=pinpoints,
    )
    return LlavaNextProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=14,
        vision_feature_select_strategy="default", num_additional_image_tokens=1, chat_template=_CHAT_TEMPLATE,
    )


def word_tokenizer(special: list[str], words, *, eos_token: str, pad_token: str, bos_token: str | None = None,
                   **specials):
    """A `PreTrainedTokenizerFast` built offline: a WordLevel vocabulary of the `special` tokens
    (`<unk>` among them), then `words`, split on whitespace, left padding; `specials` are passed on
    (additional or named extra special tokens)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(dict.fromkeys(list(special) + list(words)))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos_token, eos_token=eos_token,
                                   pad_token=pad_token, unk_token="<unk>", padding_side="left", **specials)


def chat_inputs(processor, prompts, device: torch.device | str | None = None):
    """Model inputs (left-padded batch) for [(images, question), ...]: each prompt is one user turn
    with its images before the question, through the processor's chat template."""
    texts, images = [], []
    for prompt_images, question in prompts:
        content = [{"type": "image"} for _ in prompt_images] + [{"type": "text", "text": question}]
        texts.append(processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True))
        images.extend(prompt_images)
    inputs = processor(images=images or None, text=texts, return_tensors="pt", padding=True)
    return inputs if device is None else inputs.to(device)


def llava_next_8b_config():
    """The `LlavaNextConfig` of llama3-llava-next-8b (Llama-3-8B-Instruct text model, CLIP ViT-L/14-336
    vision tower) with no weights, for building a random-weight model of the real size (GPU timing).
    Token ids and vocab size as in the HF conversion (image 128256, pad 128257, vocab padded to 128320)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextConfig

    text = LlamaConfig(
        vocab_size=128320, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        bos_token_id=128000, eos_token_id=128009, pad_token_id=128257,
    )
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu")
    return LlavaNextConfig(
        vision_config=vision, text_config=text, image_token_index=128256, image_grid_pinpoints=PINPOINTS,
        vision_feature_layer=-2, vision_feature_select_strategy="default", projector_hidden_act="gelu",
        image_seq_length=576, tie_word_embeddings=False,
    )


def same_up_to_ties(kept_a: torch.Tensor, kept_b: torch.Tensor, scores: torch.Tensor, tolerance: float) -> bool:
    """Whether two top-k choices (index tensors of one length) over the 1-D `scores` agree but for
    tokens scored within `tolerance` of the k-th largest: the ones that another kernel's rounding
    (a last-bit difference) may order either way. Tests compare selections across kernels with it."""
    if len(kept_a) != len(kept_b):
        return False
    differ = sorted(set(kept_a.tolist()) ^ set(kept_b.tolist()))
    if not differ:
        return True
    boundary = scores.float().topk(len(kept_a)).values[-1]
    return bool(((scores.float()[differ] - boundary).abs() <= tolerance).all())


def argmax_margin(logits: torch.Tensor) -> float:
    """The smallest gap between the largest and second largest logit over all rows of `logits`
    (..., vocab): greedy decoding picks the same token under any rounding smaller than half of it."""
    top = logits.float().topk(2, dim=-1).values
    return float((top[..., 0] - top[..., 1]).min())


def sample_images() -> dict:
    """Real photos shipped with scikit-image, as RGB PIL images of different aspect ratios:
    astronaut (512x512), coffee (400x600), chelsea (300x451), rocket (427x640) and a portrait crop of
    the astronaut (512x256, height x width)."""
    from PIL import Image
    from skimage import data

    astronaut = data.astronaut()
    arrays = {"astronaut": astronaut, "coffee": data.coffee(), "chelsea": data.chelsea(), "rocket": data.rocket(),
              "astronaut_portrait": astronaut[:, 128:384]}
    return {name: Image.fromarray(array.copy()) for name, array in arrays.items()}


LLAVA_ONEVISION_7B_ID = "llava-hf/llava-onevision-qwen2-7b-ov-hf"
INTERNVL3_8B_ID = "OpenGVLab/InternVL3-8B-hf"
# llava-onevision-qwen2-7b-ov's anyres grid (height, width): 1 to 6 tiles of 384 pixels a side.
ONEVISION_PINPOINTS = [[384 * h, 384 * w] for h in range(1, 7) for w in range(1, 7)]
_QWEN_SPECIAL = ["<|endoftext|>", "<unk>", "<|im_start|>", "<|im_end|>"]
_QWEN_NAMED = {"im_start_token": "<|im_start|>"}  # a special token, so the word split keeps it whole


def _chatml_template(image_token: str, separator: str) -> str:
    """A Qwen2 (ChatML) chat template that writes one `image_token` per image of a turn, each followed
    by `separator`, before the turn's text: the layout of OneVision's and InternVL's templates."""
    return (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
        "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
        "{% for item in message['content'] | selectattr('type', 'equalto', 'image') %}"
        f"{{{{ '{image_token}{separator}' }}}}{{% endfor %}}"
        "{% for item in message['content'] | selectattr('type', 'equalto', 'text') %}{{ item['text'] }}{% endfor %}"
        "{% endif %}{{ '<|im_end|>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )


def tiny_qwen2_config(tokenizer, *, hidden: int = 64, intermediate: int = 128, layers: int = 4, heads: int = 4,
                      kv_heads: int = 2):
    """A `Qwen2Config` at toy width with Qwen2's structure (grouped KV heads, biased q/k/v, rope
    theta 1e6) and `tokenizer`'s ids; the text model of both OneVision and InternVL."""
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=32768, rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )


def tiny_llava_onevision(seed: int = 0, dtype: torch.dtype = torch.float32, attn_implementation: str = "sdpa"):
    """(model, processor): a randomly initialised `LlavaOnevisionForConditionalGeneration` in eval mode
    with llava-onevision-qwen2-7b-ov's structure (SigLIP 384/14 -> 27x27 = 729 base tokens, no CLS,
    'full' strategy, last vision layer, its 6x6 anyres pinpoints, anyres_max_9, unpadded grid with a
    newline per row, biased projector, Qwen2 text) at toy width, and its processor built offline."""
    from transformers import (LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration,
                              LlavaOnevisionImageProcessor, LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor,
                              SiglipVisionConfig)

    _check_builder_arguments(dtype, attn_implementation)
    tokenizer = word_tokenizer(_QWEN_SPECIAL + ["<image>", "<video>"], [w for w in _WORDS if w.strip()],
                               eos_token="<|im_end|>", pad_token="<|endoftext|>",
                               extra_special_tokens={"image_token": "<image>", "video_token": "<video>", **_QWEN_NAMED})
    image_processor = LlavaOnevisionImageProcessor(size={"height": 384, "width": 384},
                                                   image_grid_pinpoints=ONEVISION_PINPOINTS, do_pad=True)
    processor = LlavaOnevisionProcessor(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=LlavaOnevisionVideoProcessor(),
        num_image_tokens=729, vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_9",
        chat_template=_chatml_template("<image>", "\n"),
    )
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                image_size=384, patch_size=14, vision_use_head=False)
    config = LlavaOnevisionConfig(
        vision_config=vision, text_config=tiny_qwen2_config(tokenizer),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"), vision_feature_layer=-1,
        vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_9",
        image_grid_pinpoints=ONEVISION_PINPOINTS, multimodal_projector_bias=True, projector_hidden_act="gelu",
    )
    model = random_model(LlavaOnevisionForConditionalGeneration, config, seed=seed,
                         attn_implementation=attn_implementation)
    return model.to(dtype), processor


def tiny_internvl(seed: int = 0, dtype: torch.dtype = torch.float32, attn_implementation: str = "sdpa"):
    """(model, processor): a randomly initialised `InternVLForConditionalGeneration` in eval mode with
    InternVL3-8B's structure (InternViT on 448/14 tiles, CLS dropped, last vision layer, pixel
    shuffle 0.5 -> 256 tokens a tile, 1 to 12 tiles plus a thumbnail, no newlines, Qwen2 text) at
    toy width, and its processor built offline (`<img>`, `<IMG_CONTEXT>` x 256 a tile, `</img>`)."""
    from transformers import (GotOcr2ImageProcessor, InternVLConfig, InternVLForConditionalGeneration,
                              InternVLProcessor, InternVLVideoProcessor, InternVLVisionConfig)

    _check_builder_arguments(dtype, attn_implementation)
    images = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
              "video_token": "<video>"}
    tokenizer = word_tokenizer(_QWEN_SPECIAL + list(images.values()), [w for w in _WORDS if w.strip()],
                               eos_token="<|im_end|>", pad_token="<|endoftext|>",
                               extra_special_tokens={**images, **_QWEN_NAMED})
    image_processor = GotOcr2ImageProcessor(size={"height": 448, "width": 448}, crop_to_patches=True, min_patches=1,
                                            max_patches=12)
    videos = InternVLVideoProcessor(size={"height": 448, "width": 448})  # a frame is one tile (384 fails the tower)
    processor = InternVLProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=videos,
                                  image_seq_length=256, chat_template=_chatml_template("<IMG_CONTEXT>", "\n"))
    vision = InternVLVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                  image_size=448, patch_size=14, norm_type="layer_norm", use_mean_pooling=True)
    config = InternVLConfig(
        vision_config=vision, text_config=tiny_qwen2_config(tokenizer),
        image_token_id=tokenizer.context_image_token_id, image_seq_length=256, downsample_ratio=0.5,
        projector_hidden_act="gelu", vision_feature_layer=-1, vision_feature_select_strategy="default",
        tie_word_embeddings=False,
    )
    model = random_model(InternVLForConditionalGeneration, config, seed=seed, attn_implementation=attn_implementation)
    return model.to(dtype), processor


def _check_builder_arguments(dtype, attn_implementation: str) -> None:
    """The tiny builders' shared argument checks: a floating dtype, sdpa or eager attention."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype (float32/float16/bfloat16), got {dtype!r}")
    if attn_implementation not in ("sdpa", "eager"):
        raise ValueError(f"attn_implementation must be 'sdpa' or 'eager', got {attn_implementation!r}")
