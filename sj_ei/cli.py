"""What the library's command lines (``python -m sj_ei.energy``, ``python -m sj_ei.analyze``) share:
a trainer config with ``-set`` overrides, its E-I network and batch-norm twin from checkpoints
(or untrained), and batches of its test set.

    parser = cli.parser('python -m sj_ei.x', 'what it does')   # -cfg -pretrained -bn-pretrained -batches ...
    args = parser.parse_args(argv)
    with cli.errors():                                          # a user's mistake: one line, exit status 2
        config, batches, labels, ei_net, bn_net = cli.networks(args)
"""
import argparse
import contextlib
import sys
from typing import List, Tuple

import torch
from torch import nn
from spikingjelly.activation_based import functional

from . import config as cfg, convert, datasets
from .errors import UserError
from .layers import ei_init


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    """An argument parser with the shared flags: ``-cfg -pretrained -bn-pretrained -batches -synthetic -set``."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument('-cfg', required=True, metavar='YAML', help='trainer config (configs/)')
    p.add_argument('-pretrained', metavar='PATH', help='trainer checkpoint (.pth) of the E-I network; '
                   'without it the network right after E-I Init on the first batch')
    p.add_argument('-bn-pretrained', metavar='PATH', help='trainer checkpoint of the batch-norm network of the same '
                   'shape; without it an untrained one, its batch-norm statistics taken from the batches')
    p.add_argument('-batches', type=int, default=4, metavar='N', help='test batches to run (default 4)')
    p.add_argument('-synthetic', action='store_true', help="run on the quick-start synthetic test data made "
                   "at this config's input shape instead of its dataset (for when the data are absent): event "
                   "frames [T, 2, H, W]; for static datasets each sample's frames summed over time, scaled to "
                   "[0, 1] and made 3 channels (on, off, their mean)")
    p.add_argument('-set', action='append', default=[], metavar='KEY=VALUE', help='override a config key')
    return p


@contextlib.contextmanager
def errors():
    """Turn a user's mistake inside the block into ``error: ...`` on stderr and exit status 2."""
    try:
        yield
    except UserError as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(2)


def networks(args) -> Tuple[dict, List[torch.Tensor], List[torch.Tensor], nn.Module, nn.Module]:
    """``(config, test batches, their labels, E-I network, batch-norm twin)`` of the parsed command line ``args``,
    both networks in eval mode, loaded from ``-pretrained`` / ``-bn-pretrained`` where given."""
    config = cfg.apply_sets(cfg.load(args.cfg), args.set)
    if args.batches < 1:
        raise cfg.ConfigError(f'-batches must be >= 1, got {args.batches}')
    batches, labels = zip(*test_batches(config, args.batches, args.synthetic))
    torch.manual_seed(config['seed'])
    ei_net, bn_net = cfg.build_model(config, 'ei'), cfg.build_model(config, 'bn')
    if args.pretrained:
        _load(ei_net, args.pretrained, '-pretrained', 'E-I')
    else:
        ei_init(ei_net, batches[0])
    if args.bn_pretrained:
        _load(bn_net, args.bn_pretrained, '-bn-pretrained', 'batch-norm')
    else:
        calibrate_batch_norm(bn_net, batches)
    return config, list(batches), list(labels), ei_net.eval(), bn_net.eval()


def _load(net: nn.Module, path, flag: str, kind: str):
    """``convert.load_pretrained`` with the flag and the network it was meant for in its error."""
    try:
        convert.load_pretrained(net, path)
    except convert.ConversionError as e:
        raise convert.ConversionError(f'{flag} {path}: not a checkpoint of the {kind} network of this config: '
                                      f'{e}') from None


def test_batches(config: dict, n: int, synthetic: bool = False) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """The first ``n`` test batches ``(x, labels)`` of ``config``'s dataset, ``x`` as model input (``[T, B, ...]``
    or ``[B, C, H, W]``), or of the synthetic stand-in at its input shape (``synthetic``)."""
    meta = datasets.info(config['dataset'], size=config['size'], image_size=config['image_size'])
    if config['dataset'] == 'synthetic' or synthetic:
        size = config['size'] if config['dataset'] == 'synthetic' else meta['size'][0]
        data = datasets.build('synthetic', None, config['T'], False, num_test_samples=n * config['batch_size'],
                              size=size, seed=config['seed'])
    else:
        data = cfg.dataset(config, train=False)
    batches = []
    for x, y in torch.utils.data.DataLoader(data, batch_size=config['batch_size']):
        if x.dim() == 5 and not meta['events']:  # stand-in image from events [B, T, 2, H, W]
            frames = x.sum(1)
            frames = frames / frames.amax((1, 2, 3), keepdim=True).clamp(min=1)
            x = torch.cat([frames, frames.mean(1, keepdim=True)], 1)
        batches.append((datasets.model_input(x), y))
        if len(batches) == n:
            break
    return batches


@torch.no_grad()
def calibrate_batch_norm(net: nn.Module, batches: List[torch.Tensor]):
    """Batch-norm running statistics of ``net`` set to the average over ``batches`` (an untrained
    network then normalizes as if trained on these data; its weights stay untrained)."""
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    net.train()
    for x in batches:
        net(x)
        functional.reset_net(net)
    net.eval()
