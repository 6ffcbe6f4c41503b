"""Renders the Helm chart charts/tributary-operator into one multi-document YAML file, for
the e2e suite on a local control plane, which applies it itself (no helm binary).

Uses the Helm SDK as a library (helm-python-sdk, as scripts/check_chart.py does; run with
PYTHONPATH=target/python, where scripts/check-chart installs it). The values are the given
image, pulled if not present, and the operator watching all namespaces. The file holds, in
order: the release Namespace, the chart's CRDs, then every rendered object (NOTES.txt
left out) in the order `helm install` applies kinds.

  PYTHONPATH=target/python python3 e2e/render_chart.py \
      --image-repository ghcr.io/tributary-dev/tributary-operator --image-tag 0.1.0 \
      --namespace tributary-system --release tributary-operator --out /tmp/rendered.yaml

Exits 1 with the reason when the chart does not render.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

try:
    import helm_python as helm
    import yaml
except ImportError as error:
    sys.exit(
        f"{error}: run with PYTHONPATH=target/python after scripts/check-chart has installed "
        "helm-python-sdk there"
    )

CHART = Path(__file__).resolve().parent.parent / "charts" / "tributary-operator"

# Helm's install order (pkg/release/util/kind_sorter.go, InstallOrder): what an object
# refers to exists before it. Kinds not listed come last, in template order.
INSTALL_ORDER = [
    "PriorityClass",
    "Namespace",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "PodSecurityPolicy",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "SecretList",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleList",
    "ClusterRoleBinding",
    "ClusterRoleBindingList",
    "Role",
    "RoleList",
    "RoleBinding",
    "RoleBindingList",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "IngressClass",
    "Ingress",
    "APIService",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-repository", required=True, help="the operator image")
    parser.add_argument("--image-tag", required=True, help="the operator image's tag")
    parser.add_argument("--namespace", required=True, help="the release namespace")
    parser.add_argument("--release", required=True, help="the release name")
    parser.add_argument("--out", required=True, type=Path, help="the YAML file to write")
    parser.add_argument("--chart", type=Path, default=CHART, help=f"the chart (default {CHART})")
    return parser.parse_args()


def values(args: argparse.Namespace) -> dict[str, Any]:
    """The chart values (names as in values.yaml) for the e2e suite."""
    return {
        "image": {
            "repository": args.image_repository,
            "tag": args.image_tag,
            "pullPolicy": "IfNotPresent",
        },
        "watch": {"allNamespaces": True},
    }


def namespace(name: str) -> dict[str, Any]:
    """The release namespace, which `helm install --create-namespace` would make."""
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def load_documents(text: str, source: str) -> list[dict[str, Any]]:
    """The objects in a YAML stream; empty documents (templates that render nothing) dropped."""
    try:
        return [o for o in yaml.safe_load_all(text) if o]
    except yaml.YAMLError as error:
        raise SystemExit(f"{source} is not YAML: {error}") from None


def install_rank(obj: dict[str, Any]) -> int:
    kind = obj.get("kind")
    return INSTALL_ORDER.index(kind) if kind in INSTALL_ORDER else len(INSTALL_ORDER)


def render(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The Namespace, the CRDs, then the rendered objects in install order."""
    try:
        with helm.Chart.load(args.chart) as chart:
            crds = [o for c in chart.crds for o in load_documents(c["data"], c["name"])]
            manifests = chart.render(
                values(args), name=args.release, namespace=args.namespace, is_install=True
            )
    except helm.HelmError as error:
        raise SystemExit(f"the chart {args.chart} does not render: {error}") from None
    objects = [
        obj
        for name, text in sorted(manifests.items())
        if not name.endswith("NOTES.txt")
        for obj in load_documents(text, name)
    ]
    # sorted() is stable: objects of one kind keep their template order.
    return [namespace(args.namespace), *crds, *sorted(objects, key=install_rank)]


def main() -> int:
    args = parse_args()
    objects = render(args)
    text = yaml.safe_dump_all(objects, sort_keys=False, default_flow_style=False)
    try:
        args.out.write_text(text)
    except OSError as error:
        print(f"cannot write {args.out}: {error}", file=sys.stderr)
        return 1
    kinds = ", ".join(
        f"{kind} {sum(o['kind'] == kind for o in objects)}"
        for kind in dict.fromkeys(o["kind"] for o in objects)
    )
    print(f"wrote {args.out}: {len(objects)} objects ({kinds})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
