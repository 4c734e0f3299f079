"""kuberank operator."""
