"""What the CLI prints, and where: the version, a torch-free --help, results on stdout with logs
and progress on stderr, and user text printed literally (never as Rich markup)."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch

from stylequery import __version__
from stylequery.errors import StyleQueryError
from stylequery.index import EmbeddingIndex
from stylequery.progress import progress_bar
from stylequery.runtime import resolve_device, setup_logging

if TYPE_CHECKING:
    from conftest import Cli


def test_version(cli: Cli) -> None:
    assert cli.ok("--version").stdout == f"stylequery {__version__}\n"


def test_shell_completion_completes_commands(cli: Cli) -> None:
    from stylequery.cli import app

    env = {
        "_STYLEQUERY_COMPLETE": "complete_bash",
        "COMP_WORDS": "stylequery ev",
        "COMP_CWORD": "1",
    }
    result = cli.runner.invoke(app, [], prog_name="stylequery", env=env)
    assert result.exit_code == 0 and result.stdout == "evaluate\n"
    script = cli.runner.invoke(app, ["--show-completion", "bash"], prog_name="stylequery")
    assert "complete -o default -F _stylequery_completion stylequery" in script.stdout


def test_help_does_not_import_torch() -> None:
    """In a fresh interpreter: torch is imported by commands, never by --help."""
    code = (
        "import sys\n"
        "from stylequery.cli import app\n"
        "for args in ([], ['train'], ['query'], ['evaluate'], ['embed'], ['config']):\n"
        "    try:\n"
        "        app([*args, '--help'])\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code == 0, exc.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "Usage" in done.stdout


def test_json_stdout_is_clean_while_logs_go_to_stderr(cli: Cli, tiny_catalogue_copy: Path) -> None:
    result = cli.ok("prepare", f"data.root={tiny_catalogue_copy}", "--json")
    assert json.loads(result.stdout)["images"]["train"] > 0
    assert "prepared" in result.stderr  # the library's log line


def test_logs_go_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging()
    logging.getLogger("stylequery.test").info("a [bold]log[/bold] line [/x]")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "a [bold]log[/bold] line [/x]" in captured.err


def test_progress_bar_draws_on_stderr(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    with progress_bar("[red]work", total=3) as bar:
        bar.advance(3, loss="[/x]")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "[red]work" in captured.err and "loss=[/x]" in captured.err


def test_user_text_is_printed_literally(
    cli: Cli,
    tiny_checkpoint: Path,
    tiny_index: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copy(EmbeddingIndex.load(tiny_index).paths[0], tmp_path / "[sale].jpeg")
    args = ["--text", "[bold]red[/bold] [/x]", "--checkpoint", tiny_checkpoint]
    result = cli.ok("query", "[sale].jpeg", *args, "--index", tiny_index)
    # the title shows what the model saw; a warning quotes each altered word as typed
    assert "[sale].jpeg  +  boldredbold x" in result.stdout
    assert "warning: '[bold]red[/bold]' was read as 'boldredbold'" in result.stderr
    assert "warning: '[/x]' was read as 'x'" in result.stderr
    message = cli.fails("query", "[/x].jpeg", *args, needle="[/x].jpeg")
    assert message == "error: [/x].jpeg: no such image file or folder"
    out = cli.ok("synth", "[sale]", "--products", "4", "--image-size", "16").stdout
    assert "synthetic catalogue: [sale]" in out


def test_device_number_means_that_cuda_device() -> None:
    if torch.cuda.is_available():
        assert resolve_device("0") == torch.device("cuda:0")
    else:
        with pytest.raises(StyleQueryError, match="'cuda:0'"):
            resolve_device("0")
    assert resolve_device(" cpu ") == torch.device("cpu")
