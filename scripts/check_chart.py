"""Checks the Helm chart charts/tributary-operator; scripts/check-chart runs it.

Uses the Helm SDK as a library (helm-python-sdk, no helm binary) to lint and render the
chart for its default values and for every values file in the chart's ci/ directory,
then checks what it renders:

- the chart's crds/ equal the repository's crds/*.yaml byte for byte;
- lint reports no warning or error;
- every rendered object and CRD is valid, strictly, for the oldest and newest Kubernetes
  release we support (kubernetes-validate); kinds that are not Kubernetes' own are
  checked against the minimal schemas below, any other unknown kind fails;
- the rules of the rendered Roles and ClusterRoles equal, per scope, what
  `tributary-operator rbac` prints for the same watch settings, and they are bound to
  the operator's ServiceAccount;
- the operator's pod is what `tributary-operator install` prints (args, env, ports,
  probes, security context), brokers are given the address of the rendered controller
  Service, and with the default values the chart makes the same objects as `install`
  (less the Namespace and the CRDs, which Helm handles itself);
- values.schema.json rejects values of the wrong type with a message naming the field.

Prints one line per passing check; on a failure, what is wrong, and exits 1.
"""

from __future__ import annotations

import argparse
import functools
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import kubernetes_validate.utils
import yaml

CHART = Path("charts/tributary-operator")
REPO_CRDS = Path("crds")
KUBERNETES_VERSIONS = ["1.33.0", "1.37.0"]
LEADER_LABEL = "tributary.dev/controller-leader"

# Release name and namespace each value set is rendered with: the defaults of `helm
# install tributary-operator ... -n tributary-system`, except where a test wants names
# that differ from the defaults.
DEFAULT_RELEASE = ("tributary-operator", "tributary-system")
RELEASES = {"watch-namespace-values.yaml": ("streams", "streams-system")}

# Kinds kubernetes-validate has no schema for (they come with CRDs of other projects):
# the fields the chart uses, strictly, so that a typo still fails.
_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
_DURATION = {"type": "string", "pattern": "^([0-9]+(ms|s|m|h))+$"}
THIRD_PARTY_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "ServiceMonitor"},
            "metadata": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name"],
                "properties": {
                    "name": {"type": "string"},
                    "namespace": {"type": "string"},
                    "labels": _LABELS,
                    "annotations": _LABELS,
                },
            },
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["selector", "endpoints"],
                "properties": {
                    "selector": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {"matchLabels": _LABELS},
                    },
                    "namespaceSelector": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "any": {"type": "boolean"},
                            "matchNames": {"type": "array", "items": {"type": "string"}},
                        },
                    },
                    "endpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["port"],
                            "properties": {
                                "port": {"type": "string"},
                                "path": {"type": "string"},
                                "interval": _DURATION,
                                "scrapeTimeout": _DURATION,
                            },
                        },
                    },
                },
            },
        },
    },
}
_ENDPOINT = THIRD_PARTY_SCHEMAS[("monitoring.coreos.com/v1", "ServiceMonitor")]["properties"][
    "spec"
]["properties"]["endpoints"]
_SERVICE_MONITOR_SPEC = THIRD_PARTY_SCHEMAS[("monitoring.coreos.com/v1", "ServiceMonitor")][
    "properties"
]["spec"]["properties"]
THIRD_PARTY_SCHEMAS[("monitoring.coreos.com/v1", "PodMonitor")] = {
    **THIRD_PARTY_SCHEMAS[("monitoring.coreos.com/v1", "ServiceMonitor")],
    "properties": {
        **THIRD_PARTY_SCHEMAS[("monitoring.coreos.com/v1", "ServiceMonitor")]["properties"],
        "kind": {"const": "PodMonitor"},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "podMetricsEndpoints"],
            "properties": {
                "selector": _SERVICE_MONITOR_SPEC["selector"],
                "namespaceSelector": _SERVICE_MONITOR_SPEC["namespaceSelector"],
                "podMetricsEndpoints": _ENDPOINT,
            },
        },
    },
}


class CheckFailed(Exception):
    """A check found something wrong; the message says what."""


@dataclass
class Case:
    """One value set, rendered as one release."""

    label: str
    values: dict[str, Any]
    release: str
    namespace: str
    objects: list[dict[str, Any]] = field(default_factory=list)
    notes: str = ""
    merged: dict[str, Any] = field(default_factory=dict)

    def watch_flags(self) -> list[str]:
        """The `tributary-operator rbac|install` flags for this value set."""
        flags = ["--namespace", self.namespace]
        watch = self.merged["watch"]
        if watch["allNamespaces"]:
            flags.append("--all-namespaces")
        elif watch["namespace"]:
            flags += ["--watch-namespace", watch["namespace"]]
        return flags


def load_cases() -> list[Case]:
    cases = [Case("default values", {}, *DEFAULT_RELEASE)]
    for path in sorted((CHART / "ci").glob("*.yaml")):
        values = yaml.safe_load(path.read_text()) or {}
        cases.append(Case(f"ci/{path.name}", values, *RELEASES.get(path.name, DEFAULT_RELEASE)))
    return cases


def operator_objects(operator: str, *args: str) -> list[dict[str, Any]]:
    out = subprocess.run([operator, *args], check=True, capture_output=True, text=True).stdout
    return [o for o in yaml.safe_load_all(out) if o]


def find(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def describe(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    where = f" in {meta['namespace']}" if meta.get("namespace") else ""
    return f"{obj['kind']} {meta['name']}{where}"


# --- the checks -------------------------------------------------------------------------


def check_crds_in_sync() -> str:
    repo = {p.name: p.read_bytes() for p in REPO_CRDS.glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*")}
    stale = sorted(n for n in repo.keys() | chart.keys() if repo.get(n) != chart.get(n))
    if stale:
        raise CheckFailed(
            f"the chart's CRDs differ from crds/ ({', '.join(stale)}); copy them again:\n"
            f"  rm -f {CHART}/crds/* && cp crds/*.yaml {CHART}/crds/"
        )
    return f"{CHART}/crds/ equals crds/*.yaml"


def one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.strip().splitlines())


def check_lint(cases: list[Case]) -> str:
    problems: dict[str, list[str]] = {}  # problem -> Kubernetes versions it was found for
    for case in cases:
        for version in KUBERNETES_VERSIONS:
            report = helm.lint(
                CHART,
                case.values,
                strict=True,
                namespace=case.namespace,
                kube_version=f"v{version}",
            )
            found = [
                f"{'error' if m['severity'] >= 3 else 'warning'}: {m['path']}: "
                f"{one_line(m['error'])}"
                for m in report["messages"]
                if m["severity"] >= 2
            ]
            # The errors repeat the messages; alone, they are all there is.
            found = found or [f"error: {one_line(e)}" for e in report["errors"]]
            for problem in found:
                problems.setdefault(f"{case.label}: {problem}", []).append(version)
    if problems:
        raise CheckFailed(
            "helm lint:\n"
            + "\n".join(
                f"  {problem} (Kubernetes {', '.join(versions)})"
                for problem, versions in problems.items()
            )
        )
    return f"lint clean: {', '.join(c.label for c in cases)}"


def render(cases: list[Case]) -> None:
    with helm.Chart.load(CHART) as chart:
        for case in cases:
            case.merged = chart.merge_values(case.values)
            try:
                manifests = chart.render(case.values, name=case.release, namespace=case.namespace)
            except helm.HelmError as error:
                raise CheckFailed(
                    f"{case.label}: the chart does not render: {one_line(str(error))}"
                ) from None
            for name, text in sorted(manifests.items()):
                if name.endswith("NOTES.txt"):
                    case.notes = text
                    continue
                try:
                    case.objects += [o for o in yaml.safe_load_all(text) if o]
                except yaml.YAMLError as error:
                    raise CheckFailed(
                        f"{case.label}: {name} is not YAML: {one_line(str(error))}"
                    ) from None


def check_notes(cases: list[Case]) -> str:
    needed = [
        "examples/cluster.yaml",
        "examples/topics.yaml",
        "get clusters",
        "get topics",
        "exec",
        "tributary produce",
        "tributary consume",
    ]
    for case in cases:
        missing = [n for n in needed if n not in case.notes]
        if missing:
            raise CheckFailed(f"{case.label}: templates/NOTES.txt does not mention {missing}")
    return "NOTES.txt says what to apply and how to produce and consume"


@functools.cache
def _schema_contents(filename: str, desired_version: str) -> Any:
    return _uncached_schema_contents(filename, desired_version)


# kubernetes-validate reads and parses its (large) definitions file for every object.
_uncached_schema_contents = kubernetes_validate.utils.schema_contents
kubernetes_validate.utils.schema_contents = _schema_contents


def check_valid(cases: list[Case]) -> str:
    with helm.Chart.load(CHART) as chart:
        crds = [yaml.safe_load(c["data"]) for c in chart.crds]
    if len(crds) != len(list(REPO_CRDS.glob("*.yaml"))):
        raise CheckFailed(
            f"the chart holds {len(crds)} CRDs, crds/ {len(list(REPO_CRDS.glob('*.yaml')))}"
        )
    to_check = [("crds/", o) for o in crds] + [(c.label, o) for c in cases for o in c.objects]
    problems, notes = [], set()
    for version in KUBERNETES_VERSIONS:
        for label, obj in to_check:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                problems.append(
                    f"  {label}: {describe(obj)}, Kubernetes {version}: {path}: {e.message}"
                )
            except kubernetes_validate.SchemaNotFoundError:
                schema = THIRD_PARTY_SCHEMAS.get((obj["apiVersion"], obj["kind"]))
                if schema is None:
                    problems.append(
                        f"  {label}: {describe(obj)}: {obj['apiVersion']} {obj['kind']} is no "
                        "Kubernetes kind; add a minimal schema to THIRD_PARTY_SCHEMAS"
                    )
                    continue
                notes.add(obj["kind"])
                for error in jsonschema.Draft202012Validator(schema).iter_errors(obj):
                    path = ".".join(str(p) for p in error.path)
                    problems.append(f"  {label}: {describe(obj)}: {path}: {error.message}")
    if problems:
        raise CheckFailed("invalid objects:\n" + "\n".join(dict.fromkeys(problems)))
    extra = (
        f" ({', '.join(sorted(notes))}: not a Kubernetes kind, against a minimal schema)"
        if notes
        else ""
    )
    return (
        f"{len(to_check) - len(crds)} rendered objects and {len(crds)} CRDs valid for Kubernetes "
        f"{' and '.join(KUBERNETES_VERSIONS)}{extra}"
    )


Rule = tuple[str, str, str]


def rules_by_scope(objects: list[dict[str, Any]]) -> tuple[dict[str, set[Rule]], list[str]]:
    scopes: dict[str, set[Rule]] = {}
    problems = []
    for obj in objects:
        if obj["kind"] not in ("Role", "ClusterRole"):
            continue
        scope = (
            "cluster-wide (ClusterRole)"
            if obj["kind"] == "ClusterRole"
            else f"namespace {obj['metadata']['namespace']} (Role)"
        )
        rules = scopes.setdefault(scope, set())
        for rule in obj.get("rules") or []:
            for key in ("resourceNames", "nonResourceURLs"):
                if rule.get(key):
                    problems.append(f"  {describe(obj)}: unexpected {key} {rule[key]}")
            for group in rule.get("apiGroups", []):
                for resource in rule.get("resources", []):
                    for verb in rule.get("verbs", []):
                        rules.add((group, resource, verb))
    return scopes, problems


def binding_problems(objects: list[dict[str, Any]], namespace: str) -> list[str]:
    """Every role is bound to the operator's ServiceAccount, which its pods run as."""
    accounts = find(objects, "ServiceAccount")
    deployments = find(objects, "Deployment")
    if len(accounts) != 1 or len(deployments) != 1:
        return [
            f"  expected one ServiceAccount and one Deployment, "
            f"got {len(accounts)} and {len(deployments)}"
        ]
    account = accounts[0]["metadata"]["name"]
    problems = []
    if deployments[0]["spec"]["template"]["spec"].get("serviceAccountName") != account:
        problems.append(f"  the Deployment does not run as the ServiceAccount {account}")
    expected_subject = [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]
    for role in [o for o in objects if o["kind"] in ("Role", "ClusterRole")]:
        bindings = [
            b
            for b in find(objects, role["kind"] + "Binding")
            if b["roleRef"]
            == {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": role["kind"],
                "name": role["metadata"]["name"],
            }
            and b["metadata"].get("namespace") == role["metadata"].get("namespace")
        ]
        if not bindings:
            problems.append(f"  {describe(role)} is not bound")
        for binding in bindings:
            if binding.get("subjects") != expected_subject:
                problems.append(
                    f"  {describe(binding)} binds {binding.get('subjects')}, "
                    f"not the ServiceAccount {account} in {namespace}"
                )
    return problems


def check_rbac(cases: list[Case], operator: str) -> str:
    problems = []
    for case in cases:
        expected, _ = rules_by_scope(operator_objects(operator, "rbac", *case.watch_flags()))
        got, shape = rules_by_scope(case.objects)
        case_problems = shape + binding_problems(case.objects, case.namespace)
        for scope in sorted(expected.keys() | got.keys()):
            want, have = expected.get(scope, set()), got.get(scope, set())
            if scope not in got:
                case_problems.append(f"  {scope}: no role in the chart; the operator needs one")
            elif scope not in expected:
                case_problems.append(
                    f"  {scope}: the chart grants rules the operator does not need there"
                )
            for group, resource, verb in sorted(want - have):
                case_problems.append(
                    f"  {scope}: missing {verb} on {resource} (apiGroup {group!r})"
                )
            for group, resource, verb in sorted(have - want):
                case_problems.append(f"  {scope}: extra {verb} on {resource} (apiGroup {group!r})")
        if case_problems:
            flags = " ".join(case.watch_flags())
            problems.append(
                f"{case.label}: the chart's RBAC differs from `tributary-operator rbac {flags}`:\n"
                + "\n".join(case_problems)
            )
    if problems:
        raise CheckFailed("\n".join(problems))
    return (
        "RBAC rules equal `tributary-operator rbac` per scope, "
        "bound to the operator's ServiceAccount"
    )


# Fields of the operator's pod that no value changes: they must be what `install` prints.
FIXED_CONTAINER_FIELDS = ["name", "ports", "readinessProbe", "livenessProbe", "securityContext"]


def pod_problems(case: Case, operator: str) -> list[str]:
    installed = operator_objects(operator, "install", *case.watch_flags())
    problems = []
    want_pod = find(installed, "Deployment")[0]["spec"]["template"]["spec"]
    deployments = find(case.objects, "Deployment")
    if len(deployments) != 1:
        return [f"  {len(deployments)} Deployments; expected one"]
    pod = deployments[0]["spec"]["template"]["spec"]
    (want,), (got,) = want_pod["containers"], pod["containers"]
    for key in FIXED_CONTAINER_FIELDS:
        if got.get(key) != want.get(key):
            problems.append(f"  container {key}: chart {got.get(key)}, install {want.get(key)}")
    if pod.get("securityContext") != want_pod["securityContext"]:
        problems.append(
            f"  pod securityContext: chart {pod.get('securityContext')}, "
            f"install {want_pod['securityContext']}"
        )
    env = {e["name"]: e for e in got.get("env", [])}
    for entry in want["env"]:
        if entry["name"] == "TRIBUTARY_CONTROLLER_ADDRESS":
            continue  # below: it names this release's Service
        if env.get(entry["name"]) != entry:
            problems.append(
                f"  env {entry['name']}: chart {env.get(entry['name'])}, install {entry}"
            )
    if "TRIBUTARY_WATCH_NAMESPACE" in env and not any(
        e["name"] == "TRIBUTARY_WATCH_NAMESPACE" for e in want["env"]
    ):
        problems.append(
            "  env TRIBUTARY_WATCH_NAMESPACE is set, but the operator should watch all namespaces"
        )
    if got["args"][0] != "run":
        problems.append(f"  args {got['args']} do not start with `run`")

    # Brokers are told the address of the controller Service, which selects only the
    # leader among the operator's pods.
    services = [
        s
        for s in find(case.objects, "Service")
        if LEADER_LABEL in s["spec"].get("selector", {})
    ]
    if len(services) != 1:
        return problems + [f"  {len(services)} Services select the leader label; expected one"]
    service = services[0]
    # The leader labels its pod with its Lease's name: the Service must select that.
    lease = next(
        (a.split("=", 1)[1] for a in got["args"] if a.startswith("--lease-name=")),
        "tributary-operator",
    )
    if service["spec"]["selector"][LEADER_LABEL] != lease:
        problems.append(
            f"  the controller Service selects {LEADER_LABEL}="
            f"{service['spec']['selector'][LEADER_LABEL]}, but the leader labels its pod with "
            f"its Lease's name, {lease}"
        )
    port = service["spec"]["ports"][0]
    address = f"{service['metadata']['name']}.{case.namespace}.svc:{port['port']}"
    if case.merged.get("controllerAddress"):
        address = case.merged["controllerAddress"]
    given = env.get("TRIBUTARY_CONTROLLER_ADDRESS", {}).get("value")
    if given != address:
        problems.append(f"  brokers are given the controller address {given}, not {address}")
    if port["targetPort"] != "controller" or port["port"] != 9093:
        problems.append(f"  the controller Service's port is {port}, not 9093 to `controller`")
    template_labels = deployments[0]["spec"]["template"]["metadata"]["labels"]
    for key, value in service["spec"]["selector"].items():
        if key != LEADER_LABEL and template_labels.get(key) != value:
            problems.append(f"  the controller Service selects {key}={value}, which the pods lack")
    return problems


def same_as_install(case: Case, operator: str) -> list[str]:
    """The default values make what `install` prints, less the Namespace and the CRDs."""
    installed = [
        o
        for o in operator_objects(operator, "install", *case.watch_flags())
        if o["kind"] not in ("Namespace", "CustomResourceDefinition")
    ]
    want_names = {describe(o) for o in installed}
    got_names = {describe(o) for o in case.objects}
    problems = [f"  only install makes {name}" for name in sorted(want_names - got_names)]
    problems += [f"  only the chart makes {name}" for name in sorted(got_names - want_names)]
    want = find(installed, "Deployment")[0]
    got = find(case.objects, "Deployment")[0]
    if got["spec"]["replicas"] != want["spec"]["replicas"]:
        problems.append(
            f"  replicas: chart {got['spec']['replicas']}, install {want['spec']['replicas']}"
        )
    want_container = want["spec"]["template"]["spec"]["containers"][0]
    got_container = dict(got["spec"]["template"]["spec"]["containers"][0])
    got_container.pop("imagePullPolicy", None)
    for key in sorted(want_container.keys() | got_container.keys()):
        if want_container.get(key) != got_container.get(key):
            problems.append(
                f"  container {key}: chart {got_container.get(key)}, "
                f"install {want_container.get(key)}"
            )
    return problems


def check_pods(cases: list[Case], operator: str) -> str:
    problems = []
    for case in cases:
        case_problems = pod_problems(case, operator)
        if case.label == "default values":
            case_problems += same_as_install(case, operator)
        if case_problems:
            problems.append(
                f"{case.label} (release {case.release} in {case.namespace}), compared with "
                f"`tributary-operator install {' '.join(case.watch_flags())}`:\n"
                + "\n".join(dict.fromkeys(case_problems))
            )
    if problems:
        raise CheckFailed("\n".join(problems))
    return (
        "operator pods as `tributary-operator install` makes them, brokers given the controller "
        "Service's address; default values make the same objects"
    )


def check_schema() -> str:
    wrong = [
        ({"replicaCount": "two"}, "replicaCount"),
        ({"leaderElection": {"leaseDurationSeconds": "15s"}}, "leaseDurationSeconds"),
        ({"metrics": {"serviceMonitor": {"enabled": "yes"}}}, "enabled"),
    ]
    first = ""
    with helm.Chart.load(CHART) as chart:
        for values, key in wrong:
            try:
                chart.render(values, name=DEFAULT_RELEASE[0], namespace=DEFAULT_RELEASE[1])
            except helm.HelmValuesError as error:
                message = str(error)
                if key not in message:
                    raise CheckFailed(
                        f"rendering with {values} fails, but the message does not "
                        f"name {key}:\n{message}"
                    ) from None
                first = first or next(line for line in message.splitlines() if key in line).strip(
                    " -"
                )
                continue
            raise CheckFailed(f"values.schema.json accepts {values}; it must reject the wrong type")
    return f'values.schema.json rejects wrong types (replicaCount: "two": {first})'


def main() -> int:
    global CHART  # noqa: PLW0603
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--operator", required=True, help="the tributary-operator binary")
    parser.add_argument("--chart", type=Path, default=CHART, help=f"the chart (default {CHART})")
    args = parser.parse_args()
    CHART = args.chart

    cases = load_cases()
    render_all = lambda: render(cases)  # noqa: E731
    checks = [
        check_crds_in_sync,
        lambda: check_lint(cases),
        render_all,
        lambda: check_notes(cases),
        lambda: check_valid(cases),
        lambda: check_rbac(cases, args.operator),
        lambda: check_pods(cases, args.operator),
        check_schema,
    ]
    failed = False
    for check in checks:
        try:
            passed = check()
        except CheckFailed as failure:
            print(f"FAILED: {failure}")
            failed = True
            if check is render_all:
                break  # the rest checks what it renders
            continue
        if passed:
            print(passed)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
