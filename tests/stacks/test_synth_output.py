"""`synth --out` never deletes what it did not write: new, empty, or its own previous output only."""

from __future__ import annotations

from pathlib import Path

import pytest

from stacks.cli import main as cli
from stacks.preview_cli import SYNTH_MARKER

ROOT = Path(__file__).resolve().parents[2]
DEV = str(ROOT / "Pulumi.dev.yaml")


def _refused(capsys, out: Path, line: str) -> None:
    assert cli(["synth", "--stack", DEV, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"vllm-fleet: error: --out: {line}\n"
    assert "Traceback" not in captured.err + captured.out


def test_a_folder_with_user_files_is_refused_and_kept(tmp_path, capsys):
    out = tmp_path / "mine"
    (out / "notes").mkdir(parents=True)
    (out / "notes" / "todo.txt").write_text("keep me")
    _refused(capsys, out, f"{out} holds files synth did not write (e.g. notes/todo.txt); give a new or empty folder")
    assert (out / "notes" / "todo.txt").read_text() == "keep me"


def test_the_current_directory_of_a_checkout_is_refused(tmp_path, capsys, monkeypatch):
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (tmp_path / "README.md").write_text("mine")
    monkeypatch.chdir(tmp_path)
    _refused(capsys, Path("."), f"{tmp_path} holds files synth did not write (e.g. .git/HEAD); give a new or empty folder")
    assert (tmp_path / ".git" / "HEAD").is_file() and (tmp_path / "README.md").read_text() == "mine"


def test_a_file_and_a_missing_parent_are_refused(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    _refused(capsys, target, f"{target} is a file; give a new or empty folder")
    _refused(capsys, tmp_path / "no" / "out", f"{tmp_path / 'no'} does not exist; give a folder whose parent exists")
    assert target.read_text() == "x" and not (tmp_path / "no").exists()


def test_new_empty_and_own_previous_output_are_written(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()  # empty: accepted
    assert cli(["synth", "--stack", DEV, "--out", str(out)]) == 0
    written = (out / SYNTH_MARKER).read_text().split()
    assert "resources.json" in written and any(w.startswith("ecs/") for w in written)
    assert {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} == set(written) | {SYNTH_MARKER}
    # Its own output is replaced, and nothing is left beside it.
    assert cli(["synth", "--stack", DEV, "--out", str(out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    # A file the user added to it since makes it theirs: refused, kept.
    (out / "ecs" / "edited-by-hand.json").write_text("{}")
    capsys.readouterr()
    _refused(capsys, out, f"{out} holds files synth did not write (e.g. ecs/edited-by-hand.json); give a new or empty folder")
    assert (out / "ecs" / "edited-by-hand.json").is_file()
