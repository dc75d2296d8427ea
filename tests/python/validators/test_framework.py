"""The validator framework: targets are read and checked, each metric is compared with its
threshold, a validator that crashes or misses a metric fails, and `mmsb validate` prints one
✓/✗ line per validator, writes JSON with machine info, and exits 0 only when all pass."""

from __future__ import annotations

import json

import pytest

import mmsb
from mmsb import cli
from mmsb.validation import _framework as fw


@pytest.fixture
def fake_validators(tmp_path):
    """Two registered toy validators and a targets file for them; unregistered afterwards."""
    calls = []

    @fw.validator(98, "fake_ok", ("errors", "rate"))
    def ok(ctx):
        calls.append(ctx)
        return {"errors": 0, "rate": ctx.size(100.0, 10.0)}

    @fw.validator(99, "fake_bad", ("errors", "rate"))
    def bad(ctx):
        return {"errors": 3, "rate": 1.0}

    targets = {"validators": {
        name: {"number": n, "description": name, "checks": [
            {"metric": "errors", "op": "==", "threshold": 0, "unit": ""},
            {"metric": "rate", "op": ">=", "threshold": 5, "unit": "/s"}]}
        for n, name in ((98, "fake_ok"), (99, "fake_bad"))}}
    path = tmp_path / "targets.json"
    path.write_text(json.dumps(targets))
    yield path, calls
    fw._REGISTRY.pop("fake_ok")
    fw._REGISTRY.pop("fake_bad")


def test_packaged_targets_cover_all_ten_validators():
    targets = fw.load_targets()
    assert sorted(spec["number"] for spec in targets.values()) == list(range(1, 11))
    assert set(targets) == {"replay", "integrity", "graph", "purity", "throughput", "tick", "memory",
                            "invariants", "stability", "provenance"}
    assert set(fw.registered()) >= set(targets)
    for name, spec in targets.items():  # each check is of a metric its validator measures, and back
        assert {c["metric"] for c in spec["checks"]} == fw._REGISTRY[name][2], name


def test_metrics_are_compared_with_their_targets(fake_validators):
    path, calls = fake_validators
    r = mmsb.validate(path, quick=True, only=["fake_ok", "fake_bad"], progress=False)
    ok, bad = r["results"]
    assert ok["passed"] and not bad["passed"]
    assert [c["passed"] for c in bad["checks"]] == [False, False]
    assert calls[0].quick and calls[0].tmpdir.name.startswith("mmsb-validate-fake_ok")
    assert not calls[0].tmpdir.exists()  # scratch directories are removed
    assert not r and r["summary"] == "1/2 PASS"
    assert "machine" in r and r["machine"]["cores"] >= 1 and "build_info" in r["machine"]
    text = str(r)
    assert "✓ 98 fake_ok" in text and "✗ 99 fake_bad" in text and "errors = 3 (target == 0)" in text


def test_a_crashing_or_silent_validator_fails(fake_validators, tmp_path):
    path, _ = fake_validators

    @fw.validator(97, "fake_crash", ("errors", "rate"))
    def crash(ctx):
        raise RuntimeError("boom")

    @fw.validator(96, "fake_silent", ("errors", "rate"))  # declares rate, never returns it
    def silent(ctx):
        return {"errors": 0}

    data = json.loads(path.read_text())
    data["validators"]["fake_crash"] = dict(data["validators"]["fake_ok"], number=97)
    data["validators"]["fake_silent"] = dict(data["validators"]["fake_ok"], number=96)
    path.write_text(json.dumps(data))
    try:
        r = mmsb.validate(path, only=["fake_crash", "fake_silent"], progress=False)
    finally:
        fw._REGISTRY.pop("fake_crash")
        fw._REGISTRY.pop("fake_silent")
    silent_r, crash_r = r["results"]
    assert not crash_r["passed"] and "RuntimeError: boom" in crash_r["error"]
    assert not silent_r["passed"] and "rate" in silent_r["error"]


def test_bad_targets_and_names_are_refused(tmp_path, fake_validators):
    bad = tmp_path / "bad.json"
    bad.write_text('{"validators": {"fake_ok": {"checks": [{"metric": "x", "op": "~", "threshold": 1}]}}}')
    with pytest.raises(mmsb.InvalidArgumentError, match="op"):
        mmsb.validate(bad, only=["fake_ok"], progress=False)
    bad.write_text("not json")
    with pytest.raises(mmsb.InvalidArgumentError, match="cannot read targets"):
        mmsb.validate(bad, progress=False)
    path, _ = fake_validators
    with pytest.raises(mmsb.InvalidArgumentError, match="unknown validator"):
        mmsb.validate(path, only=["nope"], progress=False)


@pytest.mark.parametrize("only", [[], (), iter([])])
def test_an_empty_only_is_refused_rather_than_running_all(fake_validators, only):
    path, calls = fake_validators
    with pytest.raises(mmsb.InvalidArgumentError, match="only must name at least one validator"):
        mmsb.validate(path, only=only, progress=False)
    assert calls == []
    with pytest.raises(SystemExit) as e:  # `--only` with no name is a usage error
        cli.main(["validate", "--targets", str(path), "--only", "--no-progress"])
    assert e.value.code == 2


def test_targets_nested_too_deeply_are_refused(tmp_path, fake_validators, capsys):
    _, calls = fake_validators
    deep = tmp_path / "deep.json"
    deep.write_text('{"validators": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(mmsb.InvalidArgumentError, match="cannot read targets .* nested too deeply"):
        mmsb.validate(deep, only=["fake_ok"], progress=False)
    assert cli.main(["validate", "--targets", str(deep), "--only", "fake_ok", "--no-progress"]) == 2
    assert "nested too deeply" in capsys.readouterr().err and calls == []


def test_a_check_of_a_metric_the_validator_does_not_measure_is_refused_before_any_run(tmp_path, fake_validators,
                                                                                       capsys):
    _, calls = fake_validators
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"validators": {
        "fake_ok": {"checks": [{"metric": "errors", "op": "==", "threshold": 0}]},
        "fake_bad": {"checks": [{"metric": "errrors", "op": "==", "threshold": 0}]}}}))
    with pytest.raises(mmsb.InvalidArgumentError, match=r"validator 'fake_bad' check \['errrors'\], which it does "
                                                        r"not measure; it measures \['errors', 'rate'\]"):
        mmsb.validate(bad, only=["fake_ok", "fake_bad"], progress=False)
    assert cli.main(["validate", "--targets", str(bad), "--only", "fake_ok", "fake_bad", "--no-progress"]) == 2
    assert "errrors" in capsys.readouterr().err and calls == []  # not even fake_ok ran


@pytest.mark.parametrize("check", [
    {"op": ">=", "threshold": 1},                           # no metric
    {"metric": "", "op": ">=", "threshold": 1},
    {"metric": 3, "op": ">=", "threshold": 1},
    {"metric": "x", "threshold": 1},                        # no op
    {"metric": "x", "op": ">=", "threshold": "1"},
    {"metric": "x", "op": ">=", "threshold": True},         # a bool is not a threshold
    {"metric": "x", "op": ">=", "threshold": float("nan")},  # NaN would pass or fail nothing
    {"metric": "x", "op": ">=", "threshold": float("inf")},
    {"metric": "x", "op": ">=", "threshold": 10**400},      # past the float range
    {"metric": "x", "op": ">=", "threshold": 1, "unit": 5},
    "x >= 1",
])
def test_a_malformed_check_is_refused_before_any_validator_runs(tmp_path, fake_validators, check):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"validators": {"fake_ok": {"checks": [check]}}}))
    with pytest.raises(mmsb.InvalidArgumentError, match="a check of 'fake_ok' needs a metric name"):
        mmsb.validate(bad, only=["fake_ok"], progress=False)


def test_a_check_without_a_unit_is_reported_with_none(tmp_path, fake_validators):
    path, _ = fake_validators
    spec = json.loads(path.read_text())
    for check in spec["validators"]["fake_ok"]["checks"]:
        check.pop("unit", None)
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(spec))
    report = mmsb.validate(plain, only=["fake_ok"], progress=False)
    assert report.passed and all(c["unit"] == "" for c in report["results"][0]["checks"])
    assert report.lines()


def test_cli_prints_lines_writes_json_and_sets_the_exit_code(fake_validators, tmp_path, capsys):
    path, _ = fake_validators
    out = tmp_path / "report.json"
    code = cli.main(["validate", "--quick", "--targets", str(path), "--only", "fake_ok", "--json", str(out),
                     "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "✓ 98 fake_ok" in printed and "1/1 PASS" in printed
    report = json.loads(out.read_text())
    assert report["summary"] == "1/1 PASS" and report["results"][0]["metrics"]["rate"] == 10.0
    assert cli.main(["validate", "--targets", str(path), "--only", "fake_bad", "--no-progress"]) == 1
    assert cli.main(["validate", "--targets", str(path), "--only", "nope", "--no-progress"]) == 2
