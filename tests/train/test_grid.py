"""Grids from the command line: expansion counts, merged settings, one-line errors, dry runs."""

import math

import pytest

from mmjax.cli import main
from mmjax.configs.common import ConfigError, override
from mmjax.configs.grid import parse_grid
from mmjax.configs.numeric import base_config, selection_sweep
from mmjax.train.sweep import dry_run, group_jobs, plan_chunks, with_grid


def grid(experiment, *specs):
    return with_grid(experiment, parse_grid(list(specs)), override)


@pytest.fixture(scope="module")
def selection():
    return selection_sweep("selection_independent", "smoke", {}, dependent=False)


def test_theta_all_merges_the_ten_settings_into_1023(selection):
    exp = grid(selection, "theta=all")
    assert len(exp.settings) == 2**10 - 1
    thetas = {s.config.theta_set for s in exp.settings}
    assert len(thetas) == 1023 and all(s.config.rho_set == () for s in exp.settings)
    assert exp.settings[0].grid == (("theta", "1"),) and exp.settings[0].label == "theta=1"


def test_sizes_proper_subsets_ranges_and_product(selection):
    assert len(grid(selection, "theta=size:3").settings) == math.comb(10, 3)
    # every proper subset of each 3-set (∅ included): 2^3 - 1 = 7 per θ
    both = grid(selection, "theta=size:3", "rho=all-proper")
    assert len(both.settings) == 120 * 7
    assert all(set(s.config.rho_set) < set(s.config.theta_set) for s in both.settings)
    lrs = grid(selection, "theta=1+2", "lr=1e-3:1e-1:log3", "tau=0.5,1")
    assert sorted({s.config.lr for s in lrs.settings}) == pytest.approx([1e-3, 1e-2, 1e-1])
    assert len(lrs.settings) == 3 * 2
    assert {s.config.theta_set for s in lrs.settings} == {(0, 1)}
    lin = grid(selection, "theta=1", "p_change=0:1:5")
    assert [s.config.p_change for s in lin.settings] == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])


def test_grid_without_the_settings_field_keeps_each_setting(selection):
    exp = grid(selection, "lr=1e-3,1e-2")
    assert len(exp.settings) == 20
    assert exp.settings[0].label == "θ=[10] lr=1e-3"


def test_shape_fields_form_compile_groups(selection):
    exp = grid(selection, "theta=1,2", "batch=16,32")
    groups = group_jobs(exp, seeds=[0, 1, 2])
    assert sorted(len(g.jobs) for g in groups) == [6, 6]
    chunks = plan_chunks(groups, chunk_size=4, n_devices=1)
    # 6 jobs per group, chunks of at most 4 spread evenly: 2 chunks of 3 each
    assert [len(c.jobs) for c in chunks] == [3, 3, 3, 3]


@pytest.mark.parametrize("spec, message", [
    ("theta=size:0", "theta='size:0' is invalid: size:K needs 1 <= K <= 10 for n_s=10"),
    ("rho=all", "rho='all' is invalid: rho takes all-proper"),
    ("theta=all-proper", "theta='all-proper' is invalid: theta takes all or size:K"),
    ("lr=1e-3:1e-1", "lr='1e-3:1e-1' is invalid: a range is lo:hi:K or lo:hi:logK"),
    ("lr=0:1:log3", "lr='0:1:log3' is invalid: a log range needs lo > 0"),
    ("steps=100:201:3",
     "steps='100:201:3' is invalid: field steps is an integer; the range gives 100, 150.5, 201"),
    ("tau=1,-2", "--grid tau=1,-2: value '-2': tau=-2.0 is invalid: must be > 0"),
    ("theta=11", "--grid theta=11: value '11': theta=(11,) is invalid: indices are 1-based"),
    ("wings=2", "--grid wings: unknown field; allowed fields: alpha, batch"),
    ("lr", "--grid 'lr' is invalid: expected field=v1,v2,..."),
])
def test_bad_grids_fail_in_one_line(selection, spec, message):
    with pytest.raises(ConfigError) as err:
        grid(selection, spec)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_cli_bad_grid_exits_2_before_compiling(capsys):
    assert main(["sweep", "selection_independent", "--grid", "rho=all", "--dry-run"]) == 2
    assert capsys.readouterr().err.strip().startswith("mmjax: error: rho='all' is invalid")


def test_cli_dry_run_reports_1023_runs(capsys):
    assert main(["sweep", "selection_independent", "--grid", "theta=all", "--seeds", "1", "--dry-run",
                 "--no-estimate"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("selection_independent: 1023 runs = 1023 settings x 1 seeds; 1 compile groups, "
                          "128 chunks")


def test_seed_grid_replaces_the_seed_count(capsys):
    assert main(["sweep", "selection_independent", "--grid", "theta=size:2", "--grid", "seed=3,7,11",
                 "--dry-run", "--no-estimate"]) == 0
    assert "135 runs = 45 settings x 3 seeds" in capsys.readouterr().out
    assert main(["sweep", "selection_independent", "--grid", "seed=1,1", "--dry-run"]) == 2
    assert "seed='1,1' is invalid: seeds are distinct integers >= 0" in capsys.readouterr().err


@pytest.mark.slow  # ~30-90 s: in the slow set to keep the default suite under 10 min
def test_dry_run_estimate_times_one_chunk():
    cfg = base_config("smoke", widths="8,8", batch=16, steps=40, log_every=20, eval_fit=64, eval_test=64,
                      probe_epochs=2, cond_samples=100, cond_rank=1)
    from mmjax.train.sweep import Experiment, Setting

    exp = grid(Experiment("t", (Setting("base", cfg),)), "theta=size:1", "steps=40,80")
    info = dry_run(exp, seeds=[0], chunk_size=5)
    assert info["runs"] == 20 and len(info["groups"]) == 2 and info["chunks"] == 4
    assert info["timed_chunk_seconds"] > 0 and info["timed_compile_seconds"] > 0
    # group 2 has twice the steps: its two chunks count double
    expected = 2 * info["timed_compile_seconds"] + (2 + 4) * info["timed_chunk_seconds"]
    assert info["estimated_seconds"] == pytest.approx(expected)
