"""What a FineTuneJob refers to outside itself: URIs (with the field that holds them) and Secrets."""

from __future__ import annotations

from dataclasses import dataclass

from kubetune_api.finetunejob import FineTuneJob

HF_TOKEN_KEY = "HF_TOKEN"
STORAGE_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


@dataclass(frozen=True)
class UriRef:
    field: str
    """Where the URI is in the manifest, e.g. spec.datasets[0].uri."""
    uri: str
    writable: bool = False
    """The trainer writes here (output, checkpoints)."""

    @property
    def scheme(self) -> str:
        return self.uri.split("://", 1)[0]

    @property
    def claim(self) -> str | None:
        """PVC name of a pvc://claim/path URI."""
        if self.scheme != "pvc":
            return None
        return self.uri.split("://", 1)[1].split("/", 1)[0]


@dataclass(frozen=True)
class SecretRef:
    field: str
    name: str
    keys: tuple[str, ...]


def uri_refs(ftj: FineTuneJob) -> list[UriRef]:
    spec = ftj.spec
    refs = [UriRef("spec.baseModel.uri", spec.base_model.uri)]
    refs += [UriRef(f"spec.datasets[{i}].uri", d.uri) for i, d in enumerate(spec.datasets)]
    guard = spec.evaluation.forgetting_guard
    if guard is not None:
        refs.append(UriRef("spec.evaluation.forgettingGuard.dataset.uri", guard.dataset.uri))
    if spec.checkpoint.uri is not None:
        refs.append(UriRef("spec.checkpoint.uri", spec.checkpoint.uri, writable=True))
    refs.append(UriRef("spec.output.uri", spec.output.uri, writable=True))
    return refs


def pvc_claims(ftj: FineTuneJob) -> dict[str, bool]:
    """Claim name -> whether the trainer writes to it, in first-mention order."""
    claims: dict[str, bool] = {}
    for ref in uri_refs(ftj):
        if ref.claim is not None:
            claims[ref.claim] = claims.get(ref.claim, False) or ref.writable
    return claims


def secret_refs(ftj: FineTuneJob) -> list[SecretRef]:
    refs = []
    if ftj.spec.base_model.secret_ref is not None:
        refs.append(
            SecretRef("spec.baseModel.secretRef.name", ftj.spec.base_model.secret_ref.name, (HF_TOKEN_KEY,))
        )
    if ftj.spec.storage.secret_ref is not None:
        refs.append(
            SecretRef("spec.storage.secretRef.name", ftj.spec.storage.secret_ref.name, STORAGE_SECRET_KEYS)
        )
    return refs
