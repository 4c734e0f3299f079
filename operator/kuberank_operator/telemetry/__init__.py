"""The operator's own telemetry: every metric it exports, and the HTTP endpoint serving
/metrics, /healthz and /readyz."""
