"""`irs-torch crb --index i` evaluates item i of a batched scenario file with item i of a batched
solutions file (from `irs-torch solve` on the batch): the same CRB that `solve` stored."""
import json

import numpy as np
import torch

from irs_torch.scenario import Scenario, Solution, paper_scenario


def test_crb_of_one_item_of_a_batch(tmp_path, capsys):
    from irs_torch.cli import main

    scen = Scenario.stack([paper_scenario(seed=i, M=4, N_h=2, N_v=2) for i in range(3)])
    sp, solp = tmp_path / "b.npz", tmp_path / "sol.npz"
    scen.save(sp)
    R = scen.isotropic_design()
    psi = torch.stack([scen[i].random_phase_design(R[i], seed=i) for i in range(3)])
    crb = scen.crb(R, psi).total
    Solution(R_s=R, psi=psi, crb=crb, method="test", metadata={}).save(solp)
    assert main(["crb", "--scenario", str(sp), "--solution", str(solp), "--index", "1", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(rep["crb"], crb[1].tolist(), rtol=1e-10)
    assert main(["crb", "--scenario", str(sp), "--solution", str(solp)]) == 2
    assert "pick one with --index i" in capsys.readouterr().err
    assert main(["crb", "--scenario", str(sp), "--index", "3"]) == 2
    assert "--index must be in [0, 3), got 3" in capsys.readouterr().err
