"""Product documents generated from their one source (`make docs`; `python -m docgen all --check`
names each stale file): docs/configuration.md from the CRD, the chart's parameter table from its
values.yaml, dashboards/kuberank.json from the metric names, docs/metrics.md from real scrapes,
and the README's benchmark tables from bench/RESULTS.md. Development tooling, not part of the
distribution: run it from the repository root."""
