"""Batched first-order portfolios (irs_torch.solvers.portfolio) and the data sets they label in batches."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from irs_torch.data.distribution import DatasetConfig
from irs_torch.data.generate import generate_dataset
from irs_torch.data.instance import solve_chunk
from irs_torch.scenario import Scenario, random_scenario
from irs_torch.solvers.portfolio import first_order_portfolio, refine_portfolio
from irs_torch.solvers.starts import diverse_starts

SMALL = dict(M=4, N_h=2, N_v=2)


def _batch(n=2, **kw):
    return Scenario.stack([random_scenario(seed=40 + i, **{**SMALL, **kw}) for i in range(n)]).to(torch.complex128)


def test_portfolio_designs_are_feasible_named_and_never_worse_than_their_best_start():
    scn = _batch(2, P_s=1e-3)
    res = refine_portfolio(scn, extra_starts=3, relaxed=1, steps=80, patience=0, polish=False)
    assert scn.is_feasible(res.R_s, res.psi, rtol=1e-9).all()
    assert res.status == ["first-order", "first-order"] and bool(res.success.all())
    for i in range(2):  # the winner's name is one of this instance's starts, relaxed copies included
        names = [d[0] for d in diverse_starts(scn[i], 3, seed=0)]
        assert res.found_by[i] in names + [f"{names[0]} from 10 P_s"]
        # never worse than any start made feasible (iterate 0 counts)
        starts = diverse_starts(scn[i], 3, seed=0)
        c0 = min(float(scn[i].crb(R, scn[i].scale_psi_to_feasible(R, p)).total.max()) for _, R, p in starts)
        assert float(res.max_crb[i]) <= c0 * (1 + 1e-12)
    assert torch.allclose(res.max_crb, scn.crb(res.R_s, res.psi).total.amax(-1), rtol=1e-12)


def test_polish_never_raises_the_max_crb_and_records_its_certificate():
    scn = _batch(2, P_s=1e-2)
    raw = refine_portfolio(scn, extra_starts=2, steps=30, patience=0, polish=False)
    pol = refine_portfolio(scn, extra_starts=2, steps=30, patience=0, polish=True)
    assert (pol.max_crb <= raw.max_crb * (1 + 1e-9)).all()
    assert all(h and h[-1]["step"] == "p2-polish" for h in pol.history)
    r = pol.item_result(1)
    assert r.success and r.status in ("first-order+p2", "first-order (P2 polish failed)")
    assert r.options["found_by"] == pol.found_by[1] and isinstance(r.options["p2_certified"], bool)
    assert r.max_crb == pytest.approx(float(pol.max_crb[1]), rel=1e-12)


def test_an_instance_gets_the_same_design_alone_and_in_a_batch_with_its_own_seed():
    scn = _batch(3, P_s=1e-3)
    seeds = [7, 8, 9]
    both = refine_portfolio(scn, extra_starts=2, relaxed=1, steps=40, patience=10, polish=False, seeds=seeds)
    alone = refine_portfolio(scn[1:2], extra_starts=2, relaxed=1, steps=40, patience=10, polish=False, seeds=[8])
    assert alone.found_by[0] == both.found_by[1]
    assert torch.allclose(alone.max_crb[0], both.max_crb[1], rtol=1e-6)
    # another seed draws other starts (the seed is used, not ignored)
    other = refine_portfolio(scn[1:2], extra_starts=2, steps=0, polish=False, seeds=[99])
    assert not torch.allclose(other.init_psi[0], alone.init_psi[0])


def test_passive_surfaces_get_no_relaxed_starts():
    scn = _batch(1, active=False)
    res = refine_portfolio(scn, extra_starts=2, relaxed=2, steps=5, patience=0, polish=False)
    assert res.settings["relaxed_starts"] == 0 and "P_s" not in res.found_by[0]


@pytest.mark.parametrize("kw, match", [
    ({}, "needs starts"),
    ({"extra_starts": 1, "seeds": [1, 2, 3]}, "one seed per scenario"),
])
def test_bad_calls_are_clear_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        refine_portfolio(_batch(2), steps=1, **kw)
    with pytest.raises(ValueError, match="batched scenario"):
        first_order_portfolio(random_scenario(seed=1, **SMALL))


@pytest.fixture
def short_runs(monkeypatch):
    """The first-order effort with 30 steps (the recipe's logic, in seconds; the full recipe runs under slow)."""
    import irs_torch.solvers.portfolio as pf

    monkeypatch.setattr(pf, "FO_LABEL_STEPS", 30)
    monkeypatch.setattr(pf, "FO_LABEL_PATIENCE", 10)


def _fo_config(**kw):
    return DatasetConfig(seed=3, shard_size=2, **SMALL, solver={"method": "ao", "effort": "first-order"}, **kw)


def test_first_order_data_set_labels_in_batches_records_the_winner_and_verifies(tmp_path, short_runs):
    from irs_torch.data.integrity import verify_dataset

    cfg = _fo_config()
    m = generate_dataset(tmp_path / "ds", 3, cfg, workers=1, progress=False)
    assert m["complete"]
    rows = {}
    for f in sorted((tmp_path / "ds" / "shards").glob("*.h5")):
        with h5py.File(f, "r") as h:
            won = json.loads(h.attrs["found_by"])
            ids = [int(i) for i in h["instance_id"][:]]
            assert sorted(int(k) for k in won) == ids  # one winner per stored instance
            assert all(s.startswith(b"first-order") for s in h["status"][:])
            rows.update({i: float(c) for i, c in zip(ids, h["max_crb"][:])})
    assert sorted(rows) == [0, 1, 2]
    verify_dataset(tmp_path / "ds")  # CRBs recomputed, feasibility where success = 1, ids complete
    from irs_torch.data.integrity import dataset_info
    from irs_torch.data.shards import start_kind

    won = dataset_info(tmp_path / "ds")["found_by"]  # the winners, counted by recipe (seeds stripped)
    assert sum(won.values()) == 3 and not any("seed=" in k for k in won)
    assert start_kind("random(seed=7,level=0.5,beam) from 10 P_s") == "random(level=0.5,beam) from 10 P_s"
    assert start_kind("amax(seed=12)") == "amax"
    # a record depends on its instance, not on the chunk it was labelled in
    again = solve_chunk(cfg, [2])[0]
    assert again["max_crb"] == pytest.approx(rows[2], rel=1e-5)
    assert np.isfinite(again["cpu_time"]) and again["found_by"]


def test_first_order_data_set_resumes_a_lost_shard_without_duplicates(tmp_path, short_runs):
    cfg = _fo_config()
    out = tmp_path / "ds"
    generate_dataset(out, 4, cfg, workers=1, progress=False)
    shard1 = out / "shards" / "shard-00001.h5"
    with h5py.File(shard1, "r") as h:
        before = h["max_crb"][:].copy()
    shard1.unlink()  # as if the run had been killed before writing it
    generate_dataset(out, 4, cfg, workers=1, progress=False)
    with h5py.File(shard1, "r") as h:
        assert [int(i) for i in h["instance_id"][:]] == [2, 3]
        np.testing.assert_allclose(h["max_crb"][:], before, rtol=1e-5)


@pytest.mark.slow
def test_first_order_effort_full_recipe_labels_a_small_data_set(tmp_path):
    from irs_torch.data.integrity import verify_dataset

    m = generate_dataset(tmp_path / "ds", 3, _fo_config(), workers=1, progress=False)
    assert m["complete"]
    verify_dataset(tmp_path / "ds")


def test_dataset_config_effort_flag_writes_a_first_order_config(tmp_path, capsys):
    from irs_torch.cli import main
    from irs_torch.data.distribution import load_config
    from irs_torch.data.instance import batched_labels

    out = tmp_path / "c.yaml"
    assert main(["dataset", "config", "--preset", "tiny", "--effort", "first-order", "-o", str(out)]) == 0
    cfg = load_config(out)
    assert cfg.solver["effort"] == "first-order" and batched_labels(cfg)
    assert main(["dataset", "config", "--preset", "tiny", "-o", str(tmp_path / "d.yaml")]) == 0
    assert not batched_labels(load_config(tmp_path / "d.yaml"))  # the preset's per-instance labels


def test_polish_retries_clarabel_with_equilibration_when_it_fails(monkeypatch):
    # where plain Clarabel fails (it does at low P_s), the polish tries Clarabel with equilibration before
    # keeping the first-order point; the retry is named in the status and counted as a solver failure
    import irs_torch.solvers.transmit as tr
    from irs_torch.solvers.portfolio import polish_transmit

    real = tr.solve_transmit_sdp
    seen = []

    def flaky(scn, psi, *, solver, **kw):
        seen.append(solver)
        if solver == "CLARABEL":
            return tr.TransmitResult(R_s=kw["R_ref"], crb=None, max_crb=float("inf"), status="failed: CLARABEL: x",
                                     solver="CLARABEL", sdp_bound=float("nan"), failed=True, solver_failures=1)
        return real(scn, psi, solver=solver, **kw)

    monkeypatch.setattr(tr, "solve_transmit_sdp", flaky)
    s = random_scenario(seed=5, **SMALL).to(torch.complex128)
    R0 = s.isotropic_design()
    psi = s.scale_psi_to_feasible(R0, s.random_phase_design(R0, seed=1))
    R, rec, _ = polish_transmit(s, R0, psi)
    assert seen == ["CLARABEL", "CLARABEL-EQ"]
    assert not rec["p2_failed"] and "after CLARABEL: failed" in rec["p2_status"] and rec["p2_solver_failures"] >= 1
    assert rec["max_crb"] <= float(s.crb(R0, psi).total.max()) * (1 + 1e-12)
