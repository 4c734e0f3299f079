"""The objects the operator wants to exist: Deployment, Service, PodDisruptionBudget,
PodMonitor, PrometheusRule and the alert rules. Pure: a spec in, objects out."""
