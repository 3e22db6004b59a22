"""kwok Stage documents that simulate kubelets for the local control plane.

Adapted from kwok v0.8.0's default stages (kustomize/stage/{pod,node}/...). Pod fate is
decided by the test through pod annotations, so the operator's handling of success, config
errors (exit codes matched by podFailurePolicy), termination messages and disruptions can be
exercised without running a container:

- ``kwok.kubetune.io/outcome``: ``Succeeded`` (default), ``Failed`` or ``Running`` (forever).
- ``kwok.kubetune.io/run-seconds``: seconds spent Running before completing (default 1).
- ``kwok.kubetune.io/exit-code``: every container's terminated exitCode (default 0, or 1
  when the outcome is Failed).
- ``kwok.kubetune.io/message``: every container's termination message.
- ``kwok.kubetune.io/disruption: "true"``: a failed pod also gets a ``DisruptionTarget``
  condition, as after a preemption or eviction.

Pods with ``restartPolicy: Always`` (Deployments) never complete: they stay Running.
"""

from __future__ import annotations

from typing import Final

ANNOTATION_PREFIX: Final = "kwok.kubetune.io"
OUTCOME_ANNOTATION: Final = f"{ANNOTATION_PREFIX}/outcome"
RUN_SECONDS_ANNOTATION: Final = f"{ANNOTATION_PREFIX}/run-seconds"
EXIT_CODE_ANNOTATION: Final = f"{ANNOTATION_PREFIX}/exit-code"
MESSAGE_ANNOTATION: Final = f"{ANNOTATION_PREFIX}/message"
DISRUPTION_ANNOTATION: Final = f"{ANNOTATION_PREFIX}/disruption"

OUTCOME_SUCCEEDED: Final = "Succeeded"
OUTCOME_FAILED: Final = "Failed"
OUTCOME_RUNNING: Final = "Running"

# kwok only manages nodes carrying this annotation; real nodes (if any) are left alone.
FAKE_NODE_ANNOTATION_KEY: Final = "kwok.x-k8s.io/node"
FAKE_NODE_ANNOTATION_VALUE: Final = "fake"

# A jq expression: "5" -> "5s"; absent -> "s", which kwok cannot parse and so falls back to
# the stage's durationMilliseconds.
_RUN_DURATION = f'.metadata.annotations["{RUN_SECONDS_ANNOTATION}"] + "s"'

# Shared by the success and failure stages: only live, running, run-to-completion pods.
# kwok allocates a stable pod IP from --cidr per pod.
_POD_IPS = (
    'PodIPsWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) '
    '( or .metadata.name "" ) ( or .metadata.namespace "" )'
)

_FINISHING_POD_SELECTOR = """\
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.phase'
      operator: 'In'
      values: ['Running']
    - key: '.spec.restartPolicy'
      operator: 'In'
      values: ['Never', 'OnFailure']"""

_TERMINATED_CONTAINERS = """\
      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: false
        restartCount: 0
        started: false
        state:
          terminated:
            exitCode: {{ $exitCode }}
            reason: {{ $reason | Quote }}
            message: {{ $message | Quote }}
            startedAt: {{ $startedAt | Quote }}
            finishedAt: {{ $now | Quote }}
      {{ end }}"""

_COMMON_VARS = f"""\
      {{{{ $now := Now }}}}
      {{{{ $annotations := or .metadata.annotations dict }}}}
      {{{{ $message := or (index $annotations "{MESSAGE_ANNOTATION}") "" }}}}
      {{{{ $startedAt := or .status.startTime $now }}}}"""

_NOT_READY_CONDITIONS = """\
      - lastTransitionTime: {{ $now | Quote }}
        status: "False"
        reason: PodCompleted
        type: Ready
      - lastTransitionTime: {{ $now | Quote }}
        status: "False"
        reason: PodCompleted
        type: ContainersReady"""

POD_STAGES: Final = f"""\
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-ready
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.phase'
      operator: 'In'
      values: ['Pending']
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: 'NotIn'
      values: ['True']
  next:
    statusTemplate: |
      {{{{ $now := Now }}}}
      conditions:
      - lastTransitionTime: {{{{ $now | Quote }}}}
        status: "True"
        type: PodReadyToStartContainers
      - lastTransitionTime: {{{{ $now | Quote }}}}
        status: "True"
        type: Initialized
      - lastTransitionTime: {{{{ $now | Quote }}}}
        status: "True"
        type: Ready
      - lastTransitionTime: {{{{ $now | Quote }}}}
        status: "True"
        type: ContainersReady
      {{{{ range .spec.readinessGates }}}}
      - lastTransitionTime: {{{{ $now | Quote }}}}
        status: "True"
        type: {{{{ .conditionType | Quote }}}}
      {{{{ end }}}}
      containerStatuses:
      {{{{ range .spec.containers }}}}
      - image: {{{{ .image | Quote }}}}
        name: {{{{ .name | Quote }}}}
        ready: true
        started: true
        restartCount: 0
        state:
          running:
            startedAt: {{{{ $now | Quote }}}}
      {{{{ end }}}}
      initContainerStatuses:
      {{{{ range .spec.initContainers }}}}
      - image: {{{{ .image | Quote }}}}
        name: {{{{ .name | Quote }}}}
        ready: true
        restartCount: 0
        {{{{ if eq .restartPolicy "Always" }}}}
        started: true
        state:
          running:
            startedAt: {{{{ $now | Quote }}}}
        {{{{ else }}}}
        state:
          terminated:
            exitCode: 0
            finishedAt: {{{{ $now | Quote }}}}
            reason: Completed
            startedAt: {{{{ $now | Quote }}}}
        {{{{ end }}}}
      {{{{ end }}}}
      {{{{ $hostIPs := NodeIPsWith .spec.nodeName }}}}
      {{{{ with $hostIPs }}}}
      hostIP: {{{{ index . 0 | Quote }}}}
      hostIPs:
      {{{{ range . }}}}
      - ip: {{{{ . | Quote }}}}
      {{{{ end }}}}
      {{{{ end }}}}
      {{{{ $podIPs := {_POD_IPS} }}}}
      {{{{ with $podIPs }}}}
      podIP: {{{{ index . 0 | Quote }}}}
      podIPs:
      {{{{ range . }}}}
      - ip: {{{{ . | Quote }}}}
      {{{{ end }}}}
      {{{{ end }}}}
      phase: Running
      startTime: {{{{ $now | Quote }}}}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: kubetune-pod-succeed
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
{_FINISHING_POD_SELECTOR}
    - key: '.metadata.annotations["{OUTCOME_ANNOTATION}"]'
      operator: 'NotIn'
      values: ['{OUTCOME_FAILED}', '{OUTCOME_RUNNING}']
  delay:
    durationMilliseconds: 1000
    durationFrom:
      expressionFrom: '{_RUN_DURATION}'
  next:
    statusTemplate: |
{_COMMON_VARS}
      {{{{ $exitCode := or (index $annotations "{EXIT_CODE_ANNOTATION}") 0 }}}}
      {{{{ $reason := "Completed" }}}}
      conditions:
{_NOT_READY_CONDITIONS}
{_TERMINATED_CONTAINERS}
      phase: Succeeded
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: kubetune-pod-fail
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
{_FINISHING_POD_SELECTOR}
    - key: '.metadata.annotations["{OUTCOME_ANNOTATION}"]'
      operator: 'In'
      values: ['{OUTCOME_FAILED}']
  delay:
    durationMilliseconds: 1000
    durationFrom:
      expressionFrom: '{_RUN_DURATION}'
  next:
    statusTemplate: |
{_COMMON_VARS}
      {{{{ $exitCode := or (index $annotations "{EXIT_CODE_ANNOTATION}") 1 }}}}
      {{{{ $reason := "Error" }}}}
      conditions:
{_NOT_READY_CONDITIONS}
      {{{{ if eq (or (index $annotations "{DISRUPTION_ANNOTATION}") "") "true" }}}}
      - lastTransitionTime: {{{{ $now | Quote }}}}
        status: "True"
        reason: TerminationByKubelet
        message: "kwok: simulated disruption"
        type: DisruptionTarget
      {{{{ end }}}}
{_TERMINATED_CONTAINERS}
      phase: Failed
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-delete
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'Exists'
  next:
    delete: true
"""

NODE_STAGES: Final = """\
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: node-initialize
spec:
  resourceRef:
    apiGroup: v1
    kind: Node
  selector:
    matchExpressions:
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: 'NotIn'
      values: ['True']
  next:
    statusTemplate: |
      {{ $now := Now }}
      {{ $lastTransitionTime := or .metadata.creationTimestamp $now }}
      conditions:
      {{ range NodeConditions }}
      - lastHeartbeatTime: {{ $now | Quote }}
        lastTransitionTime: {{ $lastTransitionTime | Quote }}
        message: {{ .message | Quote }}
        reason: {{ .reason | Quote }}
        status: {{ .status | Quote }}
        type: {{ .type  | Quote}}
      {{ end }}
      {{ $hasInternalIP := false }}
      {{ range .status.addresses }}
      {{ if eq .type "InternalIP" }}{{ $hasInternalIP = true }}{{ end }}
      {{ end }}
      {{ if not $hasInternalIP }}
      addresses:
      {{ with NodeIP }}
      - address: {{ . | Quote }}
        type: InternalIP
      {{ end }}
      {{ with NodeName }}
      - address: {{ . | Quote }}
        type: Hostname
      {{ end }}
      {{ end }}
      {{ with NodePort }}
      daemonEndpoints:
        kubeletEndpoint:
          Port: {{ . }}
      {{ end }}
      allocatable:
      {{ with .status.allocatable }}
      {{ YAML . 1 }}
      {{ else }}
        cpu: 1k
        memory: 1Ti
        pods: 1M
      {{ end }}
      capacity:
      {{ with .status.capacity }}
      {{ YAML . 1 }}
      {{ else }}
        cpu: 1k
        memory: 1Ti
        pods: 1M
      {{ end }}
      {{ $nodeInfo := .status.nodeInfo }}
      {{ $kwokVersion := printf "kwok-%s" Version }}
      nodeInfo:
        architecture: {{ or $nodeInfo.architecture "amd64" }}
        bootID: {{ or $nodeInfo.bootID `""` }}
        containerRuntimeVersion: {{ or $nodeInfo.containerRuntimeVersion $kwokVersion }}
        kernelVersion: {{ or $nodeInfo.kernelVersion $kwokVersion }}
        kubeProxyVersion: {{ or $nodeInfo.kubeProxyVersion $kwokVersion }}
        kubeletVersion: {{ or $nodeInfo.kubeletVersion $kwokVersion }}
        machineID: {{ or $nodeInfo.machineID `""` }}
        operatingSystem: {{ or $nodeInfo.operatingSystem "linux" }}
        osImage: {{ or $nodeInfo.osImage `""` }}
        systemUUID: {{ or $nodeInfo.systemUUID `""` }}
      phase: Running
---
# Liveness comes from the node Lease kwok renews (--node-lease-duration-seconds), as with a
# real kubelet; this stage refreshes the Ready condition's heartbeat every ~20-25s so that
# the node-lifecycle controller never sees a stale status either.
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: node-heartbeat
spec:
  resourceRef:
    apiGroup: v1
    kind: Node
  selector:
    matchExpressions:
    - key: '.status.phase'
      operator: 'In'
      values: ['Running']
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: 'In'
      values: ['True']
  delay:
    durationMilliseconds: 20000
    jitterDurationMilliseconds: 25000
  next:
    statusTemplate: |
      {{ $now := Now }}
      {{ $lastTransitionTime := or .metadata.creationTimestamp $now }}
      conditions:
      {{ range NodeConditions }}
      - lastHeartbeatTime: {{ $now | Quote }}
        lastTransitionTime: {{ $lastTransitionTime | Quote }}
        message: {{ .message | Quote }}
        reason: {{ .reason | Quote }}
        status: {{ .status | Quote }}
        type: {{ .type | Quote }}
      {{ end }}
"""


def kwok_config() -> str:
    """The multi-document YAML passed to ``kwok --config``: our stages replace kwok's defaults."""
    return NODE_STAGES + "---\n" + POD_STAGES
