"""Fuzzing of what comes from outside (hypothesis): scenario files, solution files and command-line
flags, mutated at random from valid ones. The property: the command either works (exit 0) or says
what is wrong in one line naming the file, field or flag (exit 2); it never ends in an internal error
(exit 3), a traceback or a hang. A small budget runs in the default suite (a few seconds); the same
properties run with a large budget under ``pytest -m slow``.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from irs_torch import Solution, paper_scenario

SMALL = {"M": 4, "N_h": 2, "N_v": 2}
BUDGETS = [pytest.param(8, id="small"), pytest.param(400, id="large", marks=pytest.mark.slow)]


def _settings(n: int):
    return settings(max_examples=n, deadline=None, database=None, derandomize=n <= 20,
                    suppress_health_check=list(HealthCheck))


def _cli(*argv) -> tuple[int, str, str]:
    from irs_torch.cli import main

    out, err = io.StringIO(), io.StringIO()
    old = os.environ.pop("IRS_TORCH_DEBUG", None)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                rc = main([str(a) for a in argv])
            except SystemExit as e:  # argparse
                rc = e.code
    finally:
        if old is not None:
            os.environ["IRS_TORCH_DEBUG"] = old
    return rc, out.getvalue(), err.getvalue()


def _check_outcome(rc, err, *names):
    """Exit 0, or exit 2 with an error line naming one of ``names``; never exit 3 or a traceback."""
    assert rc in (0, 2), (rc, err)
    assert "Traceback" not in err and "internal error" not in err, err
    if rc == 2:
        last = [ln for ln in err.splitlines() if ln.strip()][-1]
        assert "error" in last, err
        if names:
            assert any(n in last for n in names), (names, last)


# ------------------------------------------------------------------ values a hostile file may hold
_SCALARS = st.sampled_from([0, 1, -1, 2, 4, 1e300, -1e300, float("nan"), float("inf"), -float("inf"), 0.5, 1e-300,
                            True, 2 ** 62, -(2 ** 62)])


@st.composite
def hostile_array(draw):
    kind = draw(st.sampled_from(["scalar", "vector", "matrix", "complex", "string", "empty", "bool", "int8",
                                 "bigdim"]))
    if kind == "scalar":
        return np.asarray(draw(_SCALARS))
    if kind == "string":
        return np.asarray(draw(st.text(max_size=12)))
    if kind == "empty":
        return np.zeros((0,) * draw(st.integers(1, 3)))
    if kind == "bool":
        return np.asarray(draw(st.lists(st.booleans(), min_size=1, max_size=4)))
    if kind == "int8":
        return np.asarray(draw(st.lists(st.integers(-128, 127), min_size=1, max_size=4)), dtype=np.int8)
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=4 if kind != "bigdim" else 6)))
    vals = np.asarray(draw(st.lists(_SCALARS.filter(lambda v: not isinstance(v, bool)), min_size=1, max_size=3)),
                      dtype=np.float64)
    a = np.resize(vals, shape)
    with np.errstate(invalid="ignore", over="ignore"):
        return a + 1j * a[::-1] if kind == "complex" else a


@st.composite
def mutated(draw, base: dict):
    """``base`` with a few keys dropped, replaced by hostile arrays, or junk keys added."""
    d = dict(base)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["drop", "replace", "replace", "add", "scale"]))
        key = draw(st.sampled_from(sorted(d) or ["G"]))
        if op == "drop":
            d.pop(key, None)
        elif op == "replace":
            d[key] = draw(hostile_array())
        elif op == "scale" and key in d and np.asarray(d[key]).dtype.kind in "fc":
            d[key] = np.asarray(d[key]) * draw(_SCALARS.filter(lambda v: not isinstance(v, bool)))
        else:
            d[draw(st.sampled_from(["junk", "x" * 40, "G_", "L"]))] = draw(hostile_array())
    return d


def _good():
    s = paper_scenario(0, **SMALL)
    R = s.isotropic_design()
    psi = s.random_phase_design(R, seed=0)
    return s, Solution.evaluate(s, R, psi, method="test")


# ------------------------------------------------------------------ the properties
@pytest.mark.parametrize("budget", BUDGETS)
def test_fuzz_scenario_files(budget):
    s, _ = _good()
    base = s.to_dict()

    @_settings(budget)
    @given(mutated(base))
    def check(d):
        with tempfile.TemporaryDirectory() as t, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = Path(t) / "s.npz"
            np.savez(p, **d)
            rc, _, err = _cli("crb", "--scenario", p)
            _check_outcome(rc, err, str(p))

    check()


@pytest.mark.parametrize("budget", BUDGETS)
def test_fuzz_solution_files(budget, tmp_path):
    s, sol = _good()
    scen = s.save(tmp_path / "s.npz")
    base = sol.to_dict()

    @_settings(budget)
    @given(mutated(base))
    def check(d):
        with tempfile.TemporaryDirectory() as t, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = Path(t) / "sol.npz"
            np.savez(p, **d)
            rc, _, err = _cli("crb", "--scenario", scen, "--solution", p)
            _check_outcome(rc, err, str(p))

    check()


_FLAG_VALUES = st.sampled_from(["-3", "0", "1", "2", "4", "nan", "inf", "-inf", "1e9", "1000000000", "abc", "",
                                "1.5", "-0", "2.0", "99999999999999999999", " 4"])


@pytest.mark.parametrize("budget", BUDGETS)
def test_fuzz_scenario_command_flags(budget, tmp_path):
    flags = ["--M", "--N-h", "--N-v", "--L", "--count", "--P-t", "--P-s", "--a-max", "--sigma-r2", "--sigma-b2",
             "--T-c", "--K-db", "--seed"]

    @_settings(budget)
    @given(st.lists(st.tuples(st.sampled_from(flags), _FLAG_VALUES), min_size=1, max_size=3, unique_by=lambda x: x[0]))
    def check(pairs):
        argv = [x for pair in pairs for x in pair]
        with tempfile.TemporaryDirectory() as t:
            rc, _, err = _cli("scenario", *argv, "-o", Path(t) / "x.npz")
            _check_outcome(rc, err, *(f for f, _ in pairs), "--output", "L=", "M=", "N_h=")

    check()


@pytest.mark.parametrize("budget", [pytest.param(8, id="small"),  # montecarlo runs take a second each
                                    pytest.param(60, id="large", marks=pytest.mark.slow)])
def test_fuzz_crb_and_montecarlo_flags(budget, tmp_path):
    s, sol = _good()
    scen = s.save(tmp_path / "s.npz")
    solp = sol.save(tmp_path / "sol.npz")
    options = {"crb": ["--index", "--seed"], "montecarlo": ["--trials", "--seed", "--chunk", "--index"]}

    @_settings(budget)
    @given(st.sampled_from(sorted(options)).flatmap(
        lambda cmd: st.tuples(st.just(cmd), st.lists(st.tuples(st.sampled_from(options[cmd]), _FLAG_VALUES),
                                                     min_size=1, max_size=2, unique_by=lambda x: x[0]),
                              st.booleans())))
    def check(case):
        cmd, pairs, with_solution = case
        argv = [cmd, "--scenario", scen, *(["--solution", solp] if with_solution else [])]
        if cmd == "montecarlo":
            pairs = [(f, v) if f != "--trials" or v in ("-3", "0", "nan", "abc", "", "1e9", "99999999999999999999")
                     else (f, "5") for f, v in pairs]  # valid trial counts stay small
            argv += ["--no-progress"]
        rc, _, err = _cli(*argv, *[x for pair in pairs for x in pair])
        _check_outcome(rc, err, *(f for f, _ in pairs), "--index", "--trials", "--chunk")

    check()


# ------------------------------------------------------------------ irs-torch solve flags
_SOLVE_INT_FLAGS = ["--index", "--max-iter", "--n-starts", "--n-randomizations", "--seed", "--hypotheses",
                    "--fo-steps", "--extra-starts", "--refine-iter"]
_SOLVE_CHOICES = {"--effort": ["fast", "default", "legacy", "junk", ""], "--p3": ["first-order", "sca-sdr", "x"],
                  "--init": ["random", "aligned", "isotropic", "junk", "missing.npz"], "--refine": ["fo", "ao", "none"],
                  "--p2-solver": ["CLARABEL", "scs", "MOSEK"], "--device": ["cpu", "cuda:7", "junk"],
                  "--rtol": ["1e-3", "0", "-1", "nan", "inf", "abc"], "--checkpoint": ["missing.pt", "."]}
_SOLVE_SWITCHES = ["--fair", "--no-polish", "--json", "--no-progress"]


@st.composite
def solve_argv(draw):
    method = draw(st.sampled_from(["transmit-only", "passive", "reflective-only", "ao", "learned"]))
    argv = ["--method", method]
    for flag in draw(st.lists(st.sampled_from(_SOLVE_INT_FLAGS), max_size=3, unique=True)):
        argv += [flag, draw(_FLAG_VALUES)]
    for flag in draw(st.lists(st.sampled_from(sorted(_SOLVE_CHOICES)), max_size=2, unique=True)):
        argv += [flag, draw(st.sampled_from(_SOLVE_CHOICES[flag]))]
    argv += draw(st.lists(st.sampled_from(_SOLVE_SWITCHES), max_size=2, unique=True))
    return argv


@pytest.mark.parametrize("budget", [pytest.param(5, id="small"),
                                    pytest.param(300, id="large", marks=pytest.mark.slow)])
def test_fuzz_solve_flags(budget, tmp_path):
    s, _ = _good()
    scen = s.save(tmp_path / "s.npz")
    flags = set(_SOLVE_INT_FLAGS) | set(_SOLVE_CHOICES) | {"--method", "--output", "--fair", "--no-polish", "--json"}

    @_settings(budget)
    @given(solve_argv())
    def check(argv):
        if "--max-iter" not in argv:  # AO runs stay short (valid integer values drawn are at most 4)
            argv = [*argv, "--max-iter", "2"]
        with tempfile.TemporaryDirectory() as t:
            rc, out, err = _cli("solve", "--scenario", scen, *argv, "-o", Path(t) / "sol.npz")
            fields = {f.lstrip("-").replace("-", "_") for f in flags}  # SolverOptions names the field (rtol)
            _check_outcome(rc, err, *flags, *fields, "index", "checkpoint", "init", "device", "effort", "cuda")
            if rc == 0 and "--json" in argv:
                json.loads(out)  # stdout stays one JSON object

    check()


# ------------------------------------------------------------------ the training config (LightningCLI YAML)
REPO = Path(__file__).resolve().parents[1]
_YAML_VALUES = st.sampled_from([-3, 0, 1, 2, 3, 10 ** 9, 10 ** 18, 1.5, -0.5, 1e300, float("nan"), float("inf"), "abc",
                                "", None, True, [], [1, 2], {}, {"a": 1}, "4", "1e9", "data/../../etc"])
_YAML_FIELDS = ["model.M", "model.N_h", "model.N_v", "model.L", "model.hidden", "model.depth", "model.rank",
                "model.lr", "model.warmup_steps", "model.tau", "model.w_crb", "model.arch", "model.hypotheses",
                "model.channels", "model.layers", "model.dropout", "model.features", "model.c1_mode",
                "model.normalizer_instances", "model.unroll_steps", "model.junk", "data.batch_size",
                "data.num_workers", "data.junk", "trainer.max_epochs", "trainer.devices", "trainer.accelerator",
                "seed_everything", "junk"]


@st.composite
def training_config(draw):
    import yaml

    base = yaml.safe_load((REPO / "training" / "tiny.yaml").read_text())
    kind = draw(st.sampled_from(["fields", "fields", "fields", "document"]))
    if kind == "document":  # the whole file is something else
        return draw(st.sampled_from(["[1, 2]", "just text", "{unclosed: [", "\x00\x01binary", "model: 3", "",
                                     "model:\n  M: !!python/object/apply:os.system ['echo hi']\n", "a: &x [*x]"]))
    for path in draw(st.lists(st.sampled_from(_YAML_FIELDS), min_size=1, max_size=3, unique=True)):
        *parents, leaf = path.split(".")
        d = base
        for p in parents:
            d = d.setdefault(p, {}) if isinstance(d.get(p), dict) or p not in d else d[p]
        if draw(st.booleans()) and leaf in d:
            d.pop(leaf)
        else:
            d[leaf] = draw(_YAML_VALUES)
    return yaml.safe_dump(base)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    from irs_torch.data import generate_dataset, load_config

    root = tmp_path_factory.mktemp("fuzz-data") / "tiny"
    cfg = load_config(REPO / "training" / "tiny-data.yaml").replace(solver={"method": "transmit-only"}, shard_size=8)
    generate_dataset(root, 16, cfg, workers=1, progress=False, log=lambda m: None)
    return root


def _train_cli(*argv) -> tuple[int, str]:
    import logging
    import sys

    from irs_torch.learn.train import main

    err = io.StringIO()
    old = os.environ.pop("IRS_TORCH_DEBUG", None)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
                for h in logging.getLogger(name).handlers:
                    if isinstance(h, logging.StreamHandler):
                        h.stream = sys.stderr
            try:
                rc = main([str(a) for a in argv])
            except SystemExit as e:  # jsonargparse: usage + error, exit 2
                rc = e.code
    finally:
        if old is not None:
            os.environ["IRS_TORCH_DEBUG"] = old
    return rc, err.getvalue()


@pytest.mark.parametrize("budget", [pytest.param(4, id="small"),  # each valid config trains one batch
                                    pytest.param(200, id="large", marks=pytest.mark.slow)])
def test_fuzz_training_config(budget, tiny_root):
    names = {f.split(".")[-1] for f in _YAML_FIELDS} | {"config", "yaml", "YAML", "model", "data", "trainer"}

    @_settings(budget)
    @given(training_config())
    def check(text):
        with tempfile.TemporaryDirectory() as t:
            cfg = Path(t) / "c.yaml"
            cfg.write_text(text, encoding="utf-8", errors="surrogateescape")
            rc, err = _train_cli("fit", "--config", cfg, "--data.root", tiny_root, "--trainer.default_root_dir", t,
                                 "--trainer.logger.init_args.save_dir", t, "--trainer.fast_dev_run=true",
                                 "--trainer.enable_progress_bar=false")
        assert rc in (0, 1, 2), (rc, err[-3000:])
        assert "Traceback" not in err, err[-3000:]
        if rc:
            last = [ln for ln in err.splitlines() if ln.strip()][-1]
            assert "error" in last.lower(), err[-3000:]
            assert any(n in last for n in names), (text, last)

    check()
