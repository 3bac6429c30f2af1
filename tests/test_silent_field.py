"""Where an E-I layer's whole receptive field is silent (dark background, zero padding, no spikes),
``I_EE = I_IE = 0`` and ``I_sh`` is replaced by the sample's smallest positive value, so
``dL/dI_EE = g_E dL/dI_int / I_sh~`` is large.  The inhibitory path sends back the same gradient
with the opposite sign (``r_I``'s gradient passes at ``I_IE = 0``, as in the authors' code), so
what reaches the layer below is balanced (docs/collapse.md)."""
import copy

import torch

import sj_ei
import spec


class ReLUStoppingAtZero(torch.nn.Module):
    """The I population as sj_ei had it before docs/collapse.md: ``torch.relu``, gradient 0 at 0."""

    def forward(self, i_ie):
        return torch.relu(i_ie)


def input_gradient(layer, x, grad_out):
    x = x.clone().requires_grad_()
    layer(x).backward(grad_out)
    return x.grad


def test_a_silent_receptive_field_sends_back_the_balanced_gradient():
    torch.manual_seed(0)
    layer = sj_ei.EIConv2d(3, 32, 3, padding=1, ei_ratio=4, grad_scale=False).double()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    x[:, :, :, :4] = 0  # the left half is dark: receptive fields there see only zeros
    sj_ei.ei_init(layer, x)
    grad_out = torch.ones(2, 32, 8, 8, dtype=torch.float64)  # every E neuron asks for more current
    grad = input_gradient(layer, x, grad_out)

    params = {name: p.detach().clone() for name, p in layer.named_parameters()}
    x_spec = x.clone().requires_grad_()
    spec.ei_layer(x_spec, **params, padding=1).backward(grad_out)
    torch.testing.assert_close(grad, x_spec.grad, rtol=1e-10, atol=1e-12)

    old = copy.deepcopy(layer)
    old.i_population = ReLUStoppingAtZero()
    unbalanced = input_gradient(old, x, grad_out)
    dark = (slice(None), slice(None), slice(None), slice(0, 2))  # pixels seen only by silent fields
    # E-I balance in the backward: the excitatory push is cancelled in expectation
    assert unbalanced[dark].mean() > 3 * grad[dark].mean().abs()
