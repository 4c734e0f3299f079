"""Autoscaling and OOM restarts: the builtin evaluation loop, the decisions (scaling, restarts),
the actions that carry them out, the Alertmanager webhook and the alert-to-action mapping, and
the monitoring objects kept beside them."""
