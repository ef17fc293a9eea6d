"""Kill a real `irs-torch dataset generate` process mid-run with a real signal, restart it, and
check that the result equals an uninterrupted run instance by instance."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from test_data_helpers import assert_same_data, load_rows, write_config

from irs_torch.data import generate_dataset
from irs_torch.data.instance import THROTTLE_ENV

NUM = 7  # shards of 3: [0-2] [3-5] [6]


def _descendants(pid: int) -> set[int]:
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except FileNotFoundError:
            continue
        for t in tids:
            try:
                kids = open(f"/proc/{p}/task/{t}/children").read().split()
            except FileNotFoundError:
                continue
            for k in map(int, kids):
                if k not in out:
                    out.add(k)
                    todo.append(k)
    return out


def _alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie has exited (nobody reaped it yet)


def _cmd(cfg, out, workers=2):
    return [sys.executable, "-m", "irs_torch", "dataset", "generate", "--config", str(cfg), "--num", str(NUM),
            "--out", str(out), "--workers", str(workers), "--no-progress"]


def _start_and_signal(cmd, out, sig, throttle="0.25"):
    env = {**os.environ, THROTTLE_ENV: throttle, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = out / "shards" / "shard-00000.h5"
    t0 = time.time()
    while not first.exists():
        if p.poll() is not None:
            pytest.fail(f"generation ended before the first shard (rc {p.returncode}): {p.stderr.read()}")
        if time.time() - t0 > 180:
            p.kill()
            pytest.fail("no shard written within 180 s")
        time.sleep(0.05)
    kids = _descendants(p.pid)
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    return p.returncode, kids, err


def _check_killed(out):
    m = json.loads((out / "manifest.json").read_text())
    assert not m["complete"] and m["counts"]["stored"] < NUM  # it really was interrupted mid-run
    kept = {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("shard-*.h5")}
    assert "shard-00000.h5" in kept and len(kept) < 3
    return kept


def _check_resumed(ref, out, kept):
    for name, mtime in kept.items():  # complete shards were kept, not recomputed
        assert (out / "shards" / name).stat().st_mtime_ns == mtime
    assert_same_data(ref, out)
    assert sorted(load_rows(out)["instance_id"].tolist()) == list(range(NUM))  # none missing, none twice
    assert json.loads((out / "manifest.json").read_text())["complete"]


def test_sigkill_mid_run_then_resume_equals_an_uninterrupted_run(tmp_path):
    cfg = write_config(tmp_path / "tiny.yaml")
    ref = tmp_path / "ref"
    generate_dataset(ref, NUM, cfg, workers=1, progress=False, log=lambda m: None)
    out = tmp_path / "run"
    rc, _, _ = _start_and_signal(_cmd(cfg, out, workers=1), out, signal.SIGKILL)
    assert rc == -signal.SIGKILL
    kept = _check_killed(out)
    notes = []  # restart (in this process: the command is a thin wrapper of generate_dataset)
    generate_dataset(out, NUM, None, workers=1, progress=False, log=notes.append)
    assert any("resuming" in n for n in notes)
    _check_resumed(ref, out, kept)


@pytest.mark.slow
def test_sigkill_with_a_process_pool_leaves_no_workers_and_resumes_from_the_command_line(tmp_path):
    cfg = write_config(tmp_path / "tiny.yaml")
    ref = tmp_path / "ref"
    generate_dataset(ref, NUM, cfg, workers=1, progress=False, log=lambda m: None)
    out = tmp_path / "run"
    rc, kids, _ = _start_and_signal(_cmd(cfg, out, workers=2), out, signal.SIGKILL)
    assert rc == -signal.SIGKILL
    kept = _check_killed(out)
    assert len(kids) >= 2  # the pool's workers (and multiprocessing's resource tracker)
    t0 = time.time()
    while any(_alive(k) for k in kids) and time.time() - t0 < 20:
        time.sleep(0.2)
    assert not any(_alive(k) for k in kids), "worker processes outlived the killed driver"
    # Restart with the command line (one worker this time: instances do not depend on it).
    r = subprocess.run(_cmd(cfg, out, workers=1), env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stderr and f"{NUM} instances stored, 0 failed, 0 pending" in r.stdout
    _check_resumed(ref, out, kept)


@pytest.mark.slow
def test_sigterm_stops_cleanly_and_resumes(tmp_path):
    cfg = write_config(tmp_path / "tiny.yaml")
    out = tmp_path / "run"
    rc, kids, err = _start_and_signal(_cmd(cfg, out, workers=2), out, signal.SIGTERM)
    assert rc == 130 and "interrupted" in err
    assert not json.loads((out / "manifest.json").read_text())["complete"]
    time.sleep(0.5)
    assert not any(_alive(k) for k in kids)
    generate_dataset(out, NUM, None, workers=1, progress=False, log=lambda m: None)
    ref = tmp_path / "ref"
    generate_dataset(ref, NUM, cfg, workers=1, progress=False, log=lambda m: None)
    assert_same_data(ref, out)
