import json

import pandas as pd
from click.testing import CliRunner

from conftest import make_corpus
from ncaer.cli import main
from ncaer.generated.demo import make_demo_corpus


def test_help_lists_every_command():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("build", "demo"):
        assert command in result.output


def test_build_help_documents_options():
    result = CliRunner().invoke(main, ["build", "--help"])
    assert result.exit_code == 0
    for option in ("--segments", "--pick", "--detector", "--no-face", "--mask", "--group-by", "--workers",
                   "--dry-run", "--limit", "--strict"):
        assert option in result.output


def test_wrong_layout_says_what_was_expected(tmp_path):
    (tmp_path / "clips").mkdir()
    result = CliRunner().invoke(main, ["build", "--videos", str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "expected either the CAER folder layout" in result.output


def test_dry_run_plans_without_writing(tmp_path, photos):
    make_corpus(tmp_path / "c", {"train": {"Happy": 2}, "val": {"Happy": 1}}, photos)
    out = tmp_path / "o"
    result = CliRunner().invoke(main, ["build", "--videos", str(tmp_path / "c"), "--out", str(out), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "3 clips to build" in result.output and not out.exists()


def test_limit_spreads_over_splits_and_classes(tmp_path, photos):
    make_corpus(tmp_path / "c", {"train": {"Happy": 3, "Sad": 3}, "test": {"Happy": 2, "Sad": 2}}, photos, n_frames=8)
    out = tmp_path / "o"
    result = CliRunner().invoke(main, ["build", "--videos", str(tmp_path / "c"), "--out", str(out), "--limit", "4",
                                       "--workers", "0"])
    assert result.exit_code == 0, result.output
    m = pd.read_parquet(out / "manifest.parquet")
    assert m.groupby(["split", "label"])["video_id"].nunique().to_dict() == {
        ("test", "Happy"): 1, ("test", "Sad"): 1, ("train", "Happy"): 1, ("train", "Sad"): 1}


def test_demo_corpus_builds(tmp_path):
    videos = make_demo_corpus(tmp_path / "CAER", n_frames=12,
                              clips_per_class={"train": 1, "validation": 1, "test": 1})
    out = tmp_path / "NCAER-S"
    result = CliRunner().invoke(main, ["build", "--videos", str(videos), "--out", str(out), "--workers", "2"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "build.json").read_text())
    assert summary["counts"]["per_split"] == {"train": 35, "val": 35, "test": 35}
    assert summary["counts"]["samples_without_face"] == 0
    failures = pd.read_csv(out / "failures.csv")
    assert set(failures["source_path"]) == {"train/Happy/.DS_Store", "test/Surprise/damaged.avi"}
    assert "splits disjoint" in result.output


def test_demo_runs_the_whole_chain_and_says_where_each_output_is(tmp_path):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--frames", "8", "--epochs", "1", "--workers", "2"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    commands = [line for line in lines if line.startswith("$ ncaer ")]
    assert [c.split()[2] for c in commands] == ["build", "check-leakage", "train", "evaluate"]
    assert f"--data {out / 'NCAER-S'} --model glamor --epochs 1 --out {out / 'runs' / 'glamor'}" in commands[2]
    report = json.loads((out / "leakage-report" / "report.json").read_text())
    assert not report["leaked"] and report["images"] == 245
    results = json.loads((out / "runs" / "glamor" / "eval-test" / "results.json").read_text())
    assert results["model"] == "glamor" and results["samples"] == 70
    table = "".join(c for c in result.output if not c.isspace() and c != "│")  # long paths are folded in cells
    for path in ("NCAER-S/manifest.parquet", "leakage-report/report.json", "runs/glamor/eval-test/results.json",
                 "runs/glamor/eval-test/confusion_matrix.png"):
        assert (out / path).is_file() and str(out / path) in table, path
    result = CliRunner().invoke(main, args)  # a rerun starts the steps again over the same corpus
    assert result.exit_code == 0, result.output


def test_demo_refuses_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "CAER").mkdir()  # a user's real corpus, say
    result = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "mine")])
    assert result.exit_code == 1 and "no .ncaer-demo mark" in result.output
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["CAER"]
