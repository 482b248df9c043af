"""sdod's vgg-16/300 and resnet-50/512 are GluonCV's networks: given the fixture's formula
weights through the importer's mapping, they reproduce GluonCV 0.10.5's raw outputs."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from sdod.errors import UserError
from sdod.model.gluoncv import classes_in, load_gluoncv, parse_network
from sdod.model.ssd import SSD, SSDConfig
from tests.gluoncv_formula import NETS, formula_params

CASES = [
    ("ssd_300_vgg16_atrous_voc", "vgg-16", 300, ""),
    ("ssd_512_resnet50_v1_voc", "resnet-50", 512, "gluoncv"),
]
TOLERANCE = 1e-3  # absolute, float32 (the bound; measured: vgg 8.6e-4, resnet 3e-6)


def _model(network: str, base: str, size: int, variant: str) -> tuple[SSD, dict]:
    torch.manual_seed(0)
    params = formula_params(network)
    assert classes_in(params, parse_network(network), network) == 4
    model = SSD(SSDConfig(base, 4, size, variant))
    load_gluoncv(model, params, network)
    return model, dict(np.load(NETS / f"{network}.npz"))


@pytest.mark.parametrize(("network", "base", "size", "variant"), CASES)
def test_inference_outputs_equal_gluoncv(network: str, base: str, size: int, variant: str) -> None:
    model, ref = _model(network, base, size, variant)
    with torch.no_grad():
        cls, box = model.eval()(torch.from_numpy(ref["input"]))
    assert cls.shape == ref["eval_cls_preds"].shape and box.shape == ref["eval_box_preds"].shape
    np.testing.assert_allclose(cls.numpy(), ref["eval_cls_preds"], rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(box.numpy(), ref["eval_box_preds"], rtol=0, atol=TOLERANCE)
    np.testing.assert_array_equal(model.anchors.numpy(), ref["anchors"][0])
    maps = model.backbone(torch.from_numpy(ref["input"]))
    assert [list(m.shape) for m in maps] == ref["feature_shapes"].tolist()


def _train_outputs(model: SSD, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    # BatchNorm on batch statistics: two copies of the one image have the same mean and
    # (biased) variance as the image alone, and torch refuses a 1x1 map of a batch of one
    with torch.no_grad():
        cls, box = model.train()(torch.cat([x, x]).to(next(model.parameters()).dtype))
    return cls[:1].float().numpy(), box[:1].float().numpy()


def test_vgg_training_outputs_equal_gluoncv() -> None:
    model, ref = _model(*CASES[0])
    cls, box = _train_outputs(model, torch.from_numpy(ref["input"]))
    np.testing.assert_allclose(cls, ref["train_cls_preds"], rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(box, ref["train_box_preds"], rtol=0, atol=TOLERANCE)


def test_resnet_training_outputs_equal_gluoncv_to_float32_rounding() -> None:
    """On batch statistics the formula-weights ResNet amplifies rounding (block outputs drift
    from float64 by 1e-5 in stage 1, 1e-3 in stage 2, 6e-2 in stage 3): sdod's own float32
    and float64 results differ by up to ~0.03 at the 99th percentile, so no float32
    implementation can meet 1e-3 here. The test holds sdod to GluonCV as tightly as float32
    allows: no farther from GluonCV's outputs than from its own float64 result, and
    correlated with them. (Inference mode, with fixed statistics, meets 1e-3: above.)"""
    model, ref = _model(*CASES[1])
    x = torch.from_numpy(ref["input"])
    cls32, box32 = _train_outputs(model, x)
    exact_cls, _ = _train_outputs(copy.deepcopy(model).double(), x)
    rounding = np.percentile(np.abs(cls32 - exact_cls), 99)
    for ours, theirs in ((cls32, ref["train_cls_preds"]), (box32, ref["train_box_preds"])):
        error = np.abs(ours - theirs)
        assert np.percentile(error, 99) <= 2 * rounding, (np.percentile(error, 99), rounding)
        assert np.median(error) < 0.01
        assert np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] > 0.98


def test_torchvision_resnet_is_not_gluoncv_layout() -> None:
    """The default resnet-50 (torchvision's bottlenecks, the ImageNet weights' layout) has no
    1x1 biases: GluonCV's weights are refused there, not loaded half-way."""
    params = formula_params("ssd_512_resnet50_v1_voc")
    with pytest.raises(UserError, match="has a bias that sdod's layer has not"):
        load_gluoncv(SSD(SSDConfig("resnet-50", 4, 512)), params, "r.params")


def test_parameter_counts_match_gluoncv() -> None:
    for network, base, size, variant in CASES:
        with torch.device("meta"):
            model = SSD(SSDConfig(base, 4, size, variant))
        listing = json.loads((NETS / f"{network}.json").read_text())["params"]
        gluon = sum(int(np.prod(p["shape"])) for p in listing if p["kind"] is not None)
        ours = sum(p.numel() for p in model.parameters()) + sum(
            b.numel() for n, b in model.named_buffers() if "running" in n
        )
        assert ours == gluon, network


def test_mismatches_name_the_layer() -> None:
    params = formula_params("ssd_300_vgg16_atrous_voc")
    first = "ssd0_ssd0_convpredictor0_conv0_weight"
    odd = {**params, first: params[first][:18]}
    with pytest.raises(UserError, match="the first class predictor has 18 outputs") as info:
        classes_in(odd, parse_network("ssd_300_vgg16_atrous_voc"), "v.params")
    assert "v.params" in str(info.value)
    with pytest.raises(
        UserError,
        match=r"convpredictor0_conv0 weight has shape \(20, 512, 3, 3\), sdod.s layer expects \(16,",
    ):
        load_gluoncv(SSD(SSDConfig("vgg-16", 3, 300)), params, "v.params")
    dropped = {k: v for k, v in params.items() if "extra3" not in k}
    with pytest.raises(
        UserError, match=r"21 base-network layer\(s\) of kind conv, sdod.s network has 23"
    ):
        load_gluoncv(SSD(SSDConfig("vgg-16", 4, 300)), dropped, "v.params")
    with pytest.raises(UserError, match="not a weight, bias, BatchNorm"):
        load_gluoncv(
            SSD(SSDConfig("vgg-16", 4, 300)), {**params, "fc_out": params[next(iter(params))]}, "v"
        )
    with pytest.raises(UserError, match="ssd_300_resnet50_v1"):
        parse_network("ssd_300_resnet50_v1_voc")
