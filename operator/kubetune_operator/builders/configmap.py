"""The ConfigMap holding the TrainerConfig JSON the trainer reads."""

from __future__ import annotations

from typing import Any

from kubetune_api.constants import TRAINER_CONFIG_FILE
from kubetune_api.finetunejob import FineTuneJob
from kubetune_api.trainer_contract import ProgressTarget, TrainerConfig

from .common import child_metadata, config_map_name


def trainer_config(
    ftj: FineTuneJob, *, image: str, progress_target: ProgressTarget, metrics_port: int
) -> TrainerConfig:
    return TrainerConfig.from_finetunejob(
        ftj, image=image, progress_target=progress_target, metrics_port=metrics_port
    )


def config_map(ftj: FineTuneJob, config: TrainerConfig) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": child_metadata(ftj, config_map_name(ftj.name), "config"),
        # The config is derived from the immutable part of the spec; an immutable ConfigMap
        # also spares the kubelet from watching it.
        "immutable": True,
        "data": {TRAINER_CONFIG_FILE: config.model_dump_json(by_alias=True, exclude_none=True, indent=2)},
    }
