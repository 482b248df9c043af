"""The network a `model_config.json` describes: SageMaker's graph (variant `sagemaker`,
`sdod/model/sagemaker.py`), or sdod's `SSD` in its own or GluonCV's layout."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sdod.errors import DataError

if TYPE_CHECKING:
    from sdod.artifact import ModelConfig


def build_network(config: ModelConfig, backbone_weights: Any = None) -> Any:
    """The (untrained) network `config` describes; DataError naming model_config.json for a
    base network or variant sdod does not know."""
    if config.variant == "sagemaker":  # built from its stored graph
        from sdod.model.sagemaker import network_from_graph

        return network_from_graph(config)
    from sdod.model.ssd import SSD, SSDConfig

    ssd = SSDConfig(config.base_network, config.num_classes, config.image_shape, config.variant)
    try:
        return SSD(ssd, backbone_weights=backbone_weights)
    except ValueError as exc:  # an unknown base_network or variant in model_config.json
        raise DataError(f"model_config.json: {exc}") from None
