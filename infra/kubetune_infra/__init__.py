"""Pulumi components that stand up the kubetune platform on AWS: network, EKS with a scale-from-zero
GPU node group, encrypted storage, image registries, IRSA roles and the in-cluster add-ons."""
