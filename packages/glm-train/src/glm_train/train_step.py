"""One training step as one compiled MindSpore graph, and the learning-rate schedule it reads.

    micro-batches ─► loss · scale ─► gradients ─► ÷ scale, ÷ micro-batches ─► finite? ─► clip to max norm
                  ─► AdamWeightDecay (learning rate from the schedule) ─► loss scale update

Everything runs in the graph: the forward, the backward, gradient accumulation over the micro-batches of
one step (unrolled, so there is one graph and no gradient buffers), dynamic loss scaling for float16, global
norm clipping and the optimizer. A step whose gradients overflow changes no weight and halves the scale,
as MindFormers' ``MFTrainOneStepCell`` does.

Memory: beside the weights and Adam's two moments, a step holds one gradient per weight and, for a moment
each, a second copy of the tied embedding table's gradient (the largest: 130528 rows). The table's two uses
make one gradient (the head's dense product, the lookup's rows added into it, not a second dense table), and
unscaling and clipping multiply each gradient just before its own update (not all of them at once).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.nn.learning_rate_schedule import LearningRateSchedule

from glm_train.distributed import DataParallelReduction, data_parallel_ranks


class WarmupPolynomialDecay(LearningRateSchedule):
    """MindFormers' ``polynomial`` schedule: linear warmup from 0 to ``learning_rate`` over ``warmup_steps``,
    then ``(learning_rate - lr_end) · (1 - progress)^power + lr_end`` until ``total_steps``, ``lr_end`` after."""

    def __init__(self, learning_rate: float, lr_end: float, warmup_steps: int, total_steps: int, power: float = 1.0):
        super().__init__()
        self.learning_rate, self.lr_end, self.power = float(learning_rate), float(lr_end), float(power)
        self.warmup_steps = max(int(warmup_steps), 0)
        self.decay_steps = max(int(total_steps) - self.warmup_steps, 1)

    def at(self, step: int) -> float:
        """The learning rate of step ``step`` (0-based), in Python: what the graph computes, for logs."""
        if step < self.warmup_steps:
            return self.learning_rate * step / self.warmup_steps
        progress = min((step - self.warmup_steps) / self.decay_steps, 1.0)
        return (self.learning_rate - self.lr_end) * (1.0 - progress) ** self.power + self.lr_end

    def construct(self, global_step):
        step = global_step.astype(ms.float32)
        warmup = max(self.warmup_steps, 1)
        warming = step * (self.learning_rate / warmup)
        progress = ops.minimum((step - self.warmup_steps) / self.decay_steps, 1.0)
        decayed = (self.learning_rate - self.lr_end) * ops.pow(1.0 - progress, self.power) + self.lr_end
        return ops.select(step < self.warmup_steps, warming, decayed)


@dataclass(frozen=True)
class LossScaleSettings:
    """Dynamic loss scaling (MindSpore's ``DynamicLossScaleUpdateCell``); ``None`` in its place means none."""

    loss_scale_value: float = 2.0 ** 32
    scale_factor: float = 2.0
    scale_window: int = 1000


def decays(parameter) -> bool:
    """Weight decay applies to every weight but layernorms and biases, as MindFormers groups them."""
    name = parameter.name.lower()
    return "layernorm" not in name and "bias" not in name


class ScaledAdamWeightDecay(nn.AdamWeightDecay):
    """MindSpore's ``AdamWeightDecay`` (its fused in-place kernel, the same state and checkpoint names) called as
    ``optimizer(gradients, factor)``: each parameter is updated with its gradient times ``factor`` (a scalar
    tensor, or ``None`` for the gradients as they are). The product is made just before that parameter's
    update, and the parameters are updated smallest first, so the largest gradient's copy is made when the
    others have been used; multiplying all the gradients first would hold a second copy of all of them."""

    def __init__(self, params, learning_rate=1e-3, beta1=0.9, beta2=0.999, eps=1e-6, weight_decay=0.0):
        super().__init__(params, learning_rate, beta1, beta2, eps, weight_decay)
        self.update_order = sorted(range(len(self._parameters)), key=lambda index: self._parameters[index].size)

    def construct(self, gradients, factor=None):
        if self.use_parallel:  # the parallel optimizer broadcasts its shards: MindSpore's own update does that
            return super().construct(gradients if factor is None else tuple(grad * factor for grad in gradients))
        weight_decay = self.get_weight_decay()
        lr = self.get_lr()
        self.assignadd(self.global_step, self.global_step_increase_tensor)
        updated = ()
        for index in self.update_order:
            parameter = self._parameters[index]
            gradient = gradients[index] if factor is None else gradients[index] * factor
            decay = weight_decay[index] if self.is_group else weight_decay
            updated += (self.fused_opt(parameter, self.moments1[index], self.moments2[index],
                                       lr[index] if self.is_group_lr else lr, self.beta1, self.beta2, self.eps,
                                       decay if self.decay_flags[index] else 0.0, gradient.astype(parameter.dtype)),)
        return updated


def make_optimizer(trainable, schedule, beta1: float, beta2: float, eps: float, weight_decay: float):
    """:class:`ScaledAdamWeightDecay` over ``trainable`` with MindFormers' two groups (decayed, not decayed)."""
    decayed = [p for p in trainable if decays(p)]
    kept = [p for p in trainable if not decays(p)]
    groups = [group for group in ({"params": decayed, "weight_decay": weight_decay},
                                  {"params": kept, "weight_decay": 0.0}) if group["params"]]
    return ScaledAdamWeightDecay(groups, learning_rate=schedule, beta1=beta1, beta2=beta2, eps=eps)


class TrainStep(nn.Cell):
    """``step(input_ids, labels) -> (loss, overflow, loss_scale, grad_norm)`` for ``[micro_batches, batch, seq]``
    int32 inputs: one optimizer update from the gradients of all micro-batches (see the module docstring).

    ``network``: a :class:`glm_train.network.GLMForTraining`; ``optimizer``: :func:`make_optimizer`'s.
    ``max_grad_norm``: clip the gradients' global norm to it (``None``: no clipping). ``loss_scale``:
    :class:`LossScaleSettings` for dynamic scaling (float16), ``None`` for none (float32).
    """

    def __init__(self, network: nn.Cell, optimizer: ScaledAdamWeightDecay, micro_batches: int = 1,
                 max_grad_norm: float | None = 1.0, loss_scale: LossScaleSettings | None = None):
        super().__init__(auto_prefix=False)  # keep the network's checkpoint names
        self.network, self.optimizer = network, optimizer
        self.weights = ms.ParameterTuple(optimizer.parameters)
        self.micro_batches = micro_batches
        self.max_grad_norm = max_grad_norm
        # the gradients of the weights and of the embedded inputs (the lookup's rows of the table's gradient)
        self.gradients = ops.GradOperation(get_all=True, get_by_list=True, sens_param=True)
        table = network.transformer.word_embeddings.embedding_table
        trained_table = [index for index, weight in enumerate(self.weights) if weight.name == table.name]
        self.table_index = trained_table[0] if trained_table else None  # None: a frozen table (LoRA)
        self.scaled = loss_scale is not None
        scale = loss_scale.loss_scale_value if self.scaled else 1.0
        self.scale_sense = Parameter(Tensor(scale, ms.float32), name="scale_sense", requires_grad=False)
        self.scale_update = (nn.DynamicLossScaleUpdateCell(loss_scale.loss_scale_value, loss_scale.scale_factor,
                                                           loss_scale.scale_window) if self.scaled else None)
        ranks = data_parallel_ranks()
        # data parallel: each rank's loss weighed by its share of the label tokens, summed over the ranks
        self.data_parallel = DataParallelReduction(self.weights, ranks) if ranks > 1 else None

    def loss_and_gradients(self, input_ids, labels, scale):
        """One micro-batch's loss and the gradients of ``loss · scale``."""
        embedded = self.network.embed(input_ids)
        loss = self.network.loss_from_embeddings(embedded, input_ids, labels)
        if self.data_parallel is not None:
            share = self.data_parallel.share(labels)
            loss, scale = loss * share, scale * share
        inputs, grads = self.gradients(self.network.loss_from_embeddings, self.weights)(
            embedded, input_ids, labels, scale.astype(loss.dtype))
        if self.table_index is not None:
            # the tied table: the head's gradient (in grads) plus the lookup's, each looked-up row's gradient
            index, rows = self.table_index, inputs[0]
            table = ops.tensor_scatter_add(grads[index], input_ids.reshape(-1, 1),
                                           rows.reshape(-1, rows.shape[-1]).astype(grads[index].dtype))
            grads = (*grads[:index], table, *grads[index + 1:])
        return loss, grads

    def construct(self, input_ids, labels):
        scale = self.scale_sense.value()
        loss, grads = self.loss_and_gradients(input_ids[0], labels[0], scale)
        for index in range(1, self.micro_batches):
            more_loss, more = self.loss_and_gradients(input_ids[index], labels[index], scale)
            loss = loss + more_loss
            grads = tuple(grad + extra for grad, extra in zip(grads, more))
        if self.data_parallel is not None:  # the global batch's loss and gradients, on every rank
            loss, grads = self.data_parallel(loss, grads)
        loss = loss / self.micro_batches
        grads = tuple(grad if grad.dtype == ms.float32 else grad.astype(ms.float32) for grad in grads)
        # The gradients hold scale · micro_batches times the mean gradient. Unscaling and clipping are one
        # factor, which the optimizer multiplies each gradient by as it updates (none when neither is needed).
        overflow = ops.logical_not(ms.amp.all_finite(grads))
        if self.scaled:
            overflow = self.scale_update(self.scale_sense, overflow)
        divisor = scale * self.micro_batches
        grad_norm = ops.sqrt(ops.addn([ops.reduce_sum(ops.square(grad)) for grad in grads]))
        grad_norm = grad_norm / divisor
        factor = None
        if self.max_grad_norm is not None:
            # as MindFormers' ClipGradNorm (and torch's clip_grad_norm_): scale by max_norm / (norm + 1e-6) if < 1
            factor = ops.minimum(self.max_grad_norm / (grad_norm + 1e-6), 1.0) / divisor
        elif self.scaled or self.micro_batches > 1:
            factor = 1.0 / divisor
        if not overflow:
            loss = ops.depend(loss, self.optimizer(grads, factor))
        return loss, overflow, scale, grad_norm


def compile_step(step: TrainStep, input_ids, labels) -> None:
    """Compile ``step`` for ``int32 [micro_batches, batch, seq]`` inputs of these shapes (numpy arrays or
    tensors), then hand the memory the compiler has freed back to the system before the first step runs.

    The compiler leaves some hundreds of MB of freed heap that glibc keeps; the step's own buffers come from
    MindSpore's pool, not that heap, so without the trim it would stay in the process's resident memory."""
    step.compile(ms.Tensor(input_ids), ms.Tensor(labels))
    libc = ctypes.util.find_library("c")
    trim = getattr(ctypes.CDLL(libc), "malloc_trim", None) if libc else None
    if trim is not None:  # glibc only; elsewhere there is nothing to trim by this name
        trim(0)
