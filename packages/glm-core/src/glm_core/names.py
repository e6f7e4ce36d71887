"""Checkpoint names: MindFormers' parameter names and their Hugging Face twins.

Free of MindSpore, so glm-convert can map names without loading the framework.
"""

from __future__ import annotations

CHECKPOINT_NAME = "model.ckpt"  # the checkpoint inside a model folder written by save_pretrained / glm-convert

_HF_LAYERNORMS = ("input_layernorm", "post_attention_layernorm", "final_layernorm")


def mindformers_name(hf_name: str) -> str | None:
    """The MindFormers checkpoint name of a Hugging Face ChatGLM-6B tensor, or None for one we drop.

    ``word_embeddings.weight`` → ``word_embeddings.embedding_table``; layernorm ``weight``/``bias`` →
    ``gamma``/``beta``; ``rotary_emb.inv_freq`` is dropped (the model recomputes it); the rest keep their names.
    """
    if hf_name.endswith("rotary_emb.inv_freq"):
        return None
    if hf_name.endswith("word_embeddings.weight"):
        return hf_name[: -len("weight")] + "embedding_table"
    prefix, _, leaf = hf_name.rpartition(".")
    if prefix.endswith(_HF_LAYERNORMS):
        return f"{prefix}.{ {'weight': 'gamma', 'bias': 'beta'}.get(leaf, leaf) }"
    return hf_name


def hf_name(mindformers: str) -> str:
    """The Hugging Face name of a MindFormers checkpoint tensor (inverse of :func:`mindformers_name`)."""
    if mindformers.endswith("word_embeddings.embedding_table"):
        return mindformers[: -len("embedding_table")] + "weight"
    prefix, _, leaf = mindformers.rpartition(".")
    if prefix.endswith(_HF_LAYERNORMS):
        return f"{prefix}.{ {'gamma': 'weight', 'beta': 'bias'}.get(leaf, leaf) }"
    return mindformers
