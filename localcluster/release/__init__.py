"""The chart released on the local cluster: installing it, running its operator with the chart's
own credentials, running hook pods like a kubelet would, and the `make demo` story built from
those parts (`demo.tell_story`, run by `python -m localcluster demo`)."""
