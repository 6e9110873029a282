"""Migration into meshd: CloudFormation and Kubernetes imports, export."""
