"""The README's Python snippet works when pasted, against a store made by a training run (MLFLOW_TRACKING_URI
exported as the README says), and leaves no stray mlflow.db behind."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys

from tests.conftest import ROOT
from tests.test_mlflow_server import server_env


def readme_block(heading: str, language: str) -> str:
    """The first ```language block after `## heading` in the README."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index(f"## {heading}") :]
    return re.search(rf"```{language}\n(.*?)```", section, re.S).group(1)


def test_the_python_snippet_runs_as_pasted(trained_run, tmp_path):
    run_id, uri, _ = trained_run
    snippet = readme_block("Use a trained model from Python", "python").replace("<run_id>", run_id)
    assert 'export MLFLOW_TRACKING_URI="sqlite:///$PWD/mlruns/mlflow.db"' in readme_block("Browse runs", "bash")
    proc = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env=server_env(MLFLOW_TRACKING_URI=uri))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    text_out, tokens_out = (ast.literal_eval(line) for line in proc.stdout.strip().splitlines()[-2:])
    assert text_out[0]["text"] == "EU rejects German call to boycott British lamb ."
    assert tokens_out[0]["sentences"][0]["tokens"][:2] == ["Peter", "Blackburn"]
    for record in (text_out[0], tokens_out[0]):
        for ent in record["entities"]:
            assert record["text"][ent["start"] : ent["end"]] == ent["text"]
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
    json.dumps(text_out)  # plain data, as `mlflow models serve` returns it
