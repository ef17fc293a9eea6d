"""The P3 problem in Theta = psi psi^H (the lifted model of the SCA + SDR method, :mod:`irs_torch.solvers.reflect_sdr`).

The Theta-extension of the model (our derivation; docs/assumptions.md item 4: Appendix B has misprints). With
``V = [a, da/dtheta, da/dphi]`` (N x 3) and ``E_i = G^T diag(V_i)`` (M x N) the echo vectors of
``irs_torch.crb`` are ``x_i = E_i psi``, so for ``Theta = psi psi^H``::

    B_ij = x_i^T R x_j^*   = sum_ab [E_i^T R E_j^*]_ab Theta_ab                  (linear in Theta)
    A_ij = x_i^H W x_j     = sum_ab [E_i^H W E_j]_ab conj(Theta_ab),
    W    = (I + sigma_r2/sigma_b2 G^T diag(diag Theta) G^*)^-1                   (R_w / sigma_b2)^-1
    T_pq = tr(K_p A K_q B),  Fhat from T exactly as in irs_torch.crb.fim_normalized,
    C1   = |beta|^2 tr(Theta) B_00 + sigma_r2 |beta|^2 tr(Theta)^2
           + sum_n Theta_nn [G R G^H]_nn + 2 sigma_r2 tr(Theta)                  (22a)-(22d)

Both agree with the psi-model at rank one (tested). Fhat is a product of two Theta-linear Gram
matrices (and W depends on diag Theta), C1 a quadratic; SCA uses their first-order Taylor
expansion at Theta0 (the Jacobian is taken by autograd of these expressions, including the
dependence of W on diag Theta that the paper's Appendix B freezes), checked against finite
differences and a hand derivation in tests/test_solvers_reflect.py.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from irs_torch import crb as crb_model
from irs_torch.physics.steering import upa_steering_derivatives
from irs_torch.scenario import Scenario
from irs_torch.solvers.transmit import FIM_ENTRIES


# ----------------------------------------------------------------------------- the Theta model
@dataclass
class IRSModel:
    """The model of one IRS l for fixed R_l, as a function of Theta (N x N Hermitian).

    Fields: E ``(3, M, N)`` (E_i = G^T diag(V_i)), NB ``(3, 3, N, N)`` (B_ij coefficient
    matrices), G ``(N, M)``, R ``(M, M)`` [W], beta (complex), rho = sigma_r2 / sigma_b2,
    sigma_r2 [W], gRg ``(N,)`` = diag(G R G^H) [W], P_s [W], a_max, active, g ``(4,)`` the weights
    with ``tr(F^-1) = sum_i g_i [Fhat^-1]_ii``.
    """

    E: torch.Tensor
    NB: torch.Tensor
    G: torch.Tensor
    R: torch.Tensor
    beta: torch.Tensor
    rho: float
    sigma_r2: float
    gRg: torch.Tensor
    P_s: float
    a_max: float
    active: bool
    g: torch.Tensor

    @classmethod
    def from_scenario(cls, scenario: Scenario, R_s: torch.Tensor, l: int) -> "IRSModel":
        cdt = scenario.G.dtype
        G = scenario.G[l]
        R = R_s[l].to(cdt)
        a, dt, dp = upa_steering_derivatives(scenario.theta[l], scenario.phi[l], scenario.N_h, scenario.N_v,
                                             scenario.d_h, scenario.d_v)
        V = torch.stack([a, dt, dp], 0).to(cdt)  # (3, N)
        E = G.transpose(0, 1).unsqueeze(0) * V.unsqueeze(1)  # (3, M, N)
        NB = torch.einsum("ima,mk,jkb->ijab", E, R, E.conj())
        sr = float(scenario.budget("sigma_r2"))
        sb = float(scenario.budget("sigma_b2"))
        gRg = torch.einsum("nm,mk,nk->n", G, R, G.conj()).real
        b2 = float(scenario.beta[l].abs() ** 2)
        c = 2.0 * scenario.T_L * b2 / sb
        g = torch.tensor([1.0, 1.0, b2, b2], dtype=torch.float64) / c
        return cls(E=E, NB=NB, G=G, R=R, beta=scenario.beta[l], rho=sr / sb, sigma_r2=sr, gRg=gRg,
                   P_s=float(scenario.P_s), a_max=float(scenario.a_max), active=bool(scenario.active), g=g)

    @property
    def N(self) -> int:
        return self.E.shape[-1]

    def fim(self, Theta: torch.Tensor) -> torch.Tensor:
        """Fhat(Theta) ``(..., 4, 4)`` for Theta ``(..., N, N)`` (equals fim_normalized at rank one)."""
        Theta = Theta.to(self.E.dtype)
        M = self.G.shape[-1]
        dg = torch.diagonal(Theta, dim1=-2, dim2=-1).real.to(self.E.dtype)
        Rw = torch.eye(M, dtype=self.E.dtype) + self.rho * torch.einsum("nm,...n,nk->...mk", self.G, dg, self.G.conj())
        W = torch.linalg.inv(Rw)
        NA = torch.einsum("ima,...mk,jkb->...ijab", self.E.conj(), W, self.E)
        A = torch.einsum("...ijab,...ab->...ij", NA, Theta.conj())
        B = torch.einsum("ijab,...ab->...ij", self.NB, Theta)
        K = crb_model.FIM_SELECTORS.to(dtype=self.E.dtype)
        T = torch.einsum("pij,...jk,qkl,...li->...pq", K, A, K, B)
        e = torch.sgn(self.beta).conj()
        eT_th = e * T[..., 0, 2]
        eT_ph = e * T[..., 1, 2]
        z = torch.zeros_like(T[..., 0, 0].real)
        rows = [
            [T[..., 0, 0].real, T[..., 0, 1].real, eT_th.real, -eT_th.imag],
            [T[..., 1, 0].real, T[..., 1, 1].real, eT_ph.real, -eT_ph.imag],
            [eT_th.real, eT_ph.real, T[..., 2, 2].real, z],
            [-eT_th.imag, -eT_ph.imag, z, T[..., 2, 2].real],
        ]
        return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)

    def irs_power(self, Theta: torch.Tensor) -> torch.Tensor:
        """C1 left-hand side (22a)-(22d) [W] for Theta ``(..., N, N)`` -> ``(...)``."""
        Theta = Theta.to(self.E.dtype)
        tr = torch.diagonal(Theta, dim1=-2, dim2=-1).real.sum(-1)
        B00 = torch.einsum("ab,...ab->...", self.NB[0, 0], Theta).real
        b2 = float(self.beta.abs() ** 2)
        dg = torch.diagonal(Theta, dim1=-2, dim2=-1).real
        return b2 * tr * B00 + self.sigma_r2 * b2 * tr ** 2 + (dg * self.gRg).sum(-1) + 2 * self.sigma_r2 * tr

    def crb(self, Theta: torch.Tensor) -> torch.Tensor:
        """``tr(F^-1) = sum_i g_i [Fhat(Theta)^-1]_ii`` (``+inf`` if singular) -> ``(...)``."""
        dinv, _ = crb_model.inverse_diagonal(self.fim(Theta))
        return (dinv * self.g).sum(-1)

    def linearize(self, Theta0: torch.Tensor):
        """First-order Taylor model at Theta0 (Hermitian, (N, N)) of the 8 distinct Fhat entries
        and of C1, in the real coordinates ``x = [vec_F(Re Theta); vec_F(Im Theta)]``:
        ``f(Theta) ~ f0 + J (x - x0)``. Returns ``(f0 (9,), J (9, 2 N^2), x0 (2 N^2,))`` as float64
        tensors, rows = FIM_ENTRIES then C1 [W]."""
        Tr = Theta0.real.detach().clone().requires_grad_(True)
        Ti = Theta0.imag.detach().clone().requires_grad_(True)

        def f(tr, ti):
            Th = torch.complex(tr, ti)
            F = self.fim(Th)
            ent = torch.stack([F[p, q] for p, q in FIM_ENTRIES] + [self.irs_power(Th)])
            return ent

        f0 = f(Tr, Ti).detach()
        Jr, Ji = torch.autograd.functional.jacobian(f, (Tr, Ti), vectorize=True)
        n = self.N
        # vec_F of an (N, N) matrix = transpose then flatten (row-major)
        J = torch.cat([Jr.transpose(-1, -2).reshape(9, n * n), Ji.transpose(-1, -2).reshape(9, n * n)], -1)
        x0 = vec_real(Theta0.detach())
        return f0, J, x0


def vec_real(Theta: torch.Tensor) -> torch.Tensor:
    """``[vec_F(Re Theta); vec_F(Im Theta)]`` (the cvxpy ``vec(order='F')`` layout) ``(2 N^2,)``."""
    return torch.cat([Theta.real.transpose(-1, -2).reshape(-1), Theta.imag.transpose(-1, -2).reshape(-1)])
