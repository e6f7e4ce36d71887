"""LoRA on the golden tiny model: its gradients, its training, and its adapters folded into base weights by
``merge_lora_checkpoint`` (``glm-train merge-lora``) and by ``AutoModel.from_pretrained(..., adapter=...)``.

Every test runs the real MindSpore graphs (GRAPH_MODE) on the golden weights, held in float32.
"""

import shutil

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn, ops

from glm_core import AutoModel, GLMConfig, GLMForPreTraining, load_checkpoint
from glm_core.checkpoint import read_checkpoint, save_checkpoint
from glm_core.lora import LoRAConfig, apply_lora, is_adapter_name
from glm_core.names import CHECKPOINT_NAME
from glm_train.checkpoints import TrainingState, save_training_checkpoint
from glm_train.cli import main as glm_train_main
from glm_train.merge_lora import merge_lora_checkpoint
from glm_train.network import GLMForTraining
from glm_train.train_step import TrainStep, WarmupPolynomialDecay, make_optimizer

EVERY_LINEAR = ".*"  # adapters on query_key_value, dense, dense_h_to_4h and dense_4h_to_h: each kind is checked
TOKENIZER_FILES = ("ice_text.model", "tokenizer_config.json")


@pytest.fixture(scope="module")
def golden_batch(golden_case):
    """The golden ADGEN training records (4 × 40 tokens) as int32 ``input_ids`` and ``labels``."""
    records = golden_case("adgen")["train"]
    return (np.array([record["input_ids"] for record in records], np.int32),
            np.array([record["labels"] for record in records], np.int32))


@pytest.fixture(scope="module")
def base_state(golden_state):
    """The golden weights in float32 (as the training network holds them), ``lm_head.weight`` included."""
    return {name: array.astype(np.float32) for name, array in golden_state.items()}


def lora_network(config: GLMConfig, base_state: dict, lora: LoRAConfig) -> GLMForTraining:
    """The training network on the golden weights with adapters on the Linears ``lora`` targets."""
    network = GLMForTraining(config)
    for parameter in network.get_parameters():
        parameter.set_data(ms.Tensor(base_state[parameter.name]))
    apply_lora(network, lora)
    return network


def adam_state_bytes(optimizer) -> int:
    """Bytes of AdamWeightDecay's moments: the optimizer state that grows with the trained parameters."""
    return sum(moment.nbytes for moment in (*optimizer.moments1, *optimizer.moments2))


class LossGradients(nn.Cell):
    """The gradients of the network's loss with respect to ``weights``, as one graph."""

    def __init__(self, network, weights):
        super().__init__(auto_prefix=False)
        self.network, self.weights = network, ms.ParameterTuple(weights)
        self.gradients = ops.GradOperation(get_by_list=True)

    def construct(self, input_ids, labels):
        return self.gradients(self.network, self.weights)(input_ids, labels)


def test_lora_gradients_equal_central_differences(golden_config, base_state, golden_batch):
    """Backpropagated gradients of every adapter tensor against 4-point central differences of the float32 loss,
    along a random direction through the whole tensor and on its three largest entries.

    The loss (about 16) carries float32 rounding of about 1e-6; the stencil divides it by ~h, so differences
    at h = 5e-3 hold a few 1e-4 of noise; their truncation error (h⁴ terms) is below that but on the largest
    entries of layer 0's query_key_value adapter, where the golden weights curve the loss most (0.3 % there).
    Tolerance: 6e-4 + 1 % of the derivative. A wrong scaling or a transposed adapter misses by far more.
    """
    network = lora_network(golden_config, base_state, LoRAConfig(lora_rank=4, lora_alpha=8.0, lora_dropout=0.0,
                                                                 target_modules=EVERY_LINEAR))
    adapters = network.trainable_params()
    assert len(adapters) == 2 * 4 * golden_config.num_layers and all(is_adapter_name(p.name) for p in adapters)
    rng = np.random.default_rng(14)
    for parameter in adapters:  # B nonzero, so that A has a gradient; both fixed here, not by MindSpore's RNG
        scale = 0.05 if parameter.name.endswith("_b") else 0.1
        parameter.set_data(ms.Tensor(rng.normal(0.0, scale, parameter.shape).astype(np.float32)))
    input_ids, labels = ms.Tensor(golden_batch[0]), ms.Tensor(golden_batch[1])
    gradients = [gradient.asnumpy() for gradient in LossGradients(network, adapters)(input_ids, labels)]

    def loss_along(parameter, start, direction, step):
        values = []
        for multiple in (2, 1, -1, -2):
            parameter.set_data(ms.Tensor(start + multiple * step * direction))
            values.append(float(network(input_ids, labels).asnumpy()))
        parameter.set_data(ms.Tensor(start))
        return (-values[0] + 8 * values[1] - 8 * values[2] + values[3]) / (12 * step)

    step, worst = 5e-3, []
    for parameter, gradient in zip(adapters, gradients):
        start = parameter.asnumpy().copy()
        direction = rng.normal(size=start.shape).astype(np.float32)
        directions = [direction / np.linalg.norm(direction)]
        for index in np.argsort(np.abs(gradient), axis=None)[-3:]:
            entry = np.zeros_like(start)
            entry.flat[index] = 1.0
            directions.append(entry)
        for direction in directions:
            expected = float((gradient * direction).sum())
            difference = loss_along(parameter, start, direction, step)
            worst.append((abs(difference - expected), expected, parameter.name))
            assert abs(difference - expected) <= 6e-4 + 1e-2 * abs(expected), (parameter.name, difference, expected)
    error, expected, name = max(worst)
    print(f"\n{len(worst)} directional derivatives; worst |difference - gradient| {error:.1e} "
          f"(gradient {expected:.3e}, {name})")


def test_lora_loss_on_a_fixed_batch_falls_below_a_tenth(golden_config, base_state, golden_batch):
    """MindFormers' rank 8, alpha 32 and dropout 0.1, on every Linear of the golden model (on query_key_value
    alone the large golden weights leave the loss near 70 % of its start after 40 steps); the learning rate
    falls from 1e-2 to 1e-3 over the 60 steps (seeds 0-3 end at 1.2-1.9 % of the start). The base weights stay
    as they are. Also prints the optimizer state of full training beside LoRA's."""
    ms.set_seed(14)
    network = lora_network(golden_config, base_state, LoRAConfig(lora_rank=8, lora_alpha=32.0, lora_dropout=0.1,
                                                                 target_modules=EVERY_LINEAR))
    optimizer = make_optimizer(network.trainable_params(), WarmupPolynomialDecay(1e-2, 1e-3, 0, 60), 0.9, 0.95,
                               1e-8, 0.0)
    step = TrainStep(network, optimizer, max_grad_norm=1.0)
    step.set_train(True)
    frozen = {p.name: p.asnumpy().copy() for p in network.get_parameters() if not is_adapter_name(p.name)}
    input_ids, labels = (ms.Tensor(array[None]) for array in golden_batch)
    losses = [float(step(input_ids, labels)[0].asnumpy()) for _ in range(60)]
    print(f"\nLoRA losses every 10 steps: {[round(loss, 3) for loss in losses[::10]]}, last {losses[-1]:.3f}")
    assert losses[0] == pytest.approx(15.6656, abs=1e-3)  # the golden loss: a fresh adapter changes nothing
    assert losses[-1] < 0.1 * losses[0], losses
    for parameter in network.get_parameters():
        if parameter.name in frozen:
            np.testing.assert_array_equal(parameter.asnumpy(), frozen[parameter.name], err_msg=parameter.name)

    full_network = GLMForTraining(golden_config)
    full_optimizer = make_optimizer(full_network.trainable_params(), 1e-3, 0.9, 0.95, 1e-8, 0.0)
    full_bytes, lora_bytes = adam_state_bytes(full_optimizer), adam_state_bytes(optimizer)
    print(f"optimizer state: full {full_bytes:,} bytes, LoRA {lora_bytes:,} bytes ({lora_bytes / full_bytes:.1%})")
    assert lora_bytes < 0.1 * full_bytes


def model_folder(directory, config, checkpoint, golden_hf_dir):
    """A model folder as glm-convert writes one, holding ``checkpoint``."""
    directory.mkdir()
    config.save_pretrained(directory)
    shutil.copy(checkpoint, directory / CHECKPOINT_NAME)
    for name in TOKENIZER_FILES:
        shutil.copy(golden_hf_dir / name, directory)
    return directory


def train_and_save_lora(config, base_state, batch, folder):
    """A few LoRA steps on qkv and dense (dropout on) from ``base_state``, saved as glm-train saves a LoRA run:
    the adapters with their optimizer state, counters, the run config and the pet_config; and the base
    checkpoint. Returns the network, its LoRAConfig, the base and the adapter checkpoint."""
    ms.set_seed(7)
    lora = LoRAConfig(lora_rank=4, lora_alpha=16.0, lora_dropout=0.1, target_modules=".*(query_key_value|dense)$")
    network = lora_network(config, base_state, lora)
    optimizer = make_optimizer(network.trainable_params(), WarmupPolynomialDecay(1e-2, 1e-2, 0, 6), 0.9, 0.95,
                               1e-8, 0.0)
    step = TrainStep(network, optimizer, max_grad_norm=1.0)
    step.set_train(True)
    input_ids, labels = (ms.Tensor(array[None]) for array in batch)
    for _ in range(6):
        step(input_ids, labels)
    network.set_train(False)
    base = save_checkpoint(base_state, folder / "base.ckpt")
    saved = {p.name: p for p in step.get_parameters() if p.requires_grad or p.name not in base_state}
    assert any(name.startswith("adam_m.") and is_adapter_name(name) for name in saved)  # state under adapter names
    adapter = save_training_checkpoint(folder / "adapter.ckpt", saved, TrainingState(step=6, epoch=1),
                                       "run_mode: finetune\n", lora.to_dict())
    return network, lora, base, adapter


@pytest.fixture(scope="module")
def trained_lora(golden_config, base_state, golden_batch, tmp_path_factory):
    """LoRA trained on the golden weights (see :func:`train_and_save_lora`)."""
    return train_and_save_lora(golden_config, base_state, golden_batch, tmp_path_factory.mktemp("lora"))


@pytest.fixture(scope="module")
def trained_lora_on_normal_weights(golden_config, golden_batch, tmp_path_factory):
    """LoRA trained on weights of the golden shapes drawn as a fresh model draws them (Normal(0.02), head tied)."""
    ms.set_seed(3)
    state = {p.name: p.asnumpy() for p in GLMForPreTraining(golden_config, inference=True).get_parameters()}
    state["lm_head.weight"] = state["transformer.word_embeddings.embedding_table"]
    return train_and_save_lora(golden_config, state, golden_batch, tmp_path_factory.mktemp("lora_normal"))


def test_trained_adapters_are_nonzero(trained_lora):
    network, _, _, _ = trained_lora
    for parameter in network.trainable_params():
        assert np.abs(parameter.asnumpy()).max() > 1e-3, parameter.name


@pytest.mark.parametrize(("weights", "tolerance"), [("trained_lora_on_normal_weights", 1e-5), ("trained_lora", 5e-3)])
def test_merged_checkpoint_gives_the_training_networks_logits(weights, tolerance, request, golden_config,
                                                              golden_batch, tmp_path):
    """The inference model on the merged checkpoint against the training network running its adapters.

    Folding changes how the float32 products are rounded (x (W + s B A)ᵀ against x Wᵀ + s (x Aᵀ) Bᵀ), and the
    golden weights, deliberately large, amplify rounding: one ulp of noise on their query_key_value weights
    alone moves their logits by 8.3e-4 (and folding moved them by 0.8-1.0e-3 in our runs). So: 1e-5 on weights as a
    fresh model draws them, 5e-3 on the golden ones, where the adapter itself moves the logits by about 16.
    """
    network, _, base, adapter = request.getfixturevalue(weights)
    merged = merge_lora_checkpoint(base, adapter, tmp_path / "merged.ckpt")
    model = GLMForPreTraining(golden_config, inference=True)
    load_checkpoint(model, merged)
    input_ids = ms.Tensor(golden_batch[0])
    expected = network.logits(input_ids).asnumpy()
    logits = model(input_ids).asnumpy()
    without_adapter = GLMForPreTraining(golden_config, inference=True)
    load_checkpoint(without_adapter, base)
    adapter_effect = np.abs(without_adapter(input_ids).asnumpy() - expected).max()
    print(f"\n{weights}: merged vs adapter {np.abs(logits - expected).max():.1e}, the adapter moved the logits "
          f"by {adapter_effect:.1e}")
    np.testing.assert_allclose(logits, expected, rtol=0, atol=tolerance)
    assert adapter_effect > 100 * tolerance


def test_merged_checkpoint_holds_the_base_weights_with_adapters_folded(trained_lora, base_state, tmp_path):
    network, lora, base, adapter = trained_lora
    merged = read_checkpoint(merge_lora_checkpoint(base, adapter, tmp_path / "merged.ckpt"))
    assert set(merged) == set(base_state)  # no adapter, optimizer state, counter or text entry
    adapters = {p.name: p.asnumpy().astype(np.float64) for p in network.trainable_params()}
    for name, weight in merged.items():
        linear = name.removesuffix(".weight")
        if f"{linear}.mindpet_delta_lora_a" in adapters:
            update = adapters[f"{linear}.mindpet_delta_lora_b"] @ adapters[f"{linear}.mindpet_delta_lora_a"]
            expected = (base_state[name].astype(np.float64) + update * lora.scaling).astype(np.float32)
            np.testing.assert_array_equal(weight, expected, err_msg=name)
        else:
            np.testing.assert_array_equal(weight, base_state[name], err_msg=name)


def test_automodel_with_adapter_equals_the_merged_checkpoint(trained_lora, golden_config, golden_batch,
                                                             golden_hf_dir, tmp_path):
    _, _, base, adapter = trained_lora
    merged = merge_lora_checkpoint(base, adapter, tmp_path / "merged.ckpt")
    base_folder = model_folder(tmp_path / "base", golden_config, base, golden_hf_dir)
    merged_folder = model_folder(tmp_path / "merged", golden_config, merged, golden_hf_dir)
    with_adapter = AutoModel.from_pretrained(base_folder, adapter=adapter)
    from_merged = AutoModel.from_pretrained(merged_folder)
    merged_weights = {p.name: p.asnumpy() for p in from_merged.get_parameters()}
    for parameter in with_adapter.get_parameters():
        np.testing.assert_array_equal(parameter.asnumpy(), merged_weights[parameter.name], err_msg=parameter.name)
    input_ids = ms.Tensor(golden_batch[0])
    np.testing.assert_array_equal(with_adapter(input_ids).asnumpy(), from_merged(input_ids).asnumpy())


def test_merge_of_a_base_without_lm_head_writes_the_tied_embeddings(trained_lora, base_state, tmp_path):
    _, _, _, adapter = trained_lora
    headless = save_checkpoint({name: array for name, array in base_state.items() if name != "lm_head.weight"},
                               tmp_path / "headless.ckpt")
    merged = read_checkpoint(merge_lora_checkpoint(headless, adapter, tmp_path / "merged.ckpt"))
    np.testing.assert_array_equal(merged["lm_head.weight"], base_state["transformer.word_embeddings.embedding_table"])


def test_adapter_without_pet_config_takes_rank_and_alpha_from_the_caller(trained_lora, tmp_path):
    network, lora, base, _ = trained_lora
    bare = tmp_path / "bare_adapter.ckpt"
    ms.save_checkpoint([{"name": p.name, "data": p} for p in network.trainable_params()], str(bare))
    with pytest.raises(ValueError, match="stores no pet_config: give the lora_rank and lora_alpha"):
        merge_lora_checkpoint(base, bare, tmp_path / "merged.ckpt")
    given = merge_lora_checkpoint(base, bare, tmp_path / "given.ckpt", LoRAConfig(lora_rank=4, lora_alpha=16.0))
    stored = merge_lora_checkpoint(base, trained_lora[3], tmp_path / "stored.ckpt")
    assert lora.lora_rank == 4 and lora.lora_alpha == 16.0
    assert given.read_bytes() == stored.read_bytes()


def run_cli(*arguments):
    return glm_train_main(["merge-lora", *map(str, arguments)])


def test_cli_merges_and_reports_the_output(trained_lora, tmp_path, capsys):
    _, _, base, adapter = trained_lora
    assert run_cli("--base", base, "--adapter", adapter, "--output", tmp_path / "merged.ckpt") == 0
    assert str(tmp_path / "merged.ckpt") in capsys.readouterr().out
    assert (tmp_path / "merged.ckpt").is_file()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["merged.ckpt"]  # no temporary file left


@pytest.mark.parametrize("case", ["output_is_base", "output_is_adapter", "missing_base", "not_ckpt_output",
                                  "base_is_not_a_checkpoint", "adapter_is_not_a_checkpoint", "adapter_has_no_lora",
                                  "rank_disagrees", "rank_without_alpha", "adapter_of_another_model"])
def test_cli_errors_are_one_line_with_status_2_and_write_nothing(case, trained_lora, base_state, tmp_path, capsys):
    _, _, base, adapter = trained_lora
    output = tmp_path / "merged.ckpt"
    arguments = {"--base": base, "--adapter": adapter, "--output": output}
    expected = {
        "output_is_base": "is the base checkpoint",
        "output_is_adapter": "is the adapter checkpoint",
        "missing_base": "no base checkpoint at",
        "not_ckpt_output": "must end in .ckpt",
        "base_is_not_a_checkpoint": "text.ckpt: not a readable MindSpore checkpoint",
        "adapter_is_not_a_checkpoint": "text.ckpt: not a readable MindSpore checkpoint",
        "adapter_has_no_lora": "holds no LoRA adapter",
        "rank_disagrees": "was trained with lora_rank 4 and lora_alpha 16, not the given 8 and 16",
        "rank_without_alpha": "--lora_rank needs --lora_alpha as well",
        "adapter_of_another_model": "has no float transformer.layers.0.attention.dense.weight",
    }[case]
    extra = []
    if case == "output_is_base":
        arguments["--output"] = base
    elif case == "output_is_adapter":
        arguments["--output"] = adapter.parent / ".." / adapter.parent.name / adapter.name
    elif case == "missing_base":
        arguments["--base"] = tmp_path / "absent.ckpt"
    elif case == "not_ckpt_output":
        arguments["--output"] = output = tmp_path / "merged.bin"
    elif case == "base_is_not_a_checkpoint":
        arguments["--base"] = tmp_path / "text.ckpt"
        arguments["--base"].write_text("not a checkpoint\n")
    elif case == "adapter_is_not_a_checkpoint":
        arguments["--adapter"] = tmp_path / "text.ckpt"
        arguments["--adapter"].write_text("not a checkpoint\n")
    elif case == "adapter_has_no_lora":
        arguments["--adapter"] = base
    elif case == "rank_disagrees":
        extra = ["--lora_rank", "8", "--lora_alpha", "16"]
    elif case == "rank_without_alpha":
        extra = ["--lora_rank", "4"]
    elif case == "adapter_of_another_model":
        arguments["--base"] = save_checkpoint(
            {name: array for name, array in base_state.items() if "layers.0.attention.dense" not in name},
            tmp_path / "other.ckpt")
    before = {path: path.stat().st_mtime_ns for path in (base, adapter)}
    status = run_cli(*[str(item) for pair in arguments.items() for item in pair], *extra)
    error = capsys.readouterr().err
    assert status == 2
    assert expected in error and error.count("\n") == 1, error
    assert not output.exists()
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".")]  # no temporary file
    assert {path: path.stat().st_mtime_ns for path in (base, adapter)} == before  # inputs untouched
