"""Every subcommand reports a user-causable error (an HnlRayError) in one line, without a traceback."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from hnl_ray import cli, stages

runner = CliRunner()


@pytest.fixture(autouse=True)
def _restore_logging():
    """The CLI installs a log handler on the runner's captured stderr: later tests must not log into it."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


def _bad_invocations(tmp_path) -> dict[str, list[str]]:
    empty = ["--run-dir", str(tmp_path / "empty")]
    calls = {s.name: [s.name, *empty] for s in stages.STAGES}  # nothing upstream: "run `hnl-ray X` first"
    calls["prepare"] = ["prepare", *empty, "--set", "data={format: movielens, path: /nonexistent/ml}"]
    big = tmp_path / "big"
    big.mkdir()
    (big / "blob.bin").write_bytes(b"x" * 4096)
    calls.update({
        "run": ["run", *empty, "--from", "trian"],
        "demo": ["demo", "--config", str(tmp_path / "missing.yaml")],
        "tune": ["tune", *empty],
        "show-config": ["show-config", "--set", "train.optim.lrr=1"],
        "check-upload": ["check-upload", str(big), "--runtime-env", str(tmp_path / "none.yaml")],
        "serve-llm": ["serve-llm", "--model", "/nonexistent/model-folder"],
    })
    return calls


def test_every_subcommand_prints_one_line_for_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setattr("hnl_ray.upload.ray_limit", lambda: 1024)
    calls = _bad_invocations(tmp_path)
    commands = {c.name or c.callback.__name__ for c in cli.app.registered_commands}
    assert commands == set(calls), "a subcommand without a bad-input case here"
    for name, args in calls.items():
        res = runner.invoke(cli.app, args)
        text = res.output
        assert res.exit_code in (1, 2), f"{name}: exit {res.exit_code}\n{text}"
        assert "Traceback" not in text and not isinstance(res.exception, Exception) or \
            isinstance(res.exception, SystemExit), f"{name}:\n{text}"
        lines = [ln for ln in text.splitlines() if ln.strip()]
        assert lines and ("failed:" in text or "config error:" in text), f"{name}:\n{text}"


@pytest.mark.parametrize("stage", ["negatives", "finetune", "train"])
def test_a_stage_run_out_of_order_names_the_stage_to_run_first(tmp_path, stage):
    res = runner.invoke(cli.app, [stage, "--run-dir", str(tmp_path)])
    assert res.exit_code == 1
    assert "first" in res.output and "hnl-ray" in res.output and "Traceback" not in res.output
