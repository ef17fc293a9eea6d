"""The Ray backend on a local Ray instance: same data as the local backend for the same seed."""
from __future__ import annotations

import sys

import pytest
from test_data_helpers import assert_same_data, write_config

from irs_torch.cli import main
from irs_torch.data import generate_dataset
from irs_torch.data.backends import BackendUnavailable
from irs_torch.data.ray_backend import RayBackend

NUM = 3


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def test_ray_and_local_backends_produce_identical_data(ray_local, tmp_path, capsys):
    cfg = write_config(tmp_path / "tiny.yaml", seed=3, shard_size=2)
    local = tmp_path / "local"
    generate_dataset(local, NUM, cfg, workers=1, progress=False, log=lambda m: None)
    via_ray = tmp_path / "ray"
    m = generate_dataset(via_ray, NUM, cfg, backend="ray", progress=False, log=lambda m: None)
    assert m["generator"]["backend"] == "ray" and m["counts"]["stored"] == NUM
    assert_same_data(local, via_ray)
    assert ray_local.is_initialized()  # a Ray started by the caller is left running
    # The command line, extending the data set on the same Ray.
    rc = main(["dataset", "generate", "--config", str(cfg), "--num", str(NUM + 1), "--out", str(via_ray),
               "--backend", "ray", "--no-progress"])
    assert rc == 0 and f"{NUM + 1} instances stored" in capsys.readouterr().out
    generate_dataset(local, NUM + 1, None, workers=1, progress=False, log=lambda m: None)
    assert_same_data(local, via_ray)


def test_missing_ray_gives_an_install_hint(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(BackendUnavailable, match=r"pip install 'irs-torch\[ray\]'"):
        with RayBackend(workers=1):
            pass
    rc = main(["dataset", "generate", "--config", "tiny", "--num", "2", "--out", str(tmp_path / "o"),
               "--backend", "ray", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "irs-torch: error: the ray backend needs the package 'ray'" in err
