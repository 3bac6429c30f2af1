"""What the trainer measures inside the network and logs: E firing rates and input shares
(``sj_ei.health``, which also says when a network has collapsed), operation counts, E-I histograms,
and an epoch's TensorBoard scalars."""
import torch
from spikingjelly.activation_based import functional

import sj_ei
import sj_ei.energy
from sj_ei import datasets, health
from sj_ei.currents import EICurrents, integrate
from sj_ei.health import FiringRates, e_populations  # noqa: F401  (the trainer's monitor)


@torch.no_grad()
def log_histograms(writer, model: torch.nn.Module, x: torch.Tensor, step: int) -> None:
    """TensorBoard histograms of every E-I layer's parameters, and of its output current
    (``I_int``; ``I_EE - I_EI`` for the readout) on the model input ``x``, in eval mode, on the
    model's own backends.  A layer that hands ``EICurrents`` to a fused E population
    (``output='currents'``) is recorded as the ``I_int`` its neuron integrates."""
    layers = sj_ei.ei_layers(model)
    for name, layer in layers:
        for pname, p in layer.named_parameters(recurse=False):
            writer.add_histogram(f'param/{name}.{pname}', p.detach().float().cpu(), step)
    currents = {}

    def record(layer, name, out):
        if isinstance(out, EICurrents):
            out = integrate(out, channel_dim=2 if layer.step_mode == 'm' else 1)
        currents[name] = out
    hooks = [layer.register_forward_hook(lambda m, i, out, name=name: record(m, name, out)) for name, layer in layers]
    was_training = model.training
    model.eval()
    try:
        model(x)
    finally:
        functional.reset_net(model)
        model.train(was_training)
        for h in hooks:
            h.remove()
    for name, current in currents.items():
        writer.add_histogram(f'I_int/{name}', current.float().cpu(), step)


def epoch_health(config: dict, rates: health.FiringRates, losses: list, distributed) -> tuple:
    """``(problem, rates, shares)`` of the epoch just trained: every E population's firing rate and
    input share averaged over the ranks, and ``problem``, the ``sj_ei.health.collapse`` sentence of
    those and the losses pooled over the ranks (so every rank decides alike), or None: no collapse,
    ``collapse_check`` off, or an epoch of fewer than ``health.FLAT_STEPS`` steps (too little to
    judge: a narrow population can fire nothing in two batches and still be alive)."""
    gathered = distributed.gather((rates.rates(), rates.input_shares(), losses))

    def mean(part: int) -> dict:
        return {name: sum(g[part][name] for g in gathered) / len(gathered) for name in gathered[0][part]}
    rate, share = mean(0), mean(1)
    pooled = [loss for *_, part in gathered for loss in part]
    if not config['collapse_check'] or len(pooled) < health.FLAT_STEPS:
        return None, rate, share
    return health.collapse(rate, pooled, datasets.info(config['dataset'])['num_classes'], share), rate, share


def test_operations(counter: sj_ei.energy.Counter, distributed) -> dict:
    """Per-test-sample operation counts and energy (``sj_ei.energy``) over all ranks."""
    counts = counter.report().totals()
    samples, *sums = distributed.sum(counter.samples, *(counter.samples * v for v in counts.values()))
    counts = dict(zip(counts, (total / samples for total in sums)))
    counts['inhibition_share'] = counts['inhibition_pJ'] / counts['energy_pJ'] if counts['energy_pJ'] else 0.0
    return counts


def log_epoch(writer, epoch: int, scalars: dict, rates: dict, shares: dict, operations: dict) -> None:
    """An epoch's TensorBoard scalars: ``scalars`` as named, then ``firing_rate/``, ``input_share/`` and
    ``ops/`` (ops/ac, ops/mac, ops/div, ..., ops/energy_pJ per test sample) of every population or count."""
    for prefix, values in (('', scalars), ('firing_rate/', rates), ('input_share/', shares), ('ops/', operations)):
        for key, value in values.items():
            writer.add_scalar(prefix + key, value, epoch)
