"""The Kubernetes manifests (manifests/), checked offline: no cluster is reachable from here.

Each overlay is rendered with a real kustomize (the one built into kubectl, or a standalone `kustomize`) and
every object it yields is validated with kubernetes-validate against the strict schemas (unknown fields are
errors) of one pinned Kubernetes version. Then the properties the pipeline depends on are asserted: RBAC that
covers exactly what the components create at run time, the sandbox NetworkPolicy, the gVisor RuntimeClass,
the S3 server with its bucket, quotas and priorities.
"""

from __future__ import annotations

import functools
import importlib
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
OVERLAYS = ("standalone", "store", "kubeflow-store")
FIXTURES = Path(__file__).resolve().parent / "fixtures"
OPERATOR_GUIDE = ROOT / "docs" / "operator.md"

# The Kubernetes version the manifests are validated against. kubernetes-validate 1.37.0 ships schemas for
# 1.25 through 1.37; 1.32 is the oldest release still common on managed clusters that has every API used here.
K8S_VERSION = "1.32"

# Modules whose Kubernetes objects are created at run time, each exposing RBAC_RULES.
RBAC_MODULES = ("cure.sandbox.k8s", "cure.train.k8s", "cure.train.trainjob")
SANDBOX_LABEL = ("app.kubernetes.io/component", "cure-sandbox")


# --- rendering and validation ---------------------------------------------------------------------------------


def _kustomize_command() -> list[str]:
    """A real kustomize: a standalone binary, else the one built into kubectl (v1.14+)."""
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    pytest.fail(
        "no kustomize found: install kubectl (it has kustomize built in) or a kustomize binary on PATH; "
        "the manifests cannot be rendered without one"
    )


@functools.cache
def render(overlay: str) -> tuple[dict[str, Any], ...]:
    """The objects `kustomize build manifests/overlays/<overlay>` yields."""
    cmd = [*_kustomize_command(), str(MANIFESTS / "overlays" / overlay)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(proc.stdout) if doc)


def object_name(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj.get('kind')} {where}{meta.get('name')}"


def validation_errors(objects: list[dict[str, Any]] | tuple[dict[str, Any], ...], source: str) -> list[str]:
    """One line per invalid object: the source, the object, the field path and what is wrong."""
    errors = []
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path) or "(top level)"
            errors.append(
                f"{source}: {object_name(obj)} ({obj.get('apiVersion')}) is invalid against Kubernetes "
                f"{e.version}: at {path}: {e.message}"
            )
        except kubernetes_validate.SchemaNotFoundError as e:
            errors.append(f"{source}: {object_name(obj)}: {e.message} (not a built-in kind?)")
    return errors


def all_objects() -> list[dict[str, Any]]:
    seen: dict[tuple[str, str, str], dict[str, Any]] = {}
    for overlay in OVERLAYS:
        for obj in render(overlay):
            key = (obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
            seen[key] = obj
    return list(seen.values())


def find(objects: Any, kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def pod_specs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = obj.get("spec") or {}
    if obj["kind"] == "Pod":
        return [spec]
    template = (spec.get("template") or {}).get("spec")
    return [template] if template else []


# --- rendering and schema validation ----------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_builds_and_every_object_validates(overlay: str) -> None:
    objects = render(overlay)
    assert objects, f"kustomize rendered nothing for overlay {overlay}"
    errors = validation_errors(objects, f"manifests/overlays/{overlay}")
    assert not errors, "\n".join(errors)


def test_every_manifest_file_is_part_of_an_overlay() -> None:
    """Every object written under manifests/ reaches a cluster through some overlay (so it is validated)."""
    rendered = {(o["kind"], o["metadata"]["name"]) for o in all_objects()}
    orphans = []
    for path in sorted(MANIFESTS.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and (doc["kind"], doc["metadata"]["name"]) not in rendered:  # lists: patches
                orphans.append(f"{path.relative_to(ROOT)}: {doc['kind']} {doc['metadata']['name']}")
    assert not orphans, "objects no overlay renders (add the file to a kustomization.yaml):\n" + "\n".join(orphans)


def test_broken_manifest_fails_validation_with_a_clear_message() -> None:
    source = "tests/fixtures/broken-manifest.yaml"
    objects = [d for d in yaml.safe_load_all((FIXTURES / "broken-manifest.yaml").read_text()) if d]
    errors = validation_errors(objects, source)
    assert len(errors) == len(objects) == 2, errors
    typo, wrong_type = errors
    assert typo.startswith(f"{source}: NetworkPolicy cure/typo-policy (networking.k8s.io/v1) is invalid")
    assert f"Kubernetes {K8S_VERSION}" in typo
    assert "at spec:" in typo and "'policyType' was unexpected" in typo
    assert wrong_type.startswith(f"{source}: Job cure/bad-backoff (batch/v1) is invalid")
    assert "at spec.backoffLimit:" in wrong_type and "'six' is not of type 'integer'" in wrong_type


def test_validation_is_pinned_to_a_supported_kubernetes_version() -> None:
    supported = kubernetes_validate.utils.all_versions()
    assert any(v.startswith(K8S_VERSION + ".") for v in supported), (
        f"kubernetes-validate {kubernetes_validate.__version__} has no schemas for {K8S_VERSION}: {supported}"
    )


def test_every_container_image_is_pinned() -> None:
    for obj in all_objects():
        for spec in pod_specs(obj):
            for c in spec.get("containers", []) + spec.get("initContainers", []):
                image = c["image"]
                tag = image.rsplit("/", 1)[-1].partition(":")[2]
                assert tag and tag != "latest" and re.search(r"\d", tag), (
                    f"{object_name(obj)}: container {c['name']} image {image!r} must carry a pinned version tag"
                )


def test_pods_run_unprivileged() -> None:
    for obj in all_objects():
        for spec in pod_specs(obj):
            assert spec.get("securityContext", {}).get("runAsNonRoot") is True, object_name(obj)
            for c in spec["containers"]:
                sc = c.get("securityContext", {})
                assert sc.get("allowPrivilegeEscalation") is False, f"{object_name(obj)}/{c['name']}"
                assert sc.get("capabilities", {}).get("drop") == ["ALL"], f"{object_name(obj)}/{c['name']}"


# --- RBAC -----------------------------------------------------------------------------------------------------------


def _triples(rules: list[dict[str, Any]], source: str) -> set[tuple[str, str, str]]:
    out = set()
    for rule in rules:
        for key in ("apiGroups", "resources", "verbs"):
            assert isinstance(rule.get(key), list) and rule[key], f"{source}: rule {rule} needs a non-empty {key} list"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    out.add((group, resource, verb))
    return out


def _component_rules() -> set[tuple[str, str, str]]:
    union: set[tuple[str, str, str]] = set()
    for name in RBAC_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as e:
            pytest.fail(
                f"{name} cannot be imported ({e}): it must define RBAC_RULES (the Kubernetes permissions its "
                f"stage needs at run time) so the shipped Role can be checked against it"
            )
        rules = getattr(module, "RBAC_RULES", None)
        assert isinstance(rules, list) and rules, f"{name}.RBAC_RULES must be a non-empty list of rule dicts"
        union |= _triples(rules, f"{name}.RBAC_RULES")
    return union


def test_role_is_exactly_what_the_components_need() -> None:
    """Covers every RBAC_RULES entry of the stages that create objects, and grants nothing more."""
    roles = find(render("standalone"), "Role", "cure-pipeline")
    assert len(roles) == 1
    role = roles[0]
    assert role["metadata"]["namespace"] == "cure"
    granted = _triples(role["rules"], "Role cure-pipeline")
    needed = _component_rules()
    missing = sorted(needed - granted)
    extra = sorted(granted - needed)
    assert not missing, f"manifests/base/role.yaml lacks (apiGroup, resource, verb): {missing}"
    assert not extra, f"manifests/base/role.yaml grants more than the components need: {extra}"


def test_rbac_is_namespaced_and_has_no_wildcards() -> None:
    objects = all_objects()
    assert not find(objects, "ClusterRole") and not find(objects, "ClusterRoleBinding")
    for role in find(objects, "Role"):
        for group, resource, verb in _triples(role["rules"], object_name(role)):
            assert "*" not in (group, resource, verb), f"{object_name(role)} uses a wildcard"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rolebinding_binds_the_pipeline_accounts(overlay: str) -> None:
    objects = render(overlay)
    (binding,) = find(objects, "RoleBinding", "cure-pipeline")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cure-pipeline"}
    subjects = {(s["kind"], s["namespace"], s["name"]) for s in binding["subjects"]}
    assert ("ServiceAccount", "cure", "cure-pipeline") in subjects
    assert ("ServiceAccount", "kubeflow", "pipeline-runner") in subjects  # KFP standalone's run identity
    assert find(objects, "ServiceAccount", "cure-pipeline")


def test_sandbox_and_train_accounts_get_no_api_token() -> None:
    objects = render("standalone")
    for name in ("cure-sandbox", "cure-train"):
        (sa,) = find(objects, "ServiceAccount", name)
        assert sa["automountServiceAccountToken"] is False, name


# --- sandbox isolation, scheduling -----------------------------------------------------------------------------


def test_networkpolicy_denies_all_traffic_of_sandbox_pods() -> None:
    policies = [
        p for p in find(render("standalone"), "NetworkPolicy")
        if p["spec"]["podSelector"].get("matchLabels") == {SANDBOX_LABEL[0]: SANDBOX_LABEL[1]}
    ]
    assert len(policies) == 1, "exactly one NetworkPolicy must select the sandbox pods by their label"
    spec = policies[0]["spec"]
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
    assert not spec.get("egress") and not spec.get("ingress"), "any rule would allow some traffic"
    assert policies[0]["metadata"]["namespace"] == "cure"


def test_sandbox_label_matches_the_job_builder() -> None:
    """The label the NetworkPolicy selects is the one cure.sandbox.k8s puts on sandbox pods."""
    try:
        module = importlib.import_module("cure.sandbox.k8s")
    except ImportError as e:
        pytest.fail(f"cure.sandbox.k8s cannot be imported ({e}); it builds the sandbox Jobs")
    label = getattr(module, "COMPONENT_LABEL", None)
    assert label == {SANDBOX_LABEL[0]: SANDBOX_LABEL[1]}, (
        f"cure.sandbox.k8s.COMPONENT_LABEL is {label!r}; manifests/base/networkpolicy-sandbox.yaml selects "
        f"sandbox pods by {SANDBOX_LABEL[0]}: {SANDBOX_LABEL[1]}"
    )


def test_gvisor_runtime_class() -> None:
    (rc,) = find(render("standalone"), "RuntimeClass", "gvisor")
    assert rc["handler"] == "runsc"
    assert "namespace" not in rc["metadata"], "RuntimeClass is cluster-scoped"


def test_quotas_and_priority_classes() -> None:
    objects = render("standalone")
    classes = {p["metadata"]["name"]: p for p in find(objects, "PriorityClass")}
    assert {"cure-gpu", "cure-sandbox"} <= set(classes)
    for pc in classes.values():
        assert pc["globalDefault"] is False and pc["value"] < 1_000_000_000  # below system-critical
    quotas = {q["metadata"]["name"]: q["spec"] for q in find(objects, "ResourceQuota")}
    assert "requests.nvidia.com/gpu" in quotas["cure-gpu"]["hard"]
    for spec in quotas.values():
        for expr in (spec.get("scopeSelector") or {}).get("matchExpressions", []):
            if expr["scopeName"] == "PriorityClass":
                assert set(expr["values"]) <= set(classes), f"quota scoped to an unknown PriorityClass: {expr}"


# --- the object store ----------------------------------------------------------------------------------------


def test_store_overlay_has_s3_server_service_and_bucket() -> None:
    objects = render("store")
    (sts,) = find(objects, "StatefulSet", "cure-s3")
    (svc,) = find(objects, "Service", "cure-s3")
    (secret,) = find(objects, "Secret", "cure-minio")
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert all(pod_labels.get(k) == v for k, v in svc["spec"]["selector"].items())
    assert {9000} == {p["port"] for p in svc["spec"]["ports"]}
    [c] = pod_specs(sts)[0]["containers"]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"s3": 8333}
    # no MinIO image (Docker Hub removed them); SeaweedFS pinned by tag and digest
    assert re.fullmatch(r"chrislusf/seaweedfs:\d+\.\d+@sha256:[0-9a-f]{64}", c["image"]), c["image"]
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert {"/data"} == {m["mountPath"] for m in c["volumeMounts"] if m["name"] == "data"}
    # The endpoint in the Secret is the Service (name, namespace, port).
    keys = set(secret["stringData"])
    assert {"CURE_S3_ENDPOINT", "CURE_S3_ACCESS_KEY", "CURE_S3_SECRET_KEY"} <= keys
    assert secret["stringData"]["CURE_S3_ENDPOINT"] == "http://cure-s3.cure.svc.cluster.local:9000"
    # Every secret key referenced exists in the Secret (a typo would leave the pod in CreateContainerConfigError).
    refs = [(e["valueFrom"]["secretKeyRef"]) for e in c["env"] if "valueFrom" in e]
    assert refs and all(r["name"] == "cure-minio" and r["key"] in keys for r in refs)
    # The S3 identity comes from the Secret's keys, the bucket the store opens is created at start.
    start = " ".join(c["args"])
    assert '"$ACCESS_KEY" "$SECRET_KEY"' in start and "-s3.config=/tmp/s3.json" in start and "-s3.port=8333" in start
    hook = " ".join(c["lifecycle"]["postStart"]["exec"]["command"])
    assert "s3.bucket.create -name cure" in hook
    assert not find(render("standalone"), "StatefulSet"), "the standalone overlay must not deploy an S3 server"


# --- submitting runs: the documented kfp CLI lines parse with the installed kfp CLI --------------------------


def _doc_commands(prefix: str) -> list[list[str]]:
    """Shell commands in the operator guide's code blocks that start with `prefix` (continuations joined)."""
    text = OPERATOR_GUIDE.read_text()
    commands = []
    for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", text, re.DOTALL):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith(prefix):
                commands.append(shlex.split(line))
    return commands


def test_operator_guide_applies_existing_overlays() -> None:
    applied = [c[c.index("-k") + 1] for c in _doc_commands("kubectl apply") if "-k" in c]
    assert applied, "the guide must show `kubectl apply -k manifests/overlays/...`"
    for path in applied:
        assert (ROOT / path / "kustomization.yaml").is_file(), f"guide applies {path}, which has no kustomization"


# --- Kubeflow's own store (KFP >= 2.16: SeaweedFS) ---------------------------------------------------------------


def test_kubeflow_store_overlay_lets_namespace_cure_reach_seaweedfs() -> None:
    """KFP 2.16+ serves its store as Service seaweedfs (kubeflow namespace, port 9000 -> container 8333), and its
    own NetworkPolicy admits only profile namespaces, istio-system and kubeflow's pods; the overlay adds ingress
    from namespace cure (PyTorchJob/TrainJob replicas read and write the store)."""
    [policy] = [p for p in find(render("kubeflow-store"), "NetworkPolicy", "cure-to-seaweedfs")]
    assert policy["metadata"]["namespace"] == "kubeflow"
    assert policy["spec"]["podSelector"] == {"matchLabels": {"app": "seaweedfs"}}
    [rule] = policy["spec"]["ingress"]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "cure"}}}]
    assert rule["ports"] == [{"port": 8333}]


def test_operator_guide_uses_kubeflows_current_store_service() -> None:
    """minio-service no longer exists in KFP >= 2.16: the recipe points at seaweedfs and applies the overlay."""
    text = OPERATOR_GUIDE.read_text()
    assert "//minio-service" not in text  # no endpoint on the Service KFP 2.16+ removed
    assert "http://seaweedfs.kubeflow.svc.cluster.local:9000" in text
    applied = [c[c.index("-k") + 1] for c in _doc_commands("kubectl apply") if "-k" in c]
    assert "manifests/overlays/kubeflow-store" in applied
