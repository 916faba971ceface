"""The language-model paths run with the default install only: pyproject's main dependencies
plus requirements/no-deps.txt (nncf), in a process that refuses every other module (the
builder and GGUF children inherit the refusals). Uploads as users have them: a Hugging Face
folder zip through AWQ (NNCF), a GGUF file through round-to-nearest, both from the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from llm_builders import write_tiny_gguf, zip_folder
from runtime_env import blocking_env, runtime_closure

FAST = {
    "window_tokens": 64,
    "evaluation_windows": 2,
    "decode_tokens": 4,
    "decode_rounds": 2,
    "answer_tokens": 4,
    "prompts": ["Hi"],
    "measure_memory": False,
}

SCRIPT = """
import json, sys
from pathlib import Path
from compress_engine.cli import main

args = json.loads(sys.argv[1])
for i, (model, quantize) in enumerate(args["runs"]):
    recipe = Path(args["out"]) / f"recipe{i}.json"
    recipe.write_text(json.dumps({"steps": [{"quantize": quantize}],
                                  "evaluate": {"llm": args["fast"]}}))
    out = Path(args["out"]) / f"run{i}"
    assert main(["compress", model, "--recipe", str(recipe), "--out", str(out), "-q"]) == 0
    assert (out / "model.genai.zip").is_file()
print("every language-model path ran")
"""


def test_llm_uploads_compress_with_the_default_install_only(tiny_hf_dir: Path, tmp_path: Path):
    hf_zip = zip_folder(tiny_hf_dir, tmp_path / "tiny.zip")
    gguf = write_tiny_gguf(tiny_hf_dir, tmp_path / "tiny.gguf")
    awq = {"mode": "weight-only", "method": "awq", "block_size": 32, "calibration_windows": 2}
    rtn = {"mode": "weight-only", "method": "rtn", "bits": 8}
    args = {
        "out": str(tmp_path),
        "fast": FAST,
        "runs": [(str(hf_zip), awq), (str(gguf), rtn)],
    }
    env = blocking_env(tmp_path / "site", allow=runtime_closure())

    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )

    assert proc.returncode == 0 and "every language-model path ran" in proc.stdout, proc.stderr[
        -4000:
    ]
