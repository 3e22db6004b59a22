"""kubetune's one API definition: FineTuneJob, ContinuousPretrain and the trainer contract.

Pure: imports none of kopf, torch or kubernetes, so every component can depend on it.
"""

from .common import Condition, ConditionStatus, SecretReference, StorageSettings
from .continuouspretrain import ContinuousPretrain, ContinuousPretrainSpec, ContinuousPretrainStatus
from .finetunejob import FineTuneJob, FineTuneJobSpec, FineTuneJobStatus, MethodType, Objective, Phase
from .manifests import load_manifest, load_manifests
from .trainer_contract import ProgressReport, TrainerConfig, TrainerResult

__all__ = [
    "Condition",
    "ConditionStatus",
    "ContinuousPretrain",
    "ContinuousPretrainSpec",
    "ContinuousPretrainStatus",
    "FineTuneJob",
    "FineTuneJobSpec",
    "FineTuneJobStatus",
    "MethodType",
    "Objective",
    "Phase",
    "ProgressReport",
    "SecretReference",
    "StorageSettings",
    "TrainerConfig",
    "TrainerResult",
    "load_manifest",
    "load_manifests",
]
