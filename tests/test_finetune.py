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
                                      ({"batch": 100000}, "batch <= 4096")])
def test_settings_are_validated(kw, match):
    with pytest.raises(ValueError, match=match):
        _settings(**kw)
