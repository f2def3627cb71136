"""Fused recurrent ALIF layer: a whole window's time loop with a hand-written backward.

Autograd over a Python loop of small ops records ~15 nodes a step and computes the weight
gradients one step at a time. Here the forward runs the loop in place over preallocated
tensors, and the backward runs one reverse-time loop for the adjoints and then forms every
weight gradient with a single matrix product over the whole window. It is checked against
autograd through :func:`bci.neurons.alif_step` in the tests.

Dynamics (ALIF with per-neuron constants; LIF neurons are ALIF with ``beta = 0``)::

    I[t] = i_in[t] + z[t-1] W_rec^T
    v[t] = alpha v[t-1] + I[t] - theta sg(z[t-1])        (reset "subtract")
    v[t] = alpha v[t-1] (1 - sg(z[t-1])) + I[t]           (reset "zero")
    x[t] = (v[t] - theta - beta a[t-1]) / theta
    z[t] = H(x[t])              with pseudo-derivative psi(x[t])
    a[t] = rho a[t-1] + (1 - rho) z[t]

``sg`` marks the detached reset path. Reverse-time adjoints (``lv = dL/dv`` and so on)::

    la[t] = rho la[t+1] - (beta / theta) lx[t+1]
    dz[t] = gz[t] + (1 - rho) la[t] + lv[t+1] W_rec
    lx[t] = dz[t] psi(x[t])
    lv[t] = lx[t] / theta + alpha keep[t+1] lv[t+1]        keep = 1 - z[t] for reset "zero"
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from bci.surrogates import Surrogate


class RecurrentState(NamedTuple):
    v: Tensor  # (B, H) membrane potential
    z: Tensor  # (B, H) last spikes
    a: Tensor  # (B, H) threshold adaptation


class _RecurrentALIF(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        i_in: Tensor,
        w_rec: Tensor,
        alpha: Tensor,
        rho: Tensor,
        threshold: Tensor,
        beta: Tensor,
        v0: Tensor,
        z0: Tensor,
        a0: Tensor,
        reset_zero: bool,
        surrogate: Surrogate,
    ) -> tuple[Tensor, Tensor, Tensor]:
        n_steps = i_in.shape[0]
        v_all = torch.empty_like(i_in)
        z_all = torch.empty_like(i_in)
        a_all = torch.empty_like(i_in)
        w_rec_t = w_rec.t()
        v, z, a = v0, z0, a0
        for t in range(n_steps):
            drive = torch.addmm(i_in[t], z, w_rec_t)
            if reset_zero:
                v = torch.addcmul(drive, alpha * v, 1.0 - z, out=v_all[t])
            else:
                v = torch.addcmul(drive, alpha, v, out=v_all[t]).sub_(threshold * z)
            # x = (v - theta - beta a) / theta, spikes where x > 0
            x = v - torch.addcmul(threshold, beta, a)
            z = z_all[t].copy_(x > 0)
            a = torch.addcmul(rho * a, 1.0 - rho, z, out=a_all[t])
        ctx.save_for_backward(w_rec, alpha, rho, threshold, beta, v0, z0, a0, v_all, z_all, a_all)
        ctx.reset_zero = reset_zero
        ctx.surrogate = surrogate
        ctx.mark_non_differentiable(v_all, a_all)
        return z_all, v_all, a_all

    @staticmethod
    def backward(ctx: Any, grad_z: Tensor, _grad_v: Tensor, _grad_a: Tensor) -> tuple:
        w_rec, alpha, rho, threshold, beta, v0, z0, a0, v_all, z_all, a_all = ctx.saved_tensors
        n_steps = v_all.shape[0]
        z_prev = torch.cat([z0.unsqueeze(0), z_all[:-1]])
        a_prev = torch.cat([a0.unsqueeze(0), a_all[:-1]])
        v_prev = torch.cat([v0.unsqueeze(0), v_all[:-1]])
        x_all = (v_all - threshold - beta * a_prev) / threshold
        psi_all = ctx.surrogate.pseudo_derivative(x_all)
        keep = (1.0 - z_all) if ctx.reset_zero else None

        lv_all = torch.empty_like(v_all)
        lx_all = torch.empty_like(v_all)
        la_all = torch.empty_like(v_all)
        lv_next = torch.zeros_like(v0)
        la_next = torch.zeros_like(v0)
        lx_next = torch.zeros_like(v0)
        beta_over_theta = beta / threshold
        one_minus_rho = 1.0 - rho
        for t in range(n_steps - 1, -1, -1):
            la = rho * la_next - beta_over_theta * lx_next
            dz = torch.addmm(grad_z[t], lv_next, w_rec).addcmul_(one_minus_rho, la)
            lx = dz.mul_(psi_all[t])
            carry = alpha * lv_next if keep is None else alpha * keep[t] * lv_next
            lv = torch.addcdiv(carry, lx, threshold, out=lv_all[t])
            lx_all[t] = lx
            la_all[t] = la
            lv_next, la_next, lx_next = lv, la, lx

        flat = v_all.shape[0] * v_all.shape[1]
        grad_w_rec = lv_all.reshape(flat, -1).t() @ z_prev.reshape(flat, -1)
        if ctx.reset_zero:
            grad_alpha = (lv_all * v_prev * (1.0 - z_prev)).sum((0, 1))
            reset_term = 0.0
        else:
            grad_alpha = (lv_all * v_prev).sum((0, 1))
            reset_term = (lv_all * z_prev).sum((0, 1))
        grad_threshold = -(lx_all * (1.0 + x_all)).sum((0, 1)) / threshold - reset_term
        grad_rho = (la_all * (a_prev - z_all)).sum((0, 1))
        grad_beta = -(lx_all * a_prev).sum((0, 1)) / threshold
        return (
            lv_all,
            grad_w_rec,
            grad_alpha,
            grad_rho,
            grad_threshold,
            grad_beta,
            None,
            None,
            None,
            None,
            None,
        )


def recurrent_alif(
    i_in: Tensor,
    w_rec: Tensor,
    alpha: Tensor,
    rho: Tensor,
    threshold: Tensor,
    beta: Tensor,
    state: RecurrentState,
    reset: str,
    surrogate: Surrogate,
) -> tuple[Tensor, RecurrentState]:
    """Run the recurrent ALIF layer over ``i_in`` (T, B, H) of input currents.

    ``alpha``, ``rho``, ``threshold``, ``beta`` are per-neuron (H,) tensors. Returns the spikes
    (T, B, H), differentiable with respect to ``i_in``, ``w_rec`` and the four per-neuron
    tensors, and the final state (detached: windows are truncated).
    """
    z, v, a = _RecurrentALIF.apply(
        i_in,
        w_rec,
        alpha,
        rho,
        threshold,
        beta,
        state.v,
        state.z,
        state.a,
        reset == "zero",
        surrogate,
    )
    return z, RecurrentState(v[-1].detach(), z[-1].detach(), a[-1].detach())


def leaky_readout(u: Tensor, kappa: float, y0: Tensor) -> Tensor:
    """Leaky integrator ``y[t] = kappa y[t-1] + u[t]`` over ``u`` (T, B, K), as one matmul.

    ``y = L u + kappa^(t+1) y0`` with the lower-triangular Toeplitz ``L[t, s] = kappa^(t-s)``.
    """
    n_steps = u.shape[0]
    steps = torch.arange(n_steps, dtype=u.dtype)
    lag = steps[:, None] - steps[None, :]
    kernel = torch.where(lag >= 0, kappa ** lag.clamp(min=0), torch.zeros((), dtype=u.dtype))
    y = torch.einsum("ts,sbk->tbk", kernel, u)
    return y + (kappa ** (steps + 1.0))[:, None, None] * y0
