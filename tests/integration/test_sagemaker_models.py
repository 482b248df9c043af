"""SageMaker Object Detection's own model.tar.gz, through sdod's edges: `import-sagemaker`,
`inspect-model`, `predict`, `serve` (boto3's invoke_endpoint), `export-onnx` with
onnxruntime, and every refusal. Expected detections are MXNet's (the fixture README's
pairing rule: rows scoring at least the floor on either side pair up, same class, score and
box within 1e-3)."""

from __future__ import annotations

import io
import json
import struct
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sdod.cli import main

MX = Path(__file__).resolve().parents[1] / "fixtures" / "mxnet"
SM = MX / "sagemaker_ssd"
RESNET, VGG = SM / "resnet50_300_c2", SM / "vgg16_reduced_300_c3"
PHOTOS = sorted(p.name for p in (MX / "images").glob("*.jpg"))


@pytest.fixture(autouse=True, scope="module")
def _cache(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A cache of this module's own (conversions are cached there)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("SDOD_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    yield
    patch.undo()


def mxnet_rows(folder: Path, photo: str) -> tuple[list[list[float]], float]:
    """MXNet's detections of `photo` and the README's pairing floor for it."""
    entry = json.loads((folder / "expected.json").read_text())["images"][photo]
    top = entry["margins"]["topk_score"]
    return entry["detections"], 0.0105 if top is None else max(0.0105, top + 1e-3)


def assert_pairs(got: list[list[float]], want: list[list[float]], floor: float) -> None:
    """Every row >= floor on either side has a partner: same class, score and box within 1e-3."""
    for side, other in ((got, want), (want, got)):
        for row in side:
            if row[1] < floor:
                continue
            assert any(
                o[0] == row[0] and all(abs(o[k] - row[k]) <= 1e-3 for k in range(1, 6))
                for o in other
            ), f"row {row} has no partner"


def _run(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- every photo, end to end from the JPEG bytes ---------------------------------------


@pytest.fixture(scope="module")
def predictors() -> dict[str, Any]:
    from sdod.serve.predictor import Predictor

    return {f.name: Predictor.load(f / "model.tar.gz") for f in (VGG, RESNET)}


@pytest.mark.parametrize("folder", [VGG, RESNET], ids=lambda f: f.name)
@pytest.mark.parametrize("part", range(4))
def test_every_photo_end_to_end_matches_mxnet(
    folder: Path, part: int, predictors: dict[str, Any]
) -> None:
    predictor = predictors[folder.name]
    for photo in PHOTOS[part::4]:
        got = predictor.predict((MX / "images" / photo).read_bytes())["prediction"]
        want, floor = mxnet_rows(folder, photo)
        assert_pairs(got, want, floor)
        assert abs(len(got) - len(want)) <= 3, photo


# --- the CLI -------------------------------------------------------------------------


def test_import_then_inspect_and_predict_on_the_sagemaker_archive_itself(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sdod.tar.gz"
    code, stdout, err = _run(
        "import-sagemaker",
        "--model",
        str(RESNET / "model.tar.gz"),
        "--out",
        str(out),
        "--classes",
        "person,dog",
        "--json",
        capsys=capsys,
    )
    assert code == 0, err
    result = json.loads(stdout)
    assert result["base_network"] == "resnet-50" and result["num_classes"] == 2
    assert result["anchors"] == 2268 and result["classes"] == ["person", "dog"]
    assert result["detection"]["nms_threshold"] == 0.45 and result["detection"]["nms_topk"] == 400

    code, stdout, err = _run("inspect-model", str(out), "--json", capsys=capsys)
    assert code == 0, err
    config = json.loads(stdout)["config"]
    assert config["variant"] == "sagemaker" and config["image_shape"] == 300
    assert config["network"]["mean_rgb"] == [123.0, 117.0, 104.0]
    assert config["network"]["anchors"][0]["steps"] == [-1.0, -1.0]

    code, stdout, err = _run("inspect-model", str(RESNET / "model.tar.gz"), "--json", capsys=capsys)
    assert code == 0, err  # the SageMaker archive as it is
    assert json.loads(stdout)["hyperparameters"]["epochs"] == "30"

    photo = "17_coins_gray.jpg"
    for model in (out, RESNET / "model.tar.gz"):
        code, stdout, err = _run(
            "predict", "--model", str(model), str(MX / "images" / photo), capsys=capsys
        )
        assert code == 0, err
        assert_pairs(json.loads(stdout)["prediction"], *mxnet_rows(RESNET, photo))


# --- refusals, each through `import-sagemaker` (exit 2, one line naming what and where) ---


def _members(folder: Path) -> dict[str, bytes]:
    with tarfile.open(folder / "model.tar.gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def resnet_files() -> dict[str, bytes]:
    return _members(RESNET)


def _params_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """MXNet's NDArray list format (what mx.nd.save writes), for doctored weights."""
    out = [struct.pack("<QQQ", 0x112, 0, len(arrays))]
    for value in arrays.values():
        out.append(struct.pack("<Iii", 0xF993FACA, 0, value.ndim))
        out.append(struct.pack(f"<{value.ndim}q", *value.shape))
        out.append(struct.pack("<iii", 1, 0, 0) + value.astype("<f4").tobytes())
    out.append(struct.pack("<Q", len(arrays)))
    for name in arrays:
        out.append(struct.pack("<Q", len(name.encode())) + name.encode())
    return b"".join(out)


def _archive(tmp_path: Path, files: dict[str, bytes]) -> Path:
    folder = tmp_path / "model"
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def _refused(tmp_path: Path, files: dict[str, bytes], capsys: Any, *needles: str) -> str:
    model = _archive(tmp_path, files)
    code, _, err = _run(
        "import-sagemaker",
        "--model",
        str(model),
        "--out",
        str(tmp_path / "out.tar.gz"),
        capsys=capsys,
    )
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    assert not (tmp_path / "out.tar.gz").exists()
    return err


def _params(files: dict[str, bytes]) -> dict[str, np.ndarray]:
    from sdod.model.mxnet_params import read_params_bytes

    return read_params_bytes(files["model_algo_1-0029.params"])


def test_an_unknown_op_is_refused(
    tmp_path: Path, resnet_files: dict[str, bytes], capsys: Any
) -> None:
    symbol = json.loads(resnet_files["model_algo_1-symbol.json"])
    next(n for n in symbol["nodes"] if n["name"] == "stage3_unit2_relu2")["op"] = "Custom"
    files = {**resnet_files, "model_algo_1-symbol.json": json.dumps(symbol).encode()}
    _refused(tmp_path, files, capsys, "'stage3_unit2_relu2'", "op Custom")


def test_a_missing_param_is_refused(
    tmp_path: Path, resnet_files: dict[str, bytes], capsys: Any
) -> None:
    arrays = _params(resnet_files)
    del arrays["arg:stage4_unit1_conv2_weight"]
    files = {**resnet_files, "model_algo_1-0029.params": _params_bytes(arrays)}
    _refused(tmp_path, files, capsys, "'arg:stage4_unit1_conv2_weight'", "missing")


def test_a_param_shape_that_disagrees_with_the_graph_is_refused(
    tmp_path: Path, resnet_files: dict[str, bytes], capsys: Any
) -> None:
    arrays = _params(resnet_files)
    arrays["arg:_plus12_cls_pred_conv_weight"] = np.zeros((16, 1024, 3, 3), np.float32)
    files = {**resnet_files, "model_algo_1-0029.params": _params_bytes(arrays)}
    _refused(
        tmp_path,
        files,
        capsys,
        "'arg:_plus12_cls_pred_conv_weight'",
        "(16, 1024, 3, 3)",
        "(12, 1024, 3, 3)",
    )


def test_hyperparams_that_disagree_with_the_graph_are_refused(
    tmp_path: Path, resnet_files: dict[str, bytes], capsys: Any
) -> None:
    hp = json.loads(resnet_files["hyperparams.json"])
    for key, value, needle in (
        ("num_classes", "5", "num_classes '5'"),
        ("base_network", "vgg-16", "base_network 'vgg-16'"),
    ):
        files = {**resnet_files, "hyperparams.json": json.dumps({**hp, key: value}).encode()}
        _refused(tmp_path / key, files, capsys, needle, "graph")
    vgg = _members(VGG)
    hp = json.loads(vgg["hyperparams.json"])
    files = {**vgg, "hyperparams.json": json.dumps({**hp, "image_shape": "512"}).encode()}
    _refused(tmp_path / "shape", files, capsys, "image_shape 512", "relu4_3_anchors")


def test_a_params_file_of_another_symbol_is_refused(
    tmp_path: Path, resnet_files: dict[str, bytes], capsys: Any
) -> None:
    vgg = _members(VGG)
    files = {**vgg, "model_algo_1-0000.params": resnet_files["model_algo_1-0029.params"]}
    files = {k: v for k, v in files.items() if k != "model_algo_1-0029.params"}
    files["model_algo_1-0000.params"] = resnet_files["model_algo_1-0029.params"]
    _refused(tmp_path, files, capsys, "saved for another symbol")


def test_archives_that_are_not_one_sagemaker_model_are_refused(tmp_path: Path, capsys: Any) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in ("model_algo_1-symbol.json", "../evil.params"):
            info = tarfile.TarInfo(name)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"{}"))
    (tmp_path / "bad.tar.gz").write_bytes(buf.getvalue())
    code, _, err = _run(
        "import-sagemaker",
        "--model",
        str(tmp_path / "bad.tar.gz"),
        "--out",
        str(tmp_path / "o.tar.gz"),
        capsys=capsys,
    )
    assert code == 2 and "'../evil.params'" in err and "outside the archive" in err


@pytest.mark.slow
def test_export_onnx_then_onnxruntime_matches_mxnet(tmp_path: Path, capsys: Any) -> None:
    from sdod.serve.predictor import Predictor

    out = tmp_path / "onnx.tar.gz"
    code, _, err = _run(
        "export-onnx", "--model", str(RESNET / "model.tar.gz"), "--out", str(out), capsys=capsys
    )
    assert code == 0, err
    predictor = Predictor.load(out, backend="onnxruntime")
    for photo in ("06_hubble.jpg", "17_coins_gray.jpg"):
        got = predictor.predict((MX / "images" / photo).read_bytes())["prediction"]
        assert_pairs(got, *mxnet_rows(RESNET, photo))


# --- evaluate: SageMaker's preprocessing and decoding, through `sdod evaluate` ------------


def mxnet_dataset(root: Path, folder: Path, photos: list[str], floor: float) -> dict[str, int]:
    """An image+JSON channel pair (`root/images`, `root/annotations`) of fixture photos whose
    boxes are MXNet's own detections scoring at least `floor`; returns MXNet's count of
    detections per class (every row) over these photos."""
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    counts: dict[str, int] = {}
    for photo in photos:
        (root / "images" / photo).write_bytes((MX / "images" / photo).read_bytes())
        rows, _ = mxnet_rows(folder, photo)
        assert not any(abs(r[1] - floor) < 2e-3 for r in rows), "a score too near the floor"
        width, height = Image.open(MX / "images" / photo).size
        boxes = []
        for c, score, x0, y0, x1, y1 in rows:
            counts[str(int(c))] = counts.get(str(int(c)), 0) + 1
            if score >= floor:
                left, top = x0 * width, y0 * height
                size = {"width": (x1 - x0) * width, "height": (y1 - y0) * height}
                boxes.append({"class_id": int(c), "left": left, "top": top, **size})
        annotation = {
            "file": photo,
            "image_size": [{"width": width, "height": height, "depth": 3}],
            "annotations": boxes,
        }
        (root / "annotations" / f"{Path(photo).stem}.json").write_text(json.dumps(annotation))
    return counts


def test_evaluate_preprocesses_and_decodes_as_sagemaker(tmp_path: Path, capsys: Any) -> None:
    """Ground truth = MXNet's confident detections, so MXNet's own pipeline scores mAP 1: it
    holds only if sdod resizes (OpenCV's INTER_LINEAR) and decodes (MultiBoxDetection: one
    class per anchor, no 100-detection cap) exactly as SageMaker's endpoint does."""
    photos = ["00_astronaut.jpg", "02_coffee.jpg", "05_motorcycle_right_small.jpg"]
    data, out = tmp_path / "data", tmp_path / "eval"
    counts = mxnet_dataset(data, RESNET, photos, floor=0.3)
    argv = ["evaluate", "--model", str(RESNET / "model.tar.gz"), "--out", str(out)]
    argv += ["--images", str(data / "images"), "--annotations", str(data / "annotations")]
    code, stdout, err = _run(*argv, "--examples", "0", "--json", capsys=capsys)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert json.loads(stdout)["mAP"] == metrics["mAP"] and metrics["images"] == 3
    assert metrics["mAP"] > 0.999 and set(metrics["per_class"]) == {"0", "1"}
    rows = [line.split(",") for line in (out / "per_class_ap.csv").read_text().splitlines()[1:]]
    for class_id, _, _, _, detections in rows:  # every row MXNet returns, give or take 3
        assert abs(int(detections) - counts[class_id]) <= 3 * len(photos), (class_id, counts)


# --- the unpacked folder, and an export that must not overwrite SageMaker's archive -------


def test_inspect_model_takes_the_unpacked_folder(
    tmp_path: Path, resnet_files: dict[str, bytes], capsys: Any
) -> None:
    folder = _archive(tmp_path, resnet_files)  # what `tar -xzf model.tar.gz` leaves
    code, stdout, err = _run("inspect-model", str(folder), "--json", capsys=capsys)
    assert code == 0, err
    result = json.loads(stdout)
    assert result["config"]["variant"] == "sagemaker" and result["config"]["num_classes"] == 2
    assert result["hyperparameters"]["base_network"] == "resnet-50"


def test_export_onnx_refuses_to_replace_sagemakers_archive(
    tmp_path: Path, resnet_files: dict[str, bytes], capsys: Any
) -> None:
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes((RESNET / "model.tar.gz").read_bytes())
    before = archive.stat()
    for model in (archive, _archive(tmp_path / "unpacked", resnet_files)):
        code, stdout, err = _run("export-onnx", "--model", str(model), capsys=capsys)
        assert code == 2 and stdout == "", err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert "SageMaker's own model archive" in err and "--out" in err, err
    after = archive.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.tar.gz", "unpacked"]
