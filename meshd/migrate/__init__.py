"""Converters from the formats App Mesh users already have (CloudFormation, Kubernetes) to App Mesh's documents."""
