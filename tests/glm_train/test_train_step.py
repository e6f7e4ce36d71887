"""The compiled training step: it learns, it clips, and its float16 loss scaling skips overflowing steps."""

import json

import mindspore as ms
import numpy as np
import pytest

from glm_train.network import GLMForTraining
from glm_train.train_step import LossScaleSettings, TrainStep, WarmupPolynomialDecay, make_optimizer


@pytest.fixture(scope="module")
def golden_batch(golden_dir):
    records = json.loads((golden_dir / "cases" / "adgen.json").read_text())["train"]
    input_ids = np.array([record["input_ids"] for record in records], np.int32)
    labels = np.array([record["labels"] for record in records], np.int32)
    return input_ids, labels


def golden_network(config, state, dtype=np.float32):
    network = GLMForTraining(config)
    for parameter in network.get_parameters():
        parameter.set_data(ms.Tensor(state[parameter.name].astype(dtype)))
    return network


def test_loss_on_a_fixed_batch_falls_below_a_tenth(golden_config, golden_state, golden_batch):
    network = golden_network(golden_config, golden_state)
    optimizer = make_optimizer(network.trainable_params(), WarmupPolynomialDecay(2e-3, 2e-3, 0, 40), 0.9, 0.95,
                               1e-8, 0.1)
    step = TrainStep(network, optimizer, micro_batches=1, max_grad_norm=1.0)
    input_ids, labels = (ms.Tensor(array[None]) for array in golden_batch)
    losses = [float(step(input_ids, labels)[0].asnumpy()) for _ in range(40)]
    assert losses[0] == pytest.approx(15.6656, abs=1e-3)  # the golden loss: the first step sees the weights as given
    assert losses[-1] < 0.1 * losses[0], losses


def test_micro_batches_accumulate_into_one_update(golden_config, golden_state, golden_batch):
    """Two micro-batches of two give the mean of their losses and one optimizer step."""
    input_ids, labels = golden_batch
    network = golden_network(golden_config, golden_state)
    optimizer = make_optimizer(network.trainable_params(), WarmupPolynomialDecay(1e-3, 1e-3, 0, 10), 0.9, 0.95,
                               1e-8, 0.0)
    step = TrainStep(network, optimizer, micro_batches=2, max_grad_norm=None)
    halves = [float(network(ms.Tensor(input_ids[i:i + 2]), ms.Tensor(labels[i:i + 2])).asnumpy()) for i in (0, 2)]
    loss, overflow, _, _ = step(ms.Tensor(input_ids.reshape(2, 2, -1)), ms.Tensor(labels.reshape(2, 2, -1)))
    assert float(loss.asnumpy()) == pytest.approx(np.mean(halves), rel=1e-6)
    assert not bool(overflow.asnumpy())
    assert int(optimizer.global_step.asnumpy()[0]) == 1


def test_reported_gradient_norm_is_the_global_norm_before_clipping(golden_config, golden_state, golden_batch,
                                                                    golden_dir):
    expected = json.loads((golden_dir / "cases" / "train.json").read_text())["float64"]["grad_norms"]
    network = golden_network(golden_config, golden_state)
    optimizer = make_optimizer(network.trainable_params(), WarmupPolynomialDecay(1e-3, 1e-3, 0, 10), 0.9, 0.95,
                               1e-8, 0.1)
    input_ids, labels = (ms.Tensor(array[None]) for array in golden_batch)
    _, _, _, norm = TrainStep(network, optimizer, max_grad_norm=1.0)(input_ids, labels)
    assert float(norm.asnumpy()) == pytest.approx(np.sqrt(sum(n * n for n in expected.values())), rel=1e-5)


def test_float16_overflow_skips_the_update_and_halves_the_scale(golden_config, golden_state, golden_batch):
    config = golden_config.__class__(**{**golden_config.to_dict(), "param_init_type": "float16",
                                        "compute_dtype": "float16"})
    network = golden_network(config, golden_state, np.float16)
    before = {p.name: p.asnumpy().copy() for p in network.trainable_params()}
    optimizer = make_optimizer(network.trainable_params(), WarmupPolynomialDecay(1e-3, 1e-3, 0, 10), 0.9, 0.95,
                               1e-8, 0.1)
    step = TrainStep(network, optimizer, loss_scale=LossScaleSettings(2.0 ** 32, 2.0, 1000))
    input_ids, labels = (ms.Tensor(array[None]) for array in golden_batch)
    loss, overflow, scale, _ = step(input_ids, labels)
    assert bool(overflow.asnumpy()) and float(scale.asnumpy()) == 2.0 ** 32
    assert float(step.scale_sense.asnumpy()) == 2.0 ** 31
    for parameter in network.trainable_params():
        np.testing.assert_array_equal(parameter.asnumpy(), before[parameter.name], err_msg=parameter.name)
    # the scale falls until the float16 gradients fit, then the weights move
    for _ in range(40):
        _, overflow, _, _ = step(input_ids, labels)
        if not bool(overflow.asnumpy()):
            break
    assert not bool(overflow.asnumpy())
    assert np.isfinite(float(loss.asnumpy()))
    assert any((p.asnumpy() != before[p.name]).any() for p in network.trainable_params())


def test_a_loss_window_gives_the_same_loss_and_gradients(golden_config, golden_state, golden_batch):
    """Logits only where labels are (the answer's window) change nothing but the arithmetic saved."""
    from glm_train.network import label_span

    input_ids, labels = (ms.Tensor(array) for array in golden_batch)
    window = label_span(golden_batch[1])
    assert window < golden_batch[1].shape[1] - 1  # the golden records' prompts hold no label
    results = []
    for loss_window in (None, window):
        network = golden_network(golden_config, golden_state)
        network.loss_window = loss_window
        loss, grads = ms.value_and_grad(network, None, network.trainable_params())(input_ids, labels)
        results.append((float(loss.asnumpy()), [grad.asnumpy() for grad in grads]))
    assert results[1][0] == pytest.approx(results[0][0], rel=1e-6)
    for whole, windowed in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(windowed, whole, rtol=1e-4, atol=1e-6)
