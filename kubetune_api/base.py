"""The base model every API type derives from: camelCase on the wire, strict about unknown
fields, field docstrings kept as descriptions (they become CRD descriptions for `kubectl explain`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict


class ApiModel(BaseModel):
    """Base for every kubetune API object."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
        validate_default=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The JSON-compatible dict as it appears in a manifest: camelCase, unset optionals omitted."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ResourceModel(ApiModel):
    """A top-level Kubernetes object: metadata stays a free-form dict, as the API server owns it."""

    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace", "default"))


def cel_rule(rule: str, message: str, field_path: str | None = None) -> JsonDict:
    """One `x-kubernetes-validations` entry; fieldPath makes the API server name the field."""
    entry: JsonDict = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def immutable(what: str) -> JsonDict:
    """Schema extra that makes the API server refuse any change to a field after creation."""
    return {"x-kubernetes-validations": [cel_rule("self == oldSelf", f"{what} is immutable")]}
