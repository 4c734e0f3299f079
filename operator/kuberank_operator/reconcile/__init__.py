"""The reconcile controller: work queue, apply planning, status and capacity, and the watch of
the GPU tuning the sidecars report."""
