"""The RerankerDeployment CRD on the local cluster: its file, the label its pods carry, and
installing it (applied server-side, waited for until Established)."""

from __future__ import annotations

from pathlib import Path

from localcluster import LocalCluster, wait_until

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "rerankerdeployments.kuberank.dev.yaml"
EXAMPLES = REPO / "crds" / "examples"
OWNER_LABEL = "kuberank.dev/rerankerdeployment"


def install_crd(cluster: LocalCluster) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))

    def established() -> bool:
        crd = cluster.kubectl_json("get", "crd", "rerankerdeployments.kuberank.dev")
        conditions = (crd.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    wait_until(established, timeout=60, what="the RerankerDeployment CRD to be established")
