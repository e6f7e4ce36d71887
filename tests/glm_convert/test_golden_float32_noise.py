"""The golden logits are float32 arithmetic, rounding included: the measurement behind glm-core's tolerance.

``forward.npz`` holds the logits of the original THUDM ChatGLM-6B code (``modeling_chatglm.py``,
transformers 4.33, torch on CPU; a float32 model loaded from the float16 weights). Below, that code's
forward pass is restated op for op in plain torch and run over the golden tiny checkpoint:

* in float32 it reproduces every golden logit bit for bit: this *is* the reference's arithmetic;
* in float64 the same op sequence lands up to 6.6e-4 from the golden logits (logits_5; logits_3 3.1e-4,
  logits_2 1.0e-4, the other prompts 3-6e-5; measured with torch 2.13).

So the golden file carries float32 rounding noise of several 1e-4, and issue 3's bound of 1e-4 on the
MindSpore port is below the reference's own noise: a port that sums in another order cannot be held to it.
``tests/glm_core/test_core_forward.py`` bounds the worst logit by 1e-3 for this reason.

Bit equality needs the kernels of the golden run (measured on an AMD EPYC): torch's AVX512 CPU kernels and
MKL's products as split for 2 threads. Others round differently, by amounts that are the same noise again
(ATEN_CPU_CAPABILITY=avx2: 5e-5; =default: 4.3e-4; MKL_CBWR=COMPATIBLE: 5.4e-4; 1, 3 or 4 threads: 1.4e-5
on logits_0).
"""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

# The original GLMBlock computes its residual scale from its own default num_layers=28, not the config's.
ALPHA = (2 * 28) ** 0.5
BOS = 3004  # <sop> of the golden tokenizer


@pytest.fixture(scope="module")
def hf_config(golden_hf_dir) -> dict:
    return json.loads((golden_hf_dir / "config.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def golden_logits(golden_dir):
    return np.load(golden_dir / "cases" / "forward.npz")


@pytest.fixture
def two_torch_threads():
    """MKL's small products round by how they are split: 2 threads reproduce the golden run (1, 3, 4 do not)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def rotate(q, k, cos, sin, position_id):
    """The original ``apply_rotary_pos_emb_index``: ``cos``/``sin`` rows looked up by ``position_id`` [S, B]."""
    cos = F.embedding(position_id, cos.squeeze(1)).unsqueeze(2)
    sin = F.embedding(position_id, sin.squeeze(1)).unsqueeze(2)
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def reference_logits(state: dict, config: dict, case: dict, dtype: torch.dtype) -> np.ndarray:
    """``modeling_chatglm.py``'s forward of one prompt, op for op, in ``dtype``: logits ``[seq, vocab]``."""
    w = {name: tensor.to(dtype) for name, tensor in state.items()}
    heads, eps = config["num_attention_heads"], config["layernorm_epsilon"]
    ids = case["input_ids"]
    seq, context = len(ids), ids.index(BOS)
    # get_masks: causal, the context visible to every row; True = masked.
    mask = torch.ones((1, seq, seq)).tril_()
    mask[0, :, :context] = 1
    mask = mask.unsqueeze(1) < 0.5
    positions, blocks = (torch.tensor(row).unsqueeze(1) for row in case["position_ids"])  # [S, B=1] each

    def layer_norm(x, prefix):
        return F.layer_norm(x, x.shape[-1:], w[prefix + ".weight"], w[prefix + ".bias"], eps)

    def linear(x, prefix):
        return F.linear(x, w[prefix + ".weight"], w.get(prefix + ".bias"))

    hidden = F.embedding(torch.tensor([ids]), w["transformer.word_embeddings.weight"]).transpose(0, 1)  # [S, B, H]
    width = hidden.shape[-1]
    head_dim = width // heads
    for layer in range(config["num_layers"]):
        p = f"transformer.layers.{layer}."
        attention_input = layer_norm(hidden, p + "input_layernorm")
        mixed = linear(attention_input, p + "attention.query_key_value")
        q, k, v = mixed.view(seq, 1, heads, 3 * head_dim).split(head_dim, dim=-1)
        # RotaryEmbedding: the float16 inv_freq buffer, cast with the model; angles in the model's dtype.
        inv_freq = w[p + "attention.rotary_emb.inv_freq"]
        angles = torch.einsum("i,j->ij", torch.arange(max(map(max, case["position_ids"])) + 1, dtype=dtype), inv_freq)
        angles = torch.cat((angles, angles), dim=-1)
        cos, sin = angles.cos()[:, None, :], angles.sin()[:, None, :]
        (q1, q2), (k1, k2) = q.chunk(2, dim=-1), k.chunk(2, dim=-1)
        q1, k1 = rotate(q1, k1, cos, sin, positions)
        q2, k2 = rotate(q2, k2, cos, sin, blocks)
        q, k = torch.cat([q1, q2], dim=-1), torch.cat([k1, k2], dim=-1)
        # attention_fn: the query is divided by sqrt(d)·(layer + 1), the scores multiplied back after the mask.
        coeff = float(layer + 1)
        q = (q / (math.sqrt(head_dim) * coeff)).view(seq, heads, head_dim)
        scores = torch.baddbmm(torch.empty(heads, seq, seq, dtype=dtype), q.transpose(0, 1),
                               k.view(seq, heads, head_dim).transpose(0, 1).transpose(1, 2), beta=0.0, alpha=1.0)
        scores = scores.view(1, heads, seq, seq).masked_fill_(mask, -10000.0) * coeff
        probs = F.softmax(scores, dim=-1).view(heads, seq, seq)
        context_layer = torch.bmm(probs, v.view(seq, heads, head_dim).transpose(0, 1)).view(1, heads, seq, head_dim)
        context_layer = context_layer.permute(2, 0, 1, 3).contiguous().view(seq, 1, width)
        hidden = attention_input * ALPHA + linear(context_layer, p + "attention.dense")
        mlp_input = layer_norm(hidden, p + "post_attention_layernorm")
        x = linear(mlp_input, p + "mlp.dense_h_to_4h")
        x = 0.5 * x * (1.0 + torch.tanh(0.7978845608028654 * x * (1.0 + 0.044715 * x * x)))  # gelu_impl
        hidden = mlp_input * ALPHA + linear(x, p + "mlp.dense_4h_to_h")
    hidden = layer_norm(hidden, "transformer.final_layernorm")
    return linear(hidden, "lm_head").permute(1, 0, 2).contiguous()[0].numpy()


@pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() != "AVX512",
                    reason="the golden logits were computed with torch's AVX512 CPU kernels")
def test_float32_restatement_reproduces_the_golden_logits_exactly(
        golden_torch_state, hf_config, golden_case, golden_logits, two_torch_threads):
    for case in golden_case("forward"):
        np.testing.assert_array_equal(reference_logits(golden_torch_state, hf_config, case, torch.float32),
                                      golden_logits[case["name"]], err_msg=case["name"])


def test_golden_logits_carry_float32_rounding_noise(golden_torch_state, hf_config, golden_case, golden_logits):
    """The float64 restatement is 6.6e-4 from the golden logits at worst (logits_5), well above 1e-4."""
    errors = {case["name"]: np.abs(reference_logits(golden_torch_state, hf_config, case, torch.float64)
                                   - golden_logits[case["name"]]).max()
              for case in golden_case("forward")}
    print("float64 restatement vs golden, max |delta|:", {name: f"{error:.2e}" for name, error in errors.items()})
    assert 1e-4 < max(errors.values()) < 2e-3
