"""kuberank sidecar."""
