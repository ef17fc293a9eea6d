"""The BS-power / IRS-amplification balance step of the AO (irs_torch.solvers.starts.balance_power)."""
import torch

from irs_torch import paper_scenario, random_scenario
from irs_torch.solvers.starts import balance_power


def test_balance_never_worse_and_feasible():
    for seed in range(3):
        s = random_scenario(seed, P_s=0.003)
        R = s.isotropic_design()
        psi = s.random_phase_design(R, seed=seed)
        c0 = s.crb(R, psi).total
        R2, psi2, rho = balance_power(s, R, psi)
        c1 = s.crb(R2, psi2).total
        assert (c1 <= c0 * (1 + 1e-12)).all()
        assert bool(s.is_feasible(R2, psi2, rtol=1e-9))
        assert ((rho > 0) & (rho <= 1)).all()


def test_balance_unsticks_high_power_low_ps():
    # P_t = 40 W, P_s = 1 mW: the isotropic full-power start leaves |psi| tiny (C1 binds on the
    # first hop); backing the BS off lets the IRS amplify and lowers the CRB by orders of magnitude.
    s = paper_scenario(seed=0, P_t=40.0, P_s=1e-3)
    R = s.isotropic_design()
    psi = s.random_phase_design(R, seed=0)
    c0 = s.crb(R, psi).total
    R2, psi2, rho = balance_power(s, R, psi)
    c1 = s.crb(R2, psi2).total
    assert (c1 < c0 / 10).all(), (c0, c1)
    assert (rho < 0.5).all()
    assert psi2.abs().max() > psi.abs().max() * 2


def test_balance_leaves_passive_alone():
    s = paper_scenario(seed=0, active=False, sigma_r2=0.0)
    R = s.isotropic_design()
    psi = torch.polar(torch.ones(s.L, s.N, dtype=torch.float64), torch.rand(s.L, s.N, dtype=torch.float64))
    R2, psi2, rho = balance_power(s, R, psi.to(torch.complex128))
    assert torch.equal(R2, R) and (rho == 1).all()
