"""Fine-tuning through the refiner (irs_torch.learn.finetune): resumable with the same data order and step count."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from irs_torch.learn.finetune import FinetuneSettings, export, finetune

ROOT = Path(__file__).resolve().parent.parent


def _settings(**kw):
    base = dict(init=str(ROOT / "checkpoints" / "warm-start-budget.pt"),
                data_config=str(ROOT / "training" / "budget-data.yaml"), steps=4, batch=3, unroll=2, hypotheses=2,
                val_instances=5, val_every=2, save_every=1, lr=1e-4)
    base.update(kw)
    return FinetuneSettings(**base)


def test_killed_and_resumed_equals_uninterrupted(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    st = _settings()
    finetune(tmp_path / "a", st, log=lambda *a: None)
    # "killed" after 2 steps: a run whose step loop raises at step 3, then resumed
    import irs_torch.learn.finetune as ft

    calls = {"n": 0}
    real = ft._draws

    def dying(cfg, first, n):
        if n == st.batch:
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt
        return real(cfg, first, n)

    monkeypatch.setattr(ft, "_draws", dying)
    with pytest.raises(KeyboardInterrupt):
        finetune(tmp_path / "b", st, log=lambda *a: None)
    monkeypatch.setattr(ft, "_draws", real)
    assert torch.load(tmp_path / "b" / "state.pt", weights_only=True)["step"] == 2
    r = finetune(tmp_path / "b", st, log=lambda *a: None)
    assert r["step"] == 4 and r["done"]
    a = torch.load(tmp_path / "a" / "state.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "state.pt", weights_only=True)
    assert a["step"] == b["step"] == 4
    for k in a["net"]:
        assert torch.equal(a["net"][k], b["net"][k]), k
    hist = [json.loads(x) for x in (tmp_path / "b" / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in hist] == [2, 4]
    with pytest.raises(ValueError, match="other settings"):
        finetune(tmp_path / "b", _settings(steps=5), log=lambda *a: None)
    model = export(tmp_path / "b", tmp_path / "m.pt")
    from irs_torch.learn.checkpoint import load_model, read_sidecar

    net = load_model(model)
    assert read_sidecar(model)["budgets"]["P_t"] == [1.0, 40.0]
    for k, p in net.state_dict().items():  # the model file holds the fine-tuned weights (float32 in the file)
        if p.is_floating_point():
            assert torch.allclose(p.double(), a["net"][k].double(), rtol=1e-6, atol=1e-7), k


@pytest.mark.parametrize("kw,match", [({"batch": 0}, "batch must be a positive integer"),
                                      ({"lr": -1.0}, "lr must be a finite number >= 0"),
                                      ({"batch": 100000}, "batch, fresh <= 4096"),
                                      ({"fresh": -1}, "fresh must be a non-negative integer"),
                                      ({"val_steps": -1}, "val_steps must be None or an integer")])
def test_settings_are_validated(kw, match):
    with pytest.raises(ValueError, match=match):
        _settings(**kw)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """14 paper-size instances of the budget distribution, labelled by the transmit-only baseline (quick)."""
    from irs_torch.data import generate_dataset, load_config

    root = tmp_path_factory.mktemp("labels") / "d"
    cfg = load_config(ROOT / "training" / "budget-data.yaml").replace(solver={"method": "transmit-only"},
                                                                       shard_size=7)
    generate_dataset(root, 14, cfg, workers=1, progress=False, log=lambda m: None)
    return root


def test_labelled_data_order_is_a_permutation_per_epoch(labelled):
    from irs_torch.learn.finetune import LabelledData

    d = LabelledData(labelled, (0.5, 0.3, 0.2), seed=3, n_val=2)
    n = len(d.train)
    assert n >= 3
    seen = []
    real = d._get
    d._get = lambda ds, idx: seen.extend(int(i) for i in idx)
    for t in range(2 * n):  # batch 1: two epochs
        d.step_batch(t, 1)
    assert sorted(seen[:n]) == list(range(n)) and sorted(seen[n:]) == list(range(n))
    assert seen[:n] != seen[n:] or n < 3  # a new permutation each epoch (n >= 3: equal only by chance 1/n!)
    seen.clear()
    d.step_batch(1, n + 1)  # a batch that straddles epochs 1 and 2 takes the same positions
    ref = seen[:]
    seen.clear()
    for t in range(n + 1, 2 * n + 2):
        d.step_batch(t, 1)
    assert ref == seen
    d._get = real
    scn, lab = d.step_batch(0, 2)
    assert scn.G.shape[0] == 2 and lab["psi"].shape == (2, 2, 16) and torch.all(lab["max_crb"] > 0)


def test_labelled_finetune_resumes_and_reports_label_ratios(labelled, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    st = _settings(labels=str(labelled), w_sup=0.5, label_fractions=(0.5, 0.3, 0.2), val_instances=3, fresh=2)
    finetune(tmp_path / "a", st, log=lambda *a: None)
    import irs_torch.learn.finetune as ft

    calls = {"n": 0}
    real = ft.LabelledData.step_batch

    def dying(self, step, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, step, batch)

    monkeypatch.setattr(ft.LabelledData, "step_batch", dying)
    with pytest.raises(KeyboardInterrupt):
        finetune(tmp_path / "b", st, log=lambda *a: None)
    monkeypatch.setattr(ft.LabelledData, "step_batch", real)
    r = finetune(tmp_path / "b", st, log=lambda *a: None)
    assert r["step"] == 4 and r["done"]
    a = torch.load(tmp_path / "a" / "state.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "state.pt", weights_only=True)
    for k in a["net"]:
        assert torch.equal(a["net"][k], b["net"][k]), k
    hist = [json.loads(x) for x in (tmp_path / "b" / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in hist] == [2, 4]
    assert all(h["raw_vs_label_median"] > 0 and h["refined_vs_label_median"] > 0 for h in hist)
    # the supervised term moves the weights differently from the CRB terms alone
    finetune(tmp_path / "c", _settings(labels=str(labelled), w_sup=0.0, label_fractions=(0.5, 0.3, 0.2),
                                       val_instances=3), log=lambda *a: None)
    c = torch.load(tmp_path / "c" / "state.pt", weights_only=True)
    assert any(not torch.equal(a["net"][k], c["net"][k]) for k in a["net"])
    # a data set that changed under a run is refused on resume
    sig = json.loads((tmp_path / "b" / "labels.json").read_text())
    sig["n_train"] += 1
    (tmp_path / "b" / "labels.json").write_text(json.dumps(sig))
    with pytest.raises(ValueError, match="differ from those the run"):
        finetune(tmp_path / "b", st, log=lambda *a: None)


def test_w_sup_needs_labels():
    with pytest.raises(ValueError, match="w_sup = 0.5 needs a labelled data set"):
        _settings(w_sup=0.5)
