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
        adaptive = bool(torch.any(beta != 0)) or ctx.needs_input_grad[5]
        # Histories hold the initial state in row 0, so step t's "previous" is row t.
        v_hist = i_in.new_empty((n_steps + 1, *i_in.shape[1:]))
        z_hist = torch.empty_like(v_hist)
        a_hist = torch.empty_like(v_hist) if adaptive else a0.expand_as(v_hist)
        v_hist[0], z_hist[0] = v0, z0
        if adaptive:
            a_hist[0] = a0
        v_all, z_all, a_all = v_hist[1:], z_hist[1:], a_hist[1:]
        # Reset by subtraction folds into the recurrent matmul: z W_rec^T - theta z = z W_eff.
        w_eff = w_rec.t() if reset_zero else w_rec.t() - torch.diag(threshold)
        one_minus_rho = 1.0 - rho
        v, z, a = v0, z0, a0
        for t in range(n_steps):
            drive = torch.addmm(i_in[t], z, w_eff)
            if reset_zero:
                v = torch.addcmul(drive, alpha * v, 1.0 - z, out=v_all[t])
            else:
                v = torch.addcmul(drive, alpha, v, out=v_all[t])
            if adaptive:  # spike where v > theta + beta a
                z = torch.gt(v, torch.addcmul(threshold, beta, a), out=z_all[t])
                a = torch.addcmul(rho * a, one_minus_rho, z, out=a_all[t])
            else:
                z = torch.gt(v, threshold, out=z_all[t])
        ctx.save_for_backward(w_rec, alpha, rho, threshold, beta, v_hist, z_hist, a_hist)
        ctx.reset_zero = reset_zero
        ctx.adaptive = adaptive
        ctx.surrogate = surrogate
        ctx.mark_non_differentiable(v_all, a_all)
        return z_all, v_all, a_all

    @staticmethod
    def backward(ctx: Any, grad_z: Tensor, _grad_v: Tensor, _grad_a: Tensor) -> tuple:
        w_rec, alpha, rho, threshold, beta, v_hist, z_hist, a_hist = ctx.saved_tensors
        v_all, z_all = v_hist[1:], z_hist[1:]
        v_prev, z_prev, a_prev = v_hist[:-1], z_hist[:-1], a_hist[:-1]
        v0 = v_hist[0]
        n_steps = v_all.shape[0]
        adaptive = ctx.adaptive
        x_all = (v_all - threshold - beta * a_prev) / threshold
        psi_all = ctx.surrogate.pseudo_derivative(x_all)
        keep = (1.0 - z_all) if ctx.reset_zero else None

        lv_all = torch.empty_like(v_all)
        lx_all = torch.empty_like(v_all)
        la_all = torch.empty_like(v_all) if adaptive else None
        lv = torch.zeros_like(v0)
        la = torch.zeros_like(v0)
        lx = torch.zeros_like(v0)
        inv_theta = 1.0 / threshold
        beta_over_theta = beta * inv_theta
        one_minus_rho = 1.0 - rho
        for t in range(n_steps - 1, -1, -1):
            # dz[t] = gz[t] + lv[t+1] W_rec + (1 - rho) la[t]
            dz = torch.addmm(grad_z[t], lv, w_rec)
            if adaptive:
                la = torch.addcmul(rho * la, beta_over_theta, lx, value=-1.0, out=la_all[t])
                dz.addcmul_(one_minus_rho, la)
            lx = torch.mul(dz, psi_all[t], out=lx_all[t])
            carry = alpha * lv if keep is None else alpha * keep[t] * lv
            lv = torch.addcmul(carry, lx, inv_theta, out=lv_all[t])

        flat = v_all.shape[0] * v_all.shape[1]
        needs = ctx.needs_input_grad
        grad_w_rec = lv_all.reshape(flat, -1).t() @ z_prev.reshape(flat, -1) if needs[1] else None
        reset_term = 0.0
        if ctx.reset_zero:
            grad_alpha = (lv_all * v_prev * (1.0 - z_prev)).sum((0, 1)) if needs[2] else None
        else:
            grad_alpha = (lv_all * v_prev).sum((0, 1)) if needs[2] else None
            if needs[4]:
                reset_term = (lv_all * z_prev).sum((0, 1))
        grad_rho = grad_threshold = grad_beta = None
        if needs[4]:
            grad_threshold = -(lx_all * (1.0 + x_all)).sum((0, 1)) * inv_theta - reset_term
        if needs[3]:
            grad_rho = (
                (la_all * (a_prev - z_all)).sum((0, 1)) if adaptive else torch.zeros_like(rho)
            )
        if needs[5]:
            grad_beta = -(lx_all * a_prev).sum((0, 1)) * inv_theta
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


def leaky_readout(u: Tensor, kappa: float, y0: Tensor, block: int = 256) -> Tensor:
    """Leaky integrator ``y[t] = kappa y[t-1] + u[t]`` over ``u`` (T, B, K).

    Each block of ``block`` steps is one matmul with the lower-triangular Toeplitz kernel
    ``L[t, s] = kappa^(t-s)``, plus ``kappa^(t+1)`` times the state carried in: O(T block)
    time and O(block^2) memory however long the recording.
    """
    n = min(block, u.shape[0])
    steps = torch.arange(n, dtype=u.dtype)
    lag = steps[:, None] - steps[None, :]
    kernel = torch.where(lag >= 0, kappa ** lag.clamp(min=0), torch.zeros((), dtype=u.dtype))
    carry_gain = (kappa ** (steps + 1.0))[:, None, None]
    blocks = []
    y = y0
    for start in range(0, u.shape[0], n):
        chunk = u[start : start + n]
        m = chunk.shape[0]
        out = torch.einsum("ts,sbk->tbk", kernel[:m, :m], chunk) + carry_gain[:m] * y
        blocks.append(out)
        y = out[-1]
    return torch.cat(blocks)
