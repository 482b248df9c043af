"""OpenLineage for the sdod tasks: which data produced which model.

Each task reports what it read and wrote as URIs; Airflow's OpenLineage provider turns them
into the input and output datasets of the task's events (an object `s3://bucket/key`:
namespace `s3://bucket`, name `key`; a local path: namespace `file`, name the absolute
path; a trailing slash dropped, so a prefix is one dataset whichever task names it)::

    ingest    channel sources                       -> their snapshots under work_uri
    check     the snapshots                         -> report.json, quarantine.json
    pack      the snapshots, quarantine.json        -> packed RecordIO channels
    train     the packed channels (+ a model one)   -> model.tar.gz
    evaluate  model.tar.gz, the packed channel      -> metrics.json
    publish   model.tar.gz, metrics.json            -> the registry version

The @task functions hand theirs to Airflow's hook lineage collector (`report`), which the
provider reads for a task without an extractor of its own; `SSDTrainingOperator` answers
the provider's `get_openlineage_facets_on_complete` (`operator_lineage`). With no transport
configured the provider registers no lineage reader and all of this does nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lineage:
    """What one task read and wrote: object URIs or local paths."""

    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()

    @classmethod
    def of(cls, inputs: Iterable[str | None], outputs: Iterable[str | None]) -> Lineage:
        """Lineage of the given URIs, leaving out the missing (None or empty) ones."""
        return cls(tuple(u for u in inputs if u), tuple(u for u in outputs if u))


def asset_uri(uri: str) -> str:
    """The URI Airflow and OpenLineage name a location by: a local path as `file://` with
    its absolute path, no trailing slash (`s3://b/p/` and `s3://b/p` are one prefix)."""
    if "://" not in uri:
        uri = "file://" + os.path.abspath(uri)
    scheme, _, rest = uri.partition("://")
    return f"{scheme}://{rest.rstrip('/') or '/'}"


def _channels(spec: dict[str, Any] | str) -> dict[str, str]:
    """A training request's channels: name -> URI."""
    from sdod.jobspec.parse import parse_spec

    return {c.name: c.uri for c in parse_spec(spec).channels}


def _data_channels(ingested: dict[str, Any]) -> list[str]:
    """What the check and the packing read: the ingested request's channels (snapshots,
    or the originals of streamed ones) but a model channel."""
    return [uri for name, uri in _channels(ingested["spec"]).items() if name != "model"]


def ingest_lineage(ingested: dict[str, Any]) -> Lineage:
    channels = ingested["channels"].values()
    return Lineage.of((c["source"] for c in channels), (c["dest"] for c in channels))


def check_lineage(ingested: dict[str, Any], checked: dict[str, Any]) -> Lineage:
    return Lineage.of(_data_channels(ingested), (checked["report_uri"], checked["quarantine_uri"]))


def pack_lineage(
    ingested: dict[str, Any], checked: dict[str, Any], packed: dict[str, Any]
) -> Lineage:
    packed_channels = _channels(packed["train_spec"])
    return Lineage.of(
        [*_data_channels(ingested), checked["quarantine_uri"]],
        [uri for name, uri in packed_channels.items() if name in packed["rec_files"]],
    )


def training_lineage(config: dict[str, Any] | str, result: dict[str, Any] | None) -> Lineage:
    """The channels a training job read; its model.tar.gz once it has one."""
    inputs = list(_channels(config).values()) if isinstance(config, dict) else []
    return Lineage.of(inputs, [result["model"]] if result else [])


def evaluate_lineage(
    trained: dict[str, Any], packed: dict[str, Any], evaluated: dict[str, Any]
) -> Lineage:
    """The model and the packed channel it was scored on (validation, else train)."""
    channel = "validation" if packed["rec_files"].get("validation") else "train"
    return Lineage.of(
        [trained["model"], _channels(packed["train_spec"]).get(channel)],
        [evaluated.get("metrics_file")],
    )


def publish_lineage(
    trained: dict[str, Any], evaluated: dict[str, Any], published: dict[str, Any]
) -> Lineage:
    return Lineage.of(
        [trained["model"], evaluated.get("metrics_file")],
        [published["uri"]],
    )


class _SdodStorage:
    """The collector's lineage context: sdod reads and writes through `sdod.storage`, not
    through an Airflow hook."""


_CONTEXT = _SdodStorage()


def _listening_collector() -> Any | None:
    """Airflow's hook lineage collector when a reader is registered (the OpenLineage
    provider registers one only when it has a transport), else None, without building one:
    building it loads every provider's asset handlers (seconds)."""
    from airflow.sdk import lineage, plugins_manager

    if not plugins_manager.get_hook_lineage_readers_plugins():
        return None
    return lineage.get_hook_lineage_collector()


def report(describe: Callable[..., Lineage], *results: Any) -> None:
    """Hand `describe(*results)` to the hook lineage collector, for the OpenLineage events
    of the running @task. Only logs when that fails: the task's work is done."""
    try:
        collector = _listening_collector()
        if collector is None:
            return
        lineage = describe(*results)
        for uri in lineage.inputs:
            collector.add_input_asset(_CONTEXT, uri=asset_uri(uri))
        for uri in lineage.outputs:
            collector.add_output_asset(_CONTEXT, uri=asset_uri(uri))
    except Exception as exc:  # lineage is metadata: it never fails a task that did its work
        log.warning("sdod: lineage not reported (%s: %s)", type(exc).__name__, exc)


def operator_lineage(lineage: Lineage) -> Any:
    """The provider's `OperatorLineage` of `lineage` (its datasets named as the hook
    lineage path names them)."""
    from airflow.providers.common.compat.openlineage.utils.utils import translate_airflow_asset
    from airflow.providers.openlineage.extractors.base import OperatorLineage
    from airflow.sdk import Asset

    def datasets(uris: tuple[str, ...]) -> list[Any]:
        found = (translate_airflow_asset(Asset(uri=asset_uri(u)), None) for u in uris)
        return [d for d in found if d is not None]

    return OperatorLineage(inputs=datasets(lineage.inputs), outputs=datasets(lineage.outputs))
