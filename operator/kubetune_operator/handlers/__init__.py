"""Kopf handlers; importing this package registers all of them with kopf's default registry."""

from . import continuouspretrain, finetunejob

__all__ = ["continuouspretrain", "finetunejob"]
