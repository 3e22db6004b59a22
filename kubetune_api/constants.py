"""Names shared by the API, the operator, the trainer, the dev cluster and the infrastructure.

One copy of each value: the Pulumi node groups, the kwok fake nodes and the operator's pod
builder all import these, so a GPU node is always labelled and tainted the way the
trainer pods select and tolerate it.
"""

from __future__ import annotations

from typing import Final

GROUP: Final = "kubetune.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

FINETUNEJOB_KIND: Final = "FineTuneJob"
FINETUNEJOB_PLURAL: Final = "finetunejobs"
CONTINUOUSPRETRAIN_KIND: Final = "ContinuousPretrain"
CONTINUOUSPRETRAIN_PLURAL: Final = "continuouspretrains"

# Extended resource advertised by the NVIDIA device plugin.
GPU_RESOURCE: Final = "nvidia.com/gpu"
# Label set by GPU feature discovery; the value is the product name, e.g. NVIDIA-H100-80GB-HBM3.
GPU_PRODUCT_LABEL: Final = "nvidia.com/gpu.product"
# Label every GPU node carries so trainer pods can select GPU nodes without naming a product.
GPU_NODE_LABEL_KEY: Final = "kubetune.io/accelerator"
GPU_NODE_LABEL_VALUE: Final = "nvidia-gpu"
# Taint that keeps non-GPU workloads off GPU nodes; trainer pods tolerate it.
GPU_TAINT_KEY: Final = "nvidia.com/gpu"
GPU_TAINT_VALUE: Final = "present"
GPU_TAINT_EFFECT: Final = "NoSchedule"

# Recommended labels (https://kubernetes.io/docs/concepts/overview/working-with-objects/common-labels/).
LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_PART_OF: Final = "app.kubernetes.io/part-of"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
# Links every child object back to the FineTuneJob / ContinuousPretrain that owns it.
LABEL_FINETUNEJOB: Final = "kubetune.io/finetunejob"
LABEL_CONTINUOUSPRETRAIN: Final = "kubetune.io/continuouspretrain"

# Where the trainer writes its final result so the kubelet surfaces it as the
# container's termination message.
TERMINATION_MESSAGE_PATH: Final = "/dev/termination-log"
# Mount path and environment variable through which the pod receives its TrainerConfig.
TRAINER_CONFIG_MOUNT: Final = "/etc/kubetune"
TRAINER_CONFIG_FILE: Final = "trainer-config.json"
TRAINER_CONFIG_ENV: Final = "KUBETUNE_TRAINER_CONFIG"

# Trainer exit codes: the operator's podFailurePolicy fails the Job at once on these
# (a retry cannot fix a bad config or bad data) and retries anything else.
EXIT_CONFIG_ERROR: Final = 3
EXIT_DATA_ERROR: Final = 4
EXIT_GATE_FAILED: Final = 5
EXIT_PREEMPTED: Final = 143
