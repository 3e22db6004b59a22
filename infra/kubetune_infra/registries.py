"""ECR repositories for the operator and trainer images: scanned on push, tags immutable."""

from __future__ import annotations

import json

import pulumi_aws as aws
from pulumi import ComponentResource, Output, ResourceOptions

IMAGES = ("operator", "trainer")
UNTAGGED_IMAGE_DAYS = 14


def lifecycle_policy() -> str:
    """Deletes untagged layers left by re-pushed builds; tagged images are never expired."""
    return json.dumps(
        {
            "rules": [
                {
                    "rulePriority": 1,
                    "description": f"expire untagged images after {UNTAGGED_IMAGE_DAYS} days",
                    "selection": {
                        "tagStatus": "untagged",
                        "countType": "sinceImagePushed",
                        "countUnit": "days",
                        "countNumber": UNTAGGED_IMAGE_DAYS,
                    },
                    "action": {"type": "expire"},
                }
            ]
        }
    )


class Registries(ComponentResource):
    repository_urls: dict[str, Output[str]]

    def __init__(self, name: str, *, cluster_name: str, opts: ResourceOptions | None = None) -> None:
        super().__init__("kubetune:infra:Registries", name, None, opts)
        self.repository_urls = {}
        for image in IMAGES:
            repository = aws.ecr.Repository(
                f"{name}-{image}",
                name=f"{cluster_name}/{image}",
                image_tag_mutability="IMMUTABLE",  # a tag always means the same digest
                image_scanning_configuration={"scan_on_push": True},
                encryption_configurations=[{"encryption_type": "AES256"}],
                opts=ResourceOptions(parent=self),
            )
            aws.ecr.LifecyclePolicy(
                f"{name}-{image}",
                repository=repository.name,
                policy=lifecycle_policy(),
                opts=ResourceOptions(parent=self),
            )
            self.repository_urls[image] = repository.repository_url
        self.register_outputs({"repositoryUrls": self.repository_urls})
