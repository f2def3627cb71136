"""The fused recurrent layer against autograd through a loop of ``alif_step``."""

from __future__ import annotations

import pytest
import torch

from bci.neurons import ALIFParams, ALIFState, alif_step
from bci.recurrent import RecurrentState, leaky_readout, recurrent_alif
from bci.surrogates import get_surrogate

T, B, H = 30, 3, 12
DT = 0.05


def _inputs(seed: int, alif: bool = True) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).requires_grad_()

    beta = torch.zeros(H, dtype=torch.float64)
    if alif:
        beta[H // 2 :] = 1.5
    return {
        "i_in": rand(T, B, H, scale=0.8),
        "w_rec": rand(H, H, scale=0.4),
        "tau_mem": (
            0.05 + 0.2 * torch.rand(H, generator=gen, dtype=torch.float64)
        ).requires_grad_(),
        "tau_adapt": (0.2 + torch.rand(H, generator=gen, dtype=torch.float64)).requires_grad_(),
        "threshold": (
            0.6 + 0.5 * torch.rand(H, generator=gen, dtype=torch.float64)
        ).requires_grad_(),
        "beta": beta.requires_grad_(alif),
    }


def _reference(p: dict[str, torch.Tensor], reset: str, surrogate_name: str) -> torch.Tensor:
    params = ALIFParams(
        tau_mem_s=p["tau_mem"],
        threshold=p["threshold"],
        tau_adapt_s=p["tau_adapt"],
        beta=p["beta"],
        dt_s=DT,
        reset=reset,
        surrogate=get_surrogate(surrogate_name),
    )
    zeros = torch.zeros(B, H, dtype=torch.float64)
    state = ALIFState(zeros, zeros, zeros, zeros)
    spikes = []
    for t in range(T):
        current = p["i_in"][t] + state.z @ p["w_rec"].t()
        z, state = alif_step(current, state, params)
        spikes.append(z)
    return torch.stack(spikes)


def _fused(p: dict[str, torch.Tensor], reset: str, surrogate_name: str) -> torch.Tensor:
    zeros = torch.zeros(B, H, dtype=torch.float64)
    spikes, _ = recurrent_alif(
        p["i_in"],
        p["w_rec"],
        torch.exp(-DT / p["tau_mem"]),
        torch.exp(-DT / p["tau_adapt"]),
        p["threshold"],
        p["beta"],
        RecurrentState(zeros, zeros, zeros),
        reset,
        get_surrogate(surrogate_name),
    )
    return spikes


@pytest.mark.parametrize("alif", [True, False], ids=["alif", "lif"])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("surrogate_name", ["triangle", "fast_sigmoid", "gaussian"])
def test_fused_forward_and_gradients_equal_autograd(
    reset: str, surrogate_name: str, alif: bool
) -> None:
    """With ``alif=False`` every beta is zero and constant: the fused layer skips adaptation."""
    p = _inputs(seed=1, alif=alif)
    readout = torch.randn(T, B, H, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    ref = _reference(p, reset, surrogate_name)
    fused = _fused(p, reset, surrogate_name)
    assert 0.05 < ref.mean().item() < 0.6, "inputs must make neurons fire sometimes"
    torch.testing.assert_close(fused, ref, rtol=0, atol=0)

    names = [n for n in p if p[n].requires_grad and (alif or n != "tau_adapt")]
    grads_ref = torch.autograd.grad((ref * readout).sum(), [p[n] for n in names])
    grads_fused = torch.autograd.grad((fused * readout).sum(), [p[n] for n in names])
    for name, g_ref, g_fused in zip(names, grads_ref, grads_fused, strict=True):
        assert g_ref.abs().sum() > 0, f"gradient of {name} is zero: the test would be vacuous"
        torch.testing.assert_close(g_fused, g_ref, rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("block", [7, 40, 256])
def test_leaky_readout_equals_recursion(block: int) -> None:
    """Blocks that divide T, do not divide it, and exceed it all give the recursion."""
    gen = torch.Generator().manual_seed(3)
    u = torch.randn(40, 2, 3, generator=gen, dtype=torch.float64)
    y0 = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    kappa = 0.8
    y = leaky_readout(u, kappa, y0, block=block)
    expected, prev = [], y0
    for u_t in u:
        prev = kappa * prev + u_t
        expected.append(prev)
    torch.testing.assert_close(y, torch.stack(expected), rtol=1e-12, atol=1e-12)
