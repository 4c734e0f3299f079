"""I/O with the cluster: the Kubernetes API adapter (the only user of the kubernetes client),
the actuator every change goes through (typed outcomes), leader election on a Lease, and the
HTTP scrapes of the pods' metrics ports."""
