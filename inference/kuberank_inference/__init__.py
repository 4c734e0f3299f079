"""kuberank inference."""
