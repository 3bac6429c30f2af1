"""Dale's law (docs/method.md section 4): after every optimizer step the E-I weights and gains are >= 0."""
import pytest
import torch
from spikingjelly.activation_based import functional

import sj_ei

CONSTRAINED = ('weight_ee', 'weight_ie', 'weight_ei', 'gain_i', 'gain_e')


@pytest.mark.parametrize('make_optimizer', [
    lambda params: torch.optim.SGD(params, lr=1.0, momentum=0.9),
    lambda params: torch.optim.Adam(params, lr=1.0),
], ids=['sgd', 'adam'])
def test_dales_law_holds_after_50_large_steps(make_optimizer):
    torch.manual_seed(0)
    net = sj_ei.models.build('vgg8', 4, 2, width=0.125)
    x = (torch.rand(2, 4, 2, 32, 32) < 0.3).float()
    optimizer = make_optimizer(net.parameters())
    sj_ei.constrain(net, optimizer)
    went_negative = False
    for _ in range(50):
        loss = net(x).mean(0).logsumexp(1).mean() - net.features[0].layer.bias.sum()
        functional.reset_net(net)
        optimizer.zero_grad()
        loss.backward()
        went_negative |= any((p.grad > 0).any().item() for n, p in net.named_parameters() if n.endswith('gain_e'))
        optimizer.step()
        for name, p in net.named_parameters():
            if name.split('.')[-1] in CONSTRAINED:
                assert (p >= 0).all(), name
    assert went_negative  # the gradients did push constrained parameters down
    biases = torch.cat([m.bias for _, m in sj_ei.ei_layers(net) if m.bias is not None])
    assert (biases < 0).any()  # the bias is free


def test_no_sign_constraint_ablation_is_left_alone():
    layer = sj_ei.EILinear(8, 8, sign_constraint=False)
    with torch.no_grad():
        layer.weight_ee.fill_(-1.0)
    sj_ei.clamp_(layer)
    assert (layer.weight_ee == -1.0).all()
