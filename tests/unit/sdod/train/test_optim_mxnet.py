"""sdod's optimisers step as MXNet 1.x's: every step of every case in
`tests/fixtures/mxnet/optimizers/steps.json` (written by the real MXNet 1.9.1, see its
`make_fixture.py`), to float32 rounding; the multipliers MXNet gives each parameter of
SageMaker's own symbols; and the same rule on the networks sdod builds."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import torch

from sdod.errors import DataError
from sdod.hyperparameters import parse_hyperparameters
from sdod.model.sagemaker_model import SageMakerSSD, build
from sdod.model.ssd import SSD, SSDConfig
from sdod.train.mxnet_optim import SGD, AdaDelta, Adam, RMSProp, mxnet_multipliers
from sdod.train.optim import Schedule, make_optimizer, param_groups

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures" / "mxnet"
FIXTURE = json.loads((FIXTURES / "optimizers" / "steps.json").read_text())
CASES = FIXTURE["cases"]
CLASSES = {"sgd": SGD, "adam": Adam, "rmsprop": RMSProp, "adadelta": AdaDelta}
# float32 rounding: 1e-6 relative, or one float32 ulp of weights in [0.5, 1) where an update
# cancels most of a weight (torch's CPU sqrt is not always correctly rounded)
RTOL, ATOL = 1e-6, 6e-8


def _params() -> dict[str, torch.nn.Parameter]:
    return {
        name: torch.nn.Parameter(torch.tensor(spec["init"]).reshape(spec["shape"]))
        for name, spec in FIXTURE["params"].items()
    }


def _mxnet_optimizer(case: dict, params: dict[str, torch.nn.Parameter]) -> torch.optim.Optimizer:
    """sdod's optimiser with the rates and decays MXNet resolved for each parameter."""
    options = case["optimizer_params"]
    groups = [
        {
            "params": [param],
            "lr_mult": case["lr_mults"][name],
            "weight_decay": case["wds"][name],
            "rescale_grad": options.get("rescale_grad", 1.0),
            "clip_gradient": options.get("clip_gradient"),
        }
        for name, param in params.items()
    ]
    extra = {"momentum": options["momentum"]} if case["optimizer"] == "sgd" else {}
    return CLASSES[case["optimizer"]](groups, lr=case["lrs"][0], **extra)


def _run(case: dict, optimizer: torch.optim.Optimizer, params: dict) -> list[dict]:
    """Step as the training loop does (each group's lr set before the step); the weights."""
    out = []
    for step, lr in enumerate(case["lrs"]):
        for group in optimizer.param_groups:  # torch's own groups carry MXNet's multiplier
            group["lr"] = lr * group.get("torch_lr_mult", 1.0)
        for name, param in params.items():
            grad = torch.tensor(FIXTURE["params"][name]["grads"][step]).reshape(param.shape)
            param.grad = grad * case["gradient_scale"]
        optimizer.step()
        out.append({name: param.detach().clone() for name, param in params.items()})
    return out


def _expected(case: dict, step: int, name: str) -> torch.Tensor:
    return torch.tensor(case["steps"][step][name]).reshape(FIXTURE["params"][name]["shape"])


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_step_equals_mxnets(name: str) -> None:
    case = CASES[name]
    params = _params()
    got = _run(case, _mxnet_optimizer(case, params), params)
    assert len(got) == len(case["steps"]) >= 5
    for step, weights in enumerate(got):
        for pname, value in weights.items():
            want = _expected(case, step, pname)
            where = f"{name} step {step + 1} {pname}"
            torch.testing.assert_close(
                value, want, rtol=RTOL, atol=ATOL, msg=lambda m, w=where: f"{w}: {m}"
            )
            if case["optimizer"] == "sgd":  # products and sums rounded as MXNet's kernel
                assert torch.equal(value, want), where


TORCH_WOULD_FAIL = {
    # torch keeps the rate out of its momentum buffer: a changed rate reaches old gradients
    "sgd_momentum_lr_changing": lambda g, c: torch.optim.SGD(g, lr=c["lrs"][0], momentum=0.9),
    # alpha 0.99 and eps outside the root
    "rmsprop_sagemaker_defaults": lambda g, c: torch.optim.RMSprop(g, lr=c["lrs"][0]),
    # torch scales the step by the rate (1000x smaller at SageMaker's 0.001)
    "adadelta_sagemaker_defaults": lambda g, c: torch.optim.Adadelta(
        g, lr=c["lrs"][0], eps=1e-5, rho=0.9
    ),
    # eps added after the bias correction
    "adam_tiny_gradients": lambda g, c: torch.optim.Adam(g, lr=c["lrs"][0]),
}


@pytest.mark.parametrize("name", sorted(TORCH_WOULD_FAIL))
def test_torchs_own_optimisers_do_not_reproduce_these_numbers(name: str) -> None:
    """The fixture tells the rules apart: torch's optimisers miss its last step."""
    case = CASES[name]
    params = _params()
    groups = [
        {
            "params": [p],
            "torch_lr_mult": case["lr_mults"][n],
            "weight_decay": case["wds"][n],
        }
        for n, p in params.items()
    ]
    last = _run(case, TORCH_WOULD_FAIL[name](groups, case), params)[-1]
    worst = max(
        ((last[n] - _expected(case, -1, n)).abs() / _expected(case, -1, n).abs()).max().item()
        for n in params
    )
    assert worst > 100 * RTOL


def test_schedule_equals_mxnets_multi_factor_scheduler() -> None:
    """train_net's `MultiFactorScheduler(step=epochs x iterations, factor)`: sdod's
    iteration i is MXNet's update number i + 1 (warm-up off)."""
    sched = FIXTURE["schedule"]
    iters = 3
    hp = parse_hyperparameters(
        {
            "num_classes": 2,
            "num_training_samples": 6,
            "learning_rate": sched["base_lr"],
            "lr_scheduler_factor": sched["factor"],
            "lr_scheduler_step": ",".join(str(s // iters) for s in sched["step"]),
        }
    )
    schedule = Schedule(hp, iters_per_epoch=iters, warmup_iters=0)
    for update, lr in sched["lr_at_num_update"].items():
        assert schedule(int(update) - 1) == pytest.approx(lr, rel=1e-12), update


def _training_symbol(artifact: str) -> bytes:
    with tarfile.open(FIXTURES / "sagemaker_ssd" / artifact / "model.tar.gz") as tar:
        member = tar.extractfile("model_algo_1-symbol.json")
        assert member is not None
        return io.BytesIO(member.read()).getvalue()


@pytest.mark.parametrize("artifact", sorted(FIXTURE["multipliers"]))
def test_sagemaker_graphs_get_mxnets_multipliers_name_for_name(artifact: str) -> None:
    model: SageMakerSSD = build(_training_symbol(artifact), 300, artifact)
    got = {n: [lr, wd] for n, _, lr, wd in mxnet_multipliers(model)}
    want = FIXTURE["multipliers"][artifact]
    # a fix_gamma BatchNorm's gamma is not trained (MXNet uses 1 whatever it holds)
    assert set(want) - set(got) == {n for n in want if n == "bn_data_gamma"}
    assert {n: want[n] for n in got} == got
    assert sum(lr == 2.0 for lr, _ in got.values()) == 12  # 6 maps x (class, box) biases


def _by_role(model: SSD) -> dict[str, set[tuple[float, float]]]:
    norms = torch.nn.modules.batchnorm._BatchNorm
    roles: dict[str, set[tuple[float, float]]] = {}
    owners = {id(p): (m, n) for m in model.modules() for n, p in m.named_parameters(recurse=False)}
    for mx_name, param, lr_mult, wd_mult in mxnet_multipliers(model):
        module, local = owners[id(param)]
        if isinstance(module, norms):
            role = "gamma" if local == "weight" else "beta"
        elif "scale" in local:
            role = "l2_scale"
        elif mx_name.startswith(("class_heads", "box_heads")):
            role = f"predictor_{local}"
        else:
            role = f"conv_{local}"
        roles.setdefault(role, set()).add((lr_mult, wd_mult))
    return roles


@pytest.mark.parametrize("net", ["vgg-16", "resnet-50"])
def test_sdods_networks_follow_mxnets_name_rule(net: str) -> None:
    """As MXNet treats `_weight`, `_gamma`, `_beta`, `_bias`, `*_pred_conv_bias` and the
    `relu4_3_scale` of SageMaker's symbols (the fixture above)."""
    with torch.device("meta"):
        model = SSD(SSDConfig(net, 3, 300))
    roles = _by_role(model)
    want = {
        "conv_weight": {(1.0, 1.0)},
        "predictor_weight": {(1.0, 1.0)},
        "predictor_bias": {(2.0, 0.0)},
        "conv_bias": {(1.0, 0.0)},
        "gamma": {(1.0, 1.0)},
        "beta": {(1.0, 0.0)},
        "l2_scale": {(1.0, 0.1)},
    }
    assert roles == {k: v for k, v in want.items() if k in roles}
    assert {"conv_weight", "predictor_bias"} <= set(roles)
    assert ("l2_scale" in roles) is (net == "vgg-16")
    assert ("gamma" in roles) is (net == "resnet-50")


def test_make_optimizer_decays_by_mxnets_rule_on_a_real_ssd() -> None:
    """Zero gradients, one sgd step: weights and gammas shrink by lr x wd, the L2 scale by
    a tenth of it, biases and betas stay."""
    with torch.device("meta"):  # no ImageNet classifier to initialise: values set below
        model = SSD(SSDConfig("vgg-16", 3, 300))
    model.to_empty(device="cpu")
    for p in model.parameters():
        torch.nn.init.uniform_(p, 0.5, 1.5)
    hp = parse_hyperparameters(
        {"num_classes": 3, "num_training_samples": 8, "learning_rate": 0.01, "weight_decay": 0.1}
    )
    optimizer = make_optimizer(model, hp)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    params = dict(model.named_parameters())

    def shrink(name: str) -> float:
        return (params[name].flatten()[0] / before[name].flatten()[0]).item()

    assert shrink("backbone.body.scale_weight") == pytest.approx(1 - 0.01 * 0.01, rel=1e-6)
    assert shrink("backbone.body.features.0.weight") == pytest.approx(1 - 0.01 * 0.1, rel=1e-6)
    assert shrink("class_heads.0.weight") == pytest.approx(1 - 0.01 * 0.1, rel=1e-6)
    assert torch.equal(model.class_heads[0].bias, before["class_heads.0.bias"])
    assert torch.equal(
        model.backbone.body.features[0].bias, before["backbone.body.features.0.bias"]
    )


@pytest.mark.parametrize("optimizer", ["adam", "adadelta"])
def test_adam_and_adadelta_take_no_weight_decay(optimizer: str) -> None:
    """SageMaker's docs: weight_decay is for sgd and rmsprop only."""
    model = SSD(SSDConfig("resnet-lite", 3, 300))
    hp = parse_hyperparameters(
        {"num_classes": 3, "num_training_samples": 8, "optimizer": optimizer, "weight_decay": 0.1}
    )
    opt = make_optimizer(model, hp)
    assert isinstance(opt, CLASSES[optimizer])
    assert {g["weight_decay"] for g in opt.param_groups} == {0.0}


def test_frozen_layers_are_left_out_and_groups_say_their_multipliers() -> None:
    model = SSD(SSDConfig("resnet-lite", 3, 300))
    frozen = model.freeze("^(conv0|bn0)$")
    groups = param_groups(model, 0.0005)
    grouped = {id(p) for g in groups for p in g["params"]}
    frozen_params = [p for name in frozen for p in model.layer_names()[name]]
    assert frozen_params and not grouped & {id(p) for p in frozen_params}
    assert len(grouped) == sum(p.requires_grad for p in model.parameters())
    assert sorted((g["lr_mult"], g["weight_decay"]) for g in groups) == [
        (1.0, 0.0),  # biases, BatchNorm betas
        (1.0, 0.0005),  # convolution weights, BatchNorm gammas
        (2.0, 0.0),  # the predictors' biases
    ]


def test_optimiser_state_round_trips_and_a_foreign_state_is_refused() -> None:
    torch.manual_seed(0)
    model = SSD(SSDConfig("resnet-lite", 3, 300))
    hp = parse_hyperparameters({"num_classes": 3, "num_training_samples": 8})
    first = make_optimizer(model, hp)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    first.step()
    second = make_optimizer(model, hp)
    second.load_state_dict(first.state_dict())
    p = next(model.parameters())
    assert torch.equal(second.state[p]["mom"], first.state[p]["mom"])
    old = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)  # one group: sdod < 33
    with pytest.raises(DataError, match="delete the checkpoint") as err:
        second.load_state_dict(old.state_dict())
    assert err.value.rule == "checkpoint_optimizer"
