"""`sdod/stages.py` stays a thin front door, and the data stages never load torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

NO_TORCH = """
import sys
from pathlib import Path
from sdod import stages, tools
from sdod.demo.dataset import make_sample_data
root = Path(sys.argv[1])
make_sample_data(root / "data", train=4, validation=2, seed=3)
spec = stages.parse_spec({
    "TrainingJobName": "no-torch",
    "HyperParameters": {"num_classes": "3", "num_training_samples": "4"},
    "InputDataConfig": [
        {"ChannelName": c, "DataSource": {"S3DataSource": {"S3Uri": str(root / "data" / c)}}}
        for c in ("train", "validation", "train_annotation", "validation_annotation")
    ],
    "OutputDataConfig": {"S3OutputPath": str(root / "out")},
})
staged = stages.ingest(job_spec=spec.raw, work_uri=str(root / "work"), run_id="r1")
checked = stages.check(job_spec=staged.spec)
packed = stages.pack_job(job_spec=staged.spec, work_uri=str(root / "work"),
                         quarantine_uri=checked.quarantine_uri)
tools.pack(images=str(root / "data" / "train"), annotations=str(root / "data" / "train_annotation"),
            out=str(root / "p" / "train"))
tools.convert(rec=packed.rec_files["train"], to="manifest", out=str(root / "conv"))
tools.validate(num_classes=3, rec=packed.rec_files["validation"])
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision"))
print("TORCH:" + ",".join(loaded))
"""


def test_ingest_check_pack_convert_and_validate_run_without_importing_torch(
    tmp_path: Path,
) -> None:
    run = subprocess.run(
        [sys.executable, "-c", NO_TORCH, str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    line = next(x for x in run.stdout.splitlines() if x.startswith("TORCH:"))
    assert line == "TORCH:", f"torch was imported by a data stage: {line[:300]}"
    assert (tmp_path / "work" / "no-torch" / "packed" / "train" / "train.rec").is_file()
    assert (tmp_path / "out" / "no-torch" / "check" / "report.json").is_file()


def test_stages_is_a_thin_front_door() -> None:
    source = (REPO / "sdod" / "stages.py").read_text()
    assert len(source.splitlines()) <= 250
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):  # signature, docstring, delegation
            body = node.body[1:] if ast.get_docstring(node) else node.body
            assert len(body) <= 10, f"stages.{node.name} holds logic ({len(body)} statements)"
        else:
            assert not isinstance(node, ast.ClassDef), "result classes live with their stage"
