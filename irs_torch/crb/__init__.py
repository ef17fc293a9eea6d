"""Fisher information, Cramer-Rao bound and power budgets of the multi-active-IRS sensing model.

This is the one implementation of the physics that everything else (solvers, data, learning)
uses. All functions are batched over arbitrary leading dimensions ``...`` (which broadcast),
work in complex128 or complex64, and are differentiable with respect to ``R_s``, ``psi`` and
``G`` (and theta, phi).

Model (paper eqs. (8)-(16), docs/assumptions.md "Corrections to the paper" items 1-2). For IRS l with
``u = G^T (psi * a)``, ``u_theta = G^T (psi * da/dtheta)``, ``u_phi = G^T (psi * da/dphi)`` the echo mean per
snapshot is ``beta u u^T s`` (so ``H = u u^T``, ``C_theta = u_theta u^T + u u_theta^T``), the noise covariance
``R_w = sigma_r2 G^T Psi Psi^H G^* + sigma_b2 I`` and, with ``T_L = T_c / L``,

    F_pq = 2 T_L Re tr(D_p^H R_w^-1 D_q R_s),   D_theta = beta C_theta, D_phi = beta C_phi,
                                                 D_Re(beta) = H,       D_Im(beta) = j H.

Rank-one structure. With ``X = [u, u_theta, u_phi]`` (M x 3) every ``C`` is ``X K X^T`` for a
fixed symmetric 3x3 selector ``K``, hence ``tr(C_p^H W C_q R) = tr(K_p A K_q B)`` with the 3x3
Gram matrices ``A = X^H W X`` and ``B = X^T R X^*``. The M x M work is one Cholesky of R_w and a
triangular solve with three right-hand sides.

Rescaling. Entries of F in SI units span ~1e9 (|beta|^2 ~ 1e-11). We compute the
dimensionless ``Fhat`` in the parameterisation ``xi' = (theta, phi, Re beta/|beta|, Im beta/|beta|)``
with ``R_w`` normalised by ``sigma_b2``:

    F_SI = c * J Fhat J,   c = 2 T_L |beta|^2 / sigma_b2,   J = diag(1, 1, 1/|beta|, 1/|beta|),

so ``CRB_theta = [Fhat^-1]_00 / c`` and ``CRB_Re(beta) = [Fhat^-1]_22 sigma_b2 / (2 T_L)``. Fhat is
inverted after a Jacobi (unit-diagonal) congruence, by Cholesky.

Layout. :mod:`irs_torch.crb.grams` computes the echo vectors and the Gram matrices (the heavy stage),
:mod:`irs_torch.crb.inverse` inverts Fhat, :mod:`irs_torch.crb.fim` assembles the FIM and the CRB and
:mod:`irs_torch.crb.power` holds the power constraints; every public name is re-exported here.

Speed. The Gram matrix, R_w's Cholesky factor, X and ``A`` come from one batched product
``[rho |psi|^2 (.) G^H ; (psi (.) Z)^T] G`` per cache-sized chunk of the batch, factored in place
(``_EchoGrams``, with a hand-written, rank-<=6 backward). For batches of at least 128 problems with one
transmit covariance each, ``B = X^T R_s X^*`` is computed in the same chunks (``_EchoGramsR``, one
hand-written backward for both Gram matrices). Functions here are differentiable once (no double backward,
no torch.func transforms through ``_EchoGrams``). At M = N = 16 the per-problem work is a handful of
16 x 16 matrix calls (one batched product, one LAPACK Cholesky and triangular solves per matrix); measured
on one CPU core, element-wise (batch-vectorised) Gauss-Jordan or LDL^H kernels in torch run at about
0.5 G complex multiply-adds/s and are slower than those LAPACK calls, so they are not used.

When the IRS has fewer elements than the BS antennas (N < M) the whitened Gram comes from the element
space instead (``_EchoGramsN``): ``A = Z^H K (I + rho K)^-1 Z`` with ``K = Psi^* G^* G^T Psi`` (push-through
identity), one N x N Cholesky and ``G^* G^T`` formed once per distinct G, with an O(N^2) hand-written
backward. Above 32 BS antennas, when several problems share one G (the starts of a first-order run) and G needs
no gradient, the array space takes ``_EchoGramsShared``: R_w's noise part for all of them from one real GEMM per
distinct G with a cached real kernel, and no copy of G per problem.
The CRB's last stage (``crb_from_grams``) builds the six traces ``tr(K_p A K_q B)`` from a table
of four products each, inverts Fhat in closed form and has a hand-written backward
(``gF = -Fhat^-1 diag(g) Fhat^-1``), all on entry-major planes, so a forward + backward is a few dozen
vectorised operations whatever the batch size (the first-order screens call it with batches of ~16).

Low-rank transmit path: :func:`crb_factored`, :func:`irs_power_factored` and
:func:`irs_power_coefficients_factored` take ``B`` (..., M, r) with ``R_s = B B^H`` and never form an M x M
matrix (``X^T R X^* = (X^T B)(X^T B)^H``, ``u^T R u^* = ||B^T u||^2``, ``[G R G^H]_nn = ||(G B)_n||^2``).

Precision: complex64 inputs run the same code in single precision; against complex128 the CRB is then
within ~1e-4 relative (worst measured 1.1e-4 over the total, theta, phi and beta parts, M in {4, 16, 64, 128},
N in {4, 16, 64, 256}, three paper scenarios each; typically 1e-5; the float32 steering phase of a
16-element row alone costs ~3e-6, and correlated angle/beta entries amplify it in the Schur complement), so
the 1e-6 that would let float32 stand in for reported values is not met: complex64 suits screening only.

Singular FIM. If Fhat is not positive definite (e.g. ``psi = 0``, ``R_s = 0``), the CRB is
``+inf`` (never NaN) and its gradient there is zero.
"""
from __future__ import annotations

from irs_torch.crb.fim import (
    CRBResult,
    crb,
    crb_factored,
    echo_vectors,
    fim_coefficient_matrices,
    fim_normalized,
    fim_scale,
    fisher_information,
    noise_covariance,
)
from irs_torch.crb.grams import broadcast_shapes, echo_grams_autograd, matmul_shared
from irs_torch.crb.inverse import FIM_SELECTORS, inverse_diagonal
from irs_torch.crb.power import (
    bs_power,
    c1_max_scale,
    irs_power,
    irs_power_coefficients,
    irs_power_coefficients_factored,
    irs_power_factored,
    irs_power_matrix,
    irs_power_terms,
    irs_power_terms_factored,
)

__all__ = [
    "CRBResult", "FIM_SELECTORS", "broadcast_shapes", "bs_power", "c1_max_scale", "crb", "crb_factored",
    "echo_grams_autograd", "echo_vectors", "fim_coefficient_matrices", "fim_normalized", "fim_scale",
    "fisher_information", "inverse_diagonal", "irs_power", "irs_power_coefficients", "irs_power_coefficients_factored",
    "irs_power_factored", "irs_power_matrix", "irs_power_terms", "irs_power_terms_factored", "matmul_shared",
    "noise_covariance",
]
