"""The paper's architectures (SPEC section 6) as E-I, batch-norm and plain SNNs."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from spikingjelly.activation_based import functional

import sj_ei


@pytest.mark.parametrize('name', ['vgg8', 'vgg11', 'vgg16', 'vgg19', 'resnet18'])
@pytest.mark.parametrize('norm', ['ei', 'bn', 'none'])
def test_shapes_and_layouts(name, norm):
    net = sj_ei.models.build(name, 10, 3, norm=norm, width=0.125)
    out = net((torch.rand(2, 2, 3, 32, 32) < 0.3).float())
    assert out.shape == (2, 2, 10)
    convs = sum(isinstance(m, (sj_ei.EIConv2d, nn.Conv2d)) for m in net.modules())
    expected = {'vgg8': 5, 'vgg11': 8, 'vgg16': 13, 'vgg19': 16, 'resnet18': 17 + 3}[name]
    assert convs == expected
    has_bn = any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert has_bn == (norm == 'bn')


def test_static_image_is_repeated_over_time():
    torch.manual_seed(0)
    net = sj_ei.models.build('vgg8', 10, 3, T=3, width=0.125)
    image = torch.rand(2, 3, 32, 32)
    out = net(image)
    functional.reset_net(net)
    assert out.shape == (3, 2, 10)
    torch.testing.assert_close(out, net(image.expand(3, 2, 3, 32, 32)))


def test_vgg8_ei_trains_on_dvs_shaped_input_without_batch_norm():
    """48x48 two-channel events, T=4: a fixed problem (two classes of different
    spatial event density) whose loss falls under the paper's recipe."""
    torch.manual_seed(0)
    net = sj_ei.models.build('vgg8', 2, 2)
    labels = torch.arange(8) % 2
    density = torch.where(labels.view(1, 8, 1, 1, 1) == 0, 0.3, 0.05) * torch.ones(4, 8, 2, 48, 48)
    density[..., 24:] = 0.35 - density[..., 24:]
    x = torch.bernoulli(density)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    sj_ei.constrain(net, optimizer)
    losses = []
    for _ in range(8):
        loss = F.cross_entropy(net(x).mean(0), labels)
        functional.reset_net(net)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
