"""The slot-wise winner-takes-all label distance (irs_torch.learn.losses.slot_label_loss), against explicit loops."""
from __future__ import annotations

import math

import numpy as np
import torch

from irs_torch.learn.losses import slot_label_loss


def _loop(psi, R, pl, Rl, a_max, w_psi, w_R):
    """Per instance: mean over slots of min over candidates, written out with numpy scalars."""
    B, K, L, N = psi.shape
    out = np.zeros(B)
    for b in range(B):
        den = sum(np.linalg.norm(Rl[b, m]) ** 2 for m in range(L)) / L
        for l in range(L):
            best = math.inf
            for k in range(K):
                x, y = psi[b, k, l], pl[b, l]
                nx, ny = np.linalg.norm(x), np.linalg.norm(y)
                d_psi = 1 - abs(np.vdot(x, y)) / (nx * ny) + ((nx - ny) / (math.sqrt(N) * a_max[b])) ** 2
                d_R = np.linalg.norm(R[b, k, l] - Rl[b, l]) ** 2 / den
                best = min(best, w_psi * d_psi + w_R * d_R)
            out[b] += best / L
    return out


def _rand(g, *shape):
    return torch.randn(*shape, dtype=torch.complex128, generator=g)


def test_matches_loops_and_picks_each_slots_winner():
    g = torch.Generator().manual_seed(1)
    B, K, L, N, M = 4, 3, 2, 6, 3
    psi, R, pl, Rl = _rand(g, B, K, L, N), _rand(g, B, K, L, M, M), _rand(g, B, L, N), _rand(g, B, L, M, M)
    a_max = torch.rand(B, dtype=torch.float64, generator=g) * 3 + 1
    got = slot_label_loss(psi, R, pl, Rl, a_max, 0.6, 1.7)
    ref = _loop(psi.numpy(), R.numpy(), pl.numpy(), Rl.numpy(), a_max.numpy(), 0.6, 1.7)
    assert np.allclose(got.numpy(), ref, rtol=1e-12)
    # candidate 1 holds the label's slot 0 (times a common phase), candidate 2 its slot 1: distance 0
    psi2, R2 = psi.clone(), R.clone()
    psi2[:, 1, 0] = pl[:, 0] * np.exp(0.7j)
    R2[:, 1, 0] = Rl[:, 0]
    psi2[:, 2, 1] = pl[:, 1] * np.exp(-2.1j)
    R2[:, 2, 1] = Rl[:, 1]
    assert torch.allclose(slot_label_loss(psi2, R2, pl, Rl, a_max), torch.zeros(B, dtype=torch.float64), atol=1e-12)


def test_only_the_winner_gets_a_gradient():
    g = torch.Generator().manual_seed(2)
    B, K, L, N, M = 2, 4, 2, 5, 3
    psi, R, pl, Rl = _rand(g, B, K, L, N), _rand(g, B, K, L, M, M), _rand(g, B, L, N), _rand(g, B, L, M, M)
    psi[:, 3] = pl + 0.01 * _rand(g, B, L, N)  # candidate 3 is nearest in every slot
    R[:, 3] = Rl + 0.01 * _rand(g, B, L, M, M)
    psi.requires_grad_(True)
    R.requires_grad_(True)
    slot_label_loss(psi, R, pl, Rl, 2.0).sum().backward()
    assert torch.all(psi.grad[:, :3] == 0) and torch.all(R.grad[:, :3] == 0)
    assert psi.grad[:, 3].abs().sum() > 0 and R.grad[:, 3].abs().sum() > 0
