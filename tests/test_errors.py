"""Inputs a user gets wrong give one clear error that names the layer and says what to do."""
import os
import random
import re
import subprocess
import sys

import pytest
import torch

import sj_ei

from train_helpers import ROOT, tiny_config


@pytest.fixture
def net():
    return sj_ei.models.build('vgg8', 10, 2, width=0.125)


def test_single_step_input_to_a_multi_step_network(net):
    """Called on ``net.features``, the layer keeps the name ``models.build`` gave it in ``net``."""
    with pytest.raises(ValueError, match=r"EIConv2d 'features\.0\.layer' in step_mode='m' expects input of shape "
                                         r"\[T, B, C, H, W\] with C=2, got \(2, 2, 32\)"):
        net.features(torch.rand(2, 2, 32))


def test_wrong_channel_count_names_the_layer(net):
    with pytest.raises(ValueError, match=r"'features\.0\.layer'.*with C=2, got \(4, 2, 3, 32, 32\)"):
        net(torch.rand(4, 2, 3, 32, 32))


def test_multi_step_input_to_a_single_step_layer_hints_at_set_step_mode():
    layer = sj_ei.EILinear(8, 8)
    with pytest.raises(ValueError, match=r"got \(3, 2, 8\) \(multi-step input needs functional.set_step_mode"):
        layer(torch.rand(3, 2, 8))


def test_non_float_input(net):
    with pytest.raises(TypeError, match=r"'features\.0\.layer': expects a floating-point tensor.*torch.int64.*x.float\(\)"):
        net(torch.ones(2, 2, 2, 32, 32, dtype=torch.long))


def test_static_input_without_T(net):
    with pytest.raises(ValueError, match='needs the number of time steps'):
        net(torch.rand(2, 2, 32, 32))


@pytest.mark.parametrize('kwargs, message', [
    (dict(ei_ratio=16), 'leaves no inhibitory neuron'),
    (dict(init='xavier'), 'init must be one of'),
    (dict(eps=0.0), 'eps must be > 0'),
])
def test_bad_layer_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sj_ei.EIConv2d(3, 8, 3, **kwargs)


def test_unknown_model_and_norm():
    with pytest.raises(ValueError, match='unknown model .*vgg8, vgg11'):
        sj_ei.models.build('vgg13', 10, 3)
    with pytest.raises(ValueError, match="unknown norm 'ln'"):
        sj_ei.models.build('vgg8', 10, 3, norm='ln')


@pytest.mark.parametrize('content', [b'', random.Random(2).randbytes(256), random.Random(20).randbytes(256),
                                     random.Random(0).randbytes(256)],
                         ids=['empty', 'IndexError in the unpickler', 'KeyError in the unpickler', 'random bytes'])
def test_ops_pretrained_of_a_file_that_is_no_checkpoint_is_one_error_line(tmp_path, capsys, content):
    (tmp_path / 'model.pth').write_bytes(content)
    with pytest.raises(SystemExit) as exit_info:
        sj_ei.ops.main(['-cfg', str(tiny_config(tmp_path)), '-batches', '1', '-pretrained', str(tmp_path / 'model.pth')])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and err.startswith(f'error: -pretrained {tmp_path / "model.pth"}: not a checkpoint of '
                                                    'the E-I network of this config: cannot read ')
    assert err.endswith('the file is damaged or not a PyTorch / safetensors checkpoint\n')


def test_the_readme_counter_works_after_a_plain_import_sj_ei_and_python_m_sj_ei_ops_does_not_warn(tmp_path):
    code = ('import torch, sj_ei\n'
            'net = sj_ei.models.build("vgg8", 10, 2, width=0.125)\n'
            'x = (torch.rand(2, 1, 2, 32, 32) < 0.2).float()\n'
            'sj_ei.ei_init(net, x)\n'
            'with sj_ei.ops.Counter(net) as c:\n'
            '    net(x)\n'
            'print(c.report().totals()["energy_pJ"] > 0)\n')
    (tmp_path / 'model.pth').write_bytes(random.Random(2).randbytes(256))
    commands = (['-c', code], ['-m', 'sj_ei.ops', '-cfg', str(tiny_config(tmp_path)), '-batches', '1',
                                '-pretrained', str(tmp_path / 'model.pth')])
    readme, ops = [subprocess.Popen([sys.executable, *c], cwd=ROOT, env={**os.environ, 'PYTHONPATH': str(ROOT)},
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands]
    out, err = readme.communicate(timeout=300)
    assert readme.returncode == 0 and out == 'True\n', err[-2000:]
    out, err = ops.communicate(timeout=300)
    assert ops.returncode == 2 and err.startswith('error: -pretrained ') and err.count('\n') == 1, err[-2000:]


@pytest.mark.parametrize('kwargs, message', [
    (dict(width=0.001), "width 0.001 leaves vgg8's first layer (features.0: 0 channels at width 0.001, 64 at width 1) "
                        'fewer channels than the 4 that ei_ratio=4 needs for one inhibitory neuron; the smallest width '
                        'that works is 0.0625'),
    (dict(width=0.001, norm='bn'), 'fewer channels than one; the smallest width that works is 0.015625'),
    (dict(ei_ratio=1000), "ei_ratio=1000 leaves vgg8's first layer (features.0: 64 channels at width 1, 64 at width 1) "
                          'no inhibitory neuron (one per 1000 excitatory neurons); use ei_ratio <= 64'),
])
def test_a_width_or_ei_ratio_that_leaves_a_layer_too_narrow_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        sj_ei.models.build('vgg8', 10, 2, **kwargs)
    assert sj_ei.models.build('vgg8', 10, 2, width=0.0625).features[0].layer.weight_ei.shape == (4, 1)


def test_every_error_a_user_causes_shares_one_base_class():
    """The command lines turn exactly the ``sj_ei.errors.UserError`` family into one ``error:`` line (that
    the library never imports the trainer is test_architecture's)."""
    from sj_ei import config, convert, datasets, errors, health
    from train import checkpoint, run_folder
    for error in (config.ConfigError, sj_ei.EIInitError, sj_ei.BackendError, convert.ConversionError,
                  health.CollapseError, datasets.DatasetNotFoundError, datasets.DatasetDamagedError,
                  checkpoint.CheckpointError, checkpoint.WriteError, checkpoint.ProcessCountError,
                  run_folder.RunFolderError):
        assert issubclass(error, errors.UserError), error
    assert issubclass(datasets.DatasetNotFoundError, FileNotFoundError) and issubclass(config.ConfigError, ValueError)
