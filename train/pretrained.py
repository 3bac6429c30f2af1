"""``-pretrained``: a checkpoint's test-set loss, top-1 and top-5, whoever trained it."""
from typing import NamedTuple

import torch

from sj_ei import convert, datasets
from sj_ei.config import build_model

from . import checkpoint
from .data import make_loader
from .distributed import Distributed
from .loop import run_epoch
from .prepare import check_setup


class Evaluation(NamedTuple):
    """Test-set metrics of a model."""
    loss: float
    acc1: float  #: top-1 (%)
    acc5: float  #: top-5 (%)
    samples: int


def pretrained_model(config: dict, path) -> torch.nn.Module:
    """The model held by checkpoint ``path``: this trainer's (built from the config saved in it, which must
    agree with ``config`` on the model), a plain sj_ei state dict (the model of ``config``), or the
    DeepEISNN authors' layout (with the config inside it or the config.json beside it, else the
    architecture of ``config``)."""
    state, saved = convert.read_checkpoint(path)
    if convert.is_sj_ei(state):
        if saved is not None and 'norm' in saved:  # this trainer's checkpoint
            differ = checkpoint.differences(saved, config, checkpoint.SAME_MODEL)
            if differ:
                raise checkpoint.CheckpointError(
                    f'{path} holds another model than the config ({"; ".join(text for _, text in differ)}); '
                    'evaluate it with the config it was trained with')
        return convert.load_pretrained(build_model(config), path)
    name = config['model']
    meta = datasets.info(config['dataset'])
    arch = {'arch': name.rstrip('0123456789'), 'num_layers': int(name[len(name.rstrip('0123456789')):]),
            'num_classes': meta['num_classes'], 'in_channels': meta['in_channels'], 'ei_ratio': config['ei_ratio']}
    return convert.from_deepeisnn(path, saved or arch, T=config['T'])


def evaluate_pretrained(config: dict, path) -> Evaluation:
    """Test-set loss, top-1 and top-5 of the model in checkpoint ``path`` (see ``pretrained_model``)."""
    distributed = Distributed(check_setup(config))
    model = pretrained_model(config, path).to(distributed.device)
    test_loader = make_loader(config, distributed, False)
    samples, loss, top1, top5, seconds = run_epoch(model, test_loader, distributed.device, config['amp'], False)
    result = Evaluation(loss / samples, 100 * top1 / samples, 100 * top5 / samples, int(samples))
    print(f'{path}: test loss {result.loss:.4f} acc@1 {result.acc1:.2f} acc@5 {result.acc5:.2f} '
          f'({samples:.0f} samples, {samples / seconds:.1f} samples/s)')
    distributed.close()
    return result
