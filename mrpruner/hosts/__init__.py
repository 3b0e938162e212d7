"""What is model-specific, one module per multi-resolution family: where each resolution's
tokens sit in the language model's input and how the family packs them. `llava_onevision` and
`internvl` state their packing here (`packed_layout`, `check_config`); LLaVA-NeXT's is still
`mrpruner.llava_next`, which `patch` drives."""
