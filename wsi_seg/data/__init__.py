"""Datasets and the transforms that turn images into network inputs."""
