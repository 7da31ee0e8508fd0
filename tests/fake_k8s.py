"""A fake Kubernetes API server on loopback, for the sandbox launcher's tests with the real ``kubernetes`` client.

It serves the calls :mod:`cure.sandbox.k8s` makes (ConfigMaps: create, patch, delete; Jobs: create, read status,
delete; Pods: read, list by label, read log), validates every created object against the Kubernetes schema, and
"runs" a created Job the way the kubelet would run its pods: each completion index is a process running the
container's command (``python -m cure.sandbox.shard`` with the Job's arguments) on the ConfigMaps' files, and its
stdout becomes the pod log. With ``run_pods=False`` a Job stays active forever (for cancellation tests).

Pod Security admission: a Job's pod template is checked against the level the namespace enforces (by default the
``pod-security.kubernetes.io/enforce`` label of manifests/base/namespace.yaml, for every namespace). The API server
admits such a Job and then refuses each of its pods; the fake fails the Job at once with reason ``PodSecurity``
(the real one would retry until ``activeDeadlineSeconds``). Violations of the ``warn`` level are recorded in
``warnings``, as the API server returns them in ``Warning`` headers.

Authentication and RBAC: every request carries a bearer token naming a ServiceAccount (:meth:`FakeKubernetes.token`,
:meth:`FakeKubernetes.api_client`); a request without one is 401. Each request is authorised against the Roles,
ClusterRoles and their bindings that ``kubectl kustomize manifests/overlays/<overlay>`` renders (plus
``extra_rbac``: e.g. KFP's own ``pipeline-runner`` Role in namespace ``kubeflow``), by resource *and* subresource
(``jobs/status``), verb, API group, namespace and the requesting account, and refused with 403 and the API server's
``Status`` (reason ``Forbidden``) otherwise. Sources restated: the request attributes (verb from method, list vs
get, subresource) from ``k8s.io/apiserver/pkg/endpoints/request/requestinfo.go``; rule matching from
``k8s.io/kubernetes/pkg/apis/rbac/v1/evaluation_helpers.go`` (``VerbMatches``, ``APIGroupMatches``,
``ResourceMatches``, ``ResourceNameMatches``) and ``plugin/pkg/auth/authorizer/rbac/rbac.go`` (a RoleBinding grants
its Role's rules in its own namespace only; a ServiceAccount subject matches ``system:serviceaccount:NS:NAME``, also
through the groups ``system:serviceaccounts`` and ``system:serviceaccounts:NS``); the 403 message from
``k8s.io/apiserver/pkg/endpoints/handlers/responsewriters/errors.go`` (``forbiddenMessage``).

Custom objects (``PyTorchJob`` kubeflow.org/v1, ``TrainJob`` trainer.kubeflow.org/v1alpha1) are served too; what
"runs" them is a ``controller`` given by the test (it starts the replicas and reports their conditions).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kubernetes_validate
import yaml
from loopback import LoopbackServer

K8S_VERSION = "1.30.0"
ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"

# Pod Security Standards (kubernetes.io/docs/concepts/security/pod-security-standards), the checks that concern
# the pods this project creates.
BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                         "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}


def namespace_pod_security() -> dict[str, str]:
    """The Pod Security labels (enforce, warn, ...) of namespace ``cure`` in manifests/base/namespace.yaml."""
    import yaml

    labels = yaml.safe_load((ROOT / "manifests/base/namespace.yaml").read_text())["metadata"]["labels"]
    prefix = "pod-security.kubernetes.io/"
    return {k.removeprefix(prefix): v for k, v in labels.items() if k.startswith(prefix) and "-version" not in k}


def pod_security_violations(pod: dict[str, Any], level: str) -> list[str]:
    """What in pod spec ``pod`` the Pod Security level ``level`` (privileged, baseline, restricted) forbids."""
    if level == "privileged":
        return []
    if level not in ("baseline", "restricted"):
        raise ValueError(f"unknown Pod Security level {level!r}")
    out = []
    containers = pod.get("containers", []) + pod.get("initContainers", []) + pod.get("ephemeralContainers", [])
    psc = pod.get("securityContext", {})
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            out.append(f"{key}=true")
    for v in pod.get("volumes", []):
        if "hostPath" in v:
            out.append(f"hostPath volume {v['name']}")
        elif level == "restricted" and not set(v) - {"name"} <= RESTRICTED_VOLUMES:
            out.append(f"volume {v['name']} of type {sorted(set(v) - {'name'})}")
    if psc.get("seccompProfile", {}).get("type") == "Unconfined":
        out.append("pod seccompProfile Unconfined")
    for c in containers:
        sc, name = c.get("securityContext", {}), c["name"]
        caps = sc.get("capabilities", {})
        if sc.get("privileged"):
            out.append(f"{name}: privileged")
        if sc.get("procMount", "Default") != "Default":
            out.append(f"{name}: procMount {sc['procMount']}")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            out.append(f"{name}: hostPort")
        seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
        if seccomp == "Unconfined":
            out.append(f"{name}: seccompProfile Unconfined")
        allowed = {"NET_BIND_SERVICE"} if level == "restricted" else BASELINE_CAPABILITIES
        if set(caps.get("add", [])) - allowed:
            out.append(f"{name}: capabilities.add {sorted(set(caps.get('add', [])) - allowed)}")
        if level == "restricted":
            if sc.get("allowPrivilegeEscalation") is not False:
                out.append(f"{name}: allowPrivilegeEscalation != false")
            if "ALL" not in caps.get("drop", []):
                out.append(f"{name}: capabilities.drop lacks ALL")
            if not sc.get("runAsNonRoot", psc.get("runAsNonRoot")):
                out.append(f"{name}: runAsNonRoot != true")
            if sc.get("runAsUser", psc.get("runAsUser")) == 0:
                out.append(f"{name}: runAsUser 0")
            if seccomp not in ("RuntimeDefault", "Localhost"):
                out.append(f"{name}: seccompProfile not RuntimeDefault or Localhost")
    return out


# --- RBAC ----------------------------------------------------------------------------------------------------

#: KFP standalone's own Role for its runner account (kubeflow/pipelines manifests/kustomize/base/pipeline/
#: pipeline-runner-role.yaml, 2.17.0): the part the pipeline uses in KFP's namespace, the workspace PVC.
KFP_RUNNER_RBAC: tuple[dict[str, Any], ...] = (
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
     "metadata": {"name": "pipeline-runner", "namespace": "kubeflow"},
     "rules": [{"apiGroups": [""], "resources": ["persistentvolumes", "persistentvolumeclaims"], "verbs": ["*"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
     "metadata": {"name": "pipeline-runner-binding", "namespace": "kubeflow"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pipeline-runner"},
     "subjects": [{"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": "kubeflow"}]},
)
#: The identity KFP standalone runs pipeline steps as (what the launchers use in a cluster).
RUNNER = ("kubeflow", "pipeline-runner")
_RENDERED: dict[str, tuple[dict[str, Any], ...]] = {}


def rendered_manifests(overlay: str) -> tuple[dict[str, Any], ...]:
    """The objects ``kubectl kustomize manifests/overlays/<overlay>`` (or ``kustomize build``) yields."""
    import shutil

    if overlay not in _RENDERED:
        cmd = ["kustomize", "build"] if shutil.which("kustomize") else ["kubectl", "kustomize"]
        proc = subprocess.run([*cmd, str(ROOT / "manifests" / "overlays" / overlay)], capture_output=True, text=True,
                              timeout=120, check=True)
        _RENDERED[overlay] = tuple(d for d in yaml.safe_load_all(proc.stdout) if d)
    return _RENDERED[overlay]


def request_attributes(method: str, parts: list[str], query: dict[str, list[str]]) -> dict[str, str]:
    """verb, apiGroup, namespace, resource (with ``/subresource``) and name of a resource request
    (requestinfo.go: GET of a collection is list, or watch with ?watch; DELETE of one is delete, of a collection
    deletecollection)."""
    if parts[0] == "api":
        group, rest = "", parts[2:]
    else:
        group, rest = parts[1], parts[3:]
    namespace = ""
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    elif rest[:1] == ["namespaces"]:  # a namespace object itself
        rest = ["namespaces", *rest[1:]]
    resource, name = rest[0], rest[1] if len(rest) > 1 else ""
    if len(rest) > 2:
        resource += "/" + rest[2]
    if method == "GET":
        verb = ("watch" if query.get("watch", ["false"])[0] in ("true", "1") else "list") if not name else "get"
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch",
                "DELETE": "delete" if name else "deletecollection"}[method]
    return {"verb": verb, "group": group, "namespace": namespace, "resource": resource, "name": name}


def _rule_allows(rule: dict[str, Any], a: dict[str, str]) -> bool:
    """evaluation_helpers.go RuleAllows for a resource request."""
    def has(values: list[str], want: str) -> bool:
        return "*" in values or want in values

    resources = rule.get("resources", [])
    main, _, sub = a["resource"].partition("/")
    resource_ok = ("*" in resources or a["resource"] in resources
                   or (sub and f"*/{sub}" in resources) or f"{main}/*" in resources and bool(sub))
    names = rule.get("resourceNames") or []
    return (has(rule.get("verbs", []), a["verb"]) and has(rule.get("apiGroups", []), a["group"]) and resource_ok
            and (not names or a["name"] in names))


def _subject_matches(subject: dict[str, Any], binding_ns: str, sa_ns: str, sa: str) -> bool:
    """rbac.go appliesToUser, for a ServiceAccount user ``system:serviceaccount:sa_ns:sa``."""
    if subject["kind"] == "ServiceAccount":
        return subject["name"] == sa and subject.get("namespace", binding_ns) == sa_ns
    if subject["kind"] == "Group":
        return subject["name"] in ("system:serviceaccounts", f"system:serviceaccounts:{sa_ns}", "system:authenticated")
    return subject["kind"] == "User" and subject["name"] == f"system:serviceaccount:{sa_ns}:{sa}"


def authorized(objects: Any, sa_ns: str, sa: str, a: dict[str, str]) -> bool:
    """Whether the RBAC objects grant account ``sa_ns/sa`` the request ``a``."""
    roles = {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o.get("rules") or []
             for o in objects if o["kind"] in ("Role", "ClusterRole")}
    for b in objects:
        if b["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        binding_ns = b["metadata"].get("namespace", "")
        if b["kind"] == "RoleBinding" and binding_ns != a["namespace"]:
            continue  # a RoleBinding grants in its own namespace only
        ref = b["roleRef"]
        rules = roles.get((ref["kind"], binding_ns if ref["kind"] == "Role" else "", ref["name"]), [])
        if any(_subject_matches(s, binding_ns, sa_ns, sa) for s in b.get("subjects") or []) and \
                any(_rule_allows(r, a) for r in rules):
            return True
    return False


def forbidden(sa_ns: str, sa: str, a: dict[str, str]) -> dict[str, Any]:
    """The API server's 403 Status (responsewriters/errors.go forbiddenMessage)."""
    main = a["resource"].partition("/")[0]
    qualified = f"{main}.{a['group']}" if a["group"] else main
    what = f'{qualified} "{a["name"]}"' if a["name"] else qualified
    resource = f'resource "{a["resource"]}" in API group "{a["group"]}"'
    where = f' in the namespace "{a["namespace"]}"' if a["namespace"] else " at the cluster scope"
    message = (f'{what} is forbidden: User "system:serviceaccount:{sa_ns}:{sa}" cannot {a["verb"]} {resource}{where}')
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": "Forbidden", "details": {"name": a["name"], "group": a["group"], "kind": main}, "code": 403}


def _selected(obj: dict[str, Any], query: dict[str, list[str]]) -> bool:
    """Whether ``obj`` matches the request's ``labelSelector`` (equality terms only)."""
    text = query.get("labelSelector", [""])[0]
    labels = obj["metadata"].get("labels") or {}
    return all(labels.get(k) == v for k, _, v in (t.partition("=") for t in text.split(",") if t))


class FakeKubernetes(LoopbackServer):
    def __init__(self, workdir: Path, run_pods: bool = True, pod_security: dict[str, str] | None = None,
                 overlay: str = "standalone", extra_rbac: tuple[dict[str, Any], ...] = KFP_RUNNER_RBAC,
                 controller: Any = None) -> None:
        self.workdir, self.run_pods = workdir, run_pods
        self.pod_security = namespace_pod_security() if pod_security is None else pod_security
        self.rbac = [o for o in rendered_manifests(overlay) if o["kind"] in
                     ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")] + list(extra_rbac)
        self.controller = controller
        self.forbidden: list[dict[str, Any]] = []  # the Status of every 403
        self.custom: dict[tuple[str, str, str], dict] = {}  # (plural, namespace, name) -> object
        self.pvcs: dict[tuple[str, str], dict] = {}
        self.warnings: list[str] = []
        self.configmaps: dict[tuple[str, str], dict] = {}
        self.jobs: dict[tuple[str, str], dict] = {}
        self.created_jobs: list[dict] = []
        self.pods: dict[tuple[str, str], dict] = {}
        self.logs: dict[tuple[str, str], str] = {}
        self.requests: list[tuple[str, str]] = []
        self.deleted: list[tuple[str, str, str]] = []  # (kind, namespace, name)
        self.job_created = threading.Event()
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _body(self) -> Any:
                n = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(n)) if n else None

            def _send(self, code: int, obj: Any, text: bool = False) -> None:
                data = obj.encode() if text else json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain" if text else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                url = urlsplit(self.path)
                with fake.lock:
                    fake.requests.append((method, url.path))
                parts, query = url.path.strip("/").split("/"), parse_qs(url.query)
                body = self._body() if method in ("POST", "PATCH", "DELETE") else None
                who = fake.account(self.headers.get("Authorization", ""))
                if who is None:
                    return self._send(401, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                            "message": "Unauthorized", "reason": "Unauthorized", "code": 401})
                attrs = request_attributes(method, parts, query)
                if not authorized(fake.rbac, *who, attrs):
                    status = forbidden(*who, attrs)
                    with fake.lock:
                        fake.forbidden.append(status)
                    return self._send(403, status)
                try:
                    code, obj, text = fake.route(method, parts, query, body)
                except KeyError as e:
                    code, obj, text = 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                            "reason": "NotFound", "code": 404, "message": str(e)}, False
                self._send(code, obj, text)

            def do_GET(self) -> None:  # noqa: N802
                self._handle("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._handle("POST")

            def do_PATCH(self) -> None:  # noqa: N802
                self._handle("PATCH")

            def do_DELETE(self) -> None:  # noqa: N802
                self._handle("DELETE")

        self._serve(Handler)

    @staticmethod
    def token(namespace: str, account: str) -> str:
        """The bearer token of ServiceAccount ``namespace/account`` (what a pod's projected token would be)."""
        return f"fake-sa-token.{namespace}.{account}"

    def account(self, authorization: str) -> tuple[str, str] | None:
        """(namespace, name) of the ServiceAccount a request authenticates as; None: no valid token."""
        prefix = "Bearer fake-sa-token."
        if not authorization.startswith(prefix):
            return None
        namespace, _, name = authorization[len(prefix):].partition(".")
        return (namespace, name) if namespace and name else None

    def api_client(self, account: tuple[str, str] = RUNNER) -> Any:
        """A ``kubernetes`` ApiClient authenticated as ``account`` (default: KFP standalone's runner)."""
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = self.url
        cfg.api_key = {"authorization": "Bearer " + self.token(*account)}
        return client.ApiClient(cfg)

    def add_pod(self, namespace: str, name: str) -> str:
        uid = str(uuid.uuid4())
        self.pods[(namespace, name)] = {"apiVersion": "v1", "kind": "Pod",
                                        "metadata": {"name": name, "namespace": namespace, "uid": uid},
                                        "status": {"phase": "Running"}}
        return uid

    # --- the API ------------------------------------------------------------------------------------------

    def route(self, method: str, p: list[str], query: dict[str, list[str]], body: Any) -> tuple[int, Any, bool]:
        status = {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        if p[:3] == ["api", "v1", "namespaces"] and p[4] == "configmaps":
            ns = p[3]
            if method == "POST":
                body["metadata"]["namespace"] = ns
                body["metadata"]["uid"] = str(uuid.uuid4())
                kubernetes_validate.validate(body, K8S_VERSION, strict=True)
                self.configmaps[(ns, body["metadata"]["name"])] = body
                return 201, body, False
            key = (ns, p[5])
            if method == "PATCH":
                cm = self.configmaps[key]
                cm["metadata"].update(body.get("metadata", {}))
                kubernetes_validate.validate(cm, K8S_VERSION, strict=True)
                return 200, cm, False
            if method == "DELETE":
                del self.configmaps[key]
                self.deleted.append(("ConfigMap", ns, p[5]))
                return 200, status, False
        if p[:3] == ["apis", "batch", "v1"] and p[5] == "jobs":
            ns = p[4]
            if method == "POST":
                kubernetes_validate.validate(body, K8S_VERSION, strict=True)
                body["metadata"]["uid"] = str(uuid.uuid4())
                body["status"] = {"active": body["spec"]["completions"]}
                self.jobs[(ns, body["metadata"]["name"])] = body
                self.created_jobs.append(body)
                pod = body["spec"]["template"]["spec"]
                self.warnings += pod_security_violations(pod, self.pod_security.get("warn", "privileged"))
                refused = pod_security_violations(pod, self.pod_security.get("enforce", "privileged"))
                if refused:
                    message = (f'pods are forbidden: violates PodSecurity "{self.pod_security["enforce"]}:latest": '
                               + "; ".join(refused))
                    body["status"] = {"failed": 0, "conditions": [
                        {"type": "Failed", "status": "True", "reason": "PodSecurity", "message": message}]}
                elif self.run_pods:
                    self._run_pods(ns, body)
                self.job_created.set()
                return 201, body, False
            if len(p) == 6 and method == "GET":  # list, by label selector
                items = [j for (n, _), j in self.jobs.items() if n == ns and _selected(j, query)]
                return 200, {"apiVersion": "batch/v1", "kind": "JobList", "metadata": {}, "items": items}, False
            key = (ns, p[6])
            if method == "GET":  # the Job, or its status subresource (the same object)
                return 200, self.jobs[key], False
            if method == "DELETE":
                del self.jobs[key]
                self.deleted.append(("Job", ns, p[6]))
                return 200, status, False
        if p[:3] == ["api", "v1", "namespaces"] and p[4] == "persistentvolumeclaims":
            key = (p[3], p[5])
            if method == "GET":
                return 200, self.pvcs[key], False
            if method == "DELETE":
                del self.pvcs[key]
                self.deleted.append(("PersistentVolumeClaim", p[3], p[5]))
                return 200, status, False
        if p[0] == "apis" and len(p) >= 6 and p[1] in ("kubeflow.org", "trainer.kubeflow.org"):
            return self._custom(method, p[1], p[2], p[4], p[5], p[6] if len(p) > 6 else "", query, body)
        if p[:3] == ["api", "v1", "namespaces"] and p[4] == "pods":
            ns = p[3]
            if len(p) == 5:
                sel = dict(kv.split("=") for kv in query["labelSelector"][0].split(","))
                items = [pod for (n, _), pod in self.pods.items() if n == ns
                         and all(pod["metadata"].get("labels", {}).get(k) == v for k, v in sel.items())]
                return 200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}, False
            if len(p) == 7 and p[6] == "log":
                return 200, self.logs[(ns, p[5])], True
            return 200, self.pods[(ns, p[5])], False
        return 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404,
                     "message": f"fake API: no route for {method} /{'/'.join(p)}"}, False

    def _custom(self, method: str, group: str, version: str, ns: str, plural: str, name: str,
                query: dict[str, list[str]], body: Any) -> tuple[int, Any, bool]:
        """PyTorchJobs and TrainJobs: stored as sent; the ``controller`` starts them and reports their status."""
        if method == "POST":
            if (plural, ns, body["metadata"]["name"]) in self.custom:
                return 409, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists",
                             "code": 409, "message": f'{plural}.{group} "{body["metadata"]["name"]}" already exists'}, False
            body["metadata"].update(namespace=ns, uid=str(uuid.uuid4()))
            if self.controller is not None:
                try:  # the controller validates against the CRD's schema, as the API server does
                    self.controller.create(body)
                except ValueError as e:
                    return 422, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Invalid",
                                 "code": 422, "message": str(e)}, False
            self.custom[(plural, ns, body["metadata"]["name"])] = body
            return 201, body, False
        if method == "GET" and not name:
            items = [o for (pl, n, _), o in self.custom.items() if pl == plural and n == ns and _selected(o, query)]
            return 200, {"apiVersion": f"{group}/{version}", "kind": "List", "metadata": {}, "items": items}, False
        obj = self.custom[(plural, ns, name)]
        if method == "GET":
            if self.controller is not None:
                obj["status"] = self.controller.status(obj)
            return 200, obj, False
        if method == "DELETE":
            del self.custom[(plural, ns, name)]
            self.deleted.append((obj["kind"], ns, name))
            if self.controller is not None:
                self.controller.delete(obj)
            return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}, False
        return 405, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 405}, False

    def add_pvc(self, namespace: str, name: str) -> None:
        """A PersistentVolumeClaim, e.g. the workspace Argo creates for a run (``<workflow>-kfp-workspace``)."""
        self.pvcs[(namespace, name)] = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                                        "metadata": {"name": name, "namespace": namespace}}

    def _run_pods(self, ns: str, job: dict) -> None:
        """Each index: write the projected ConfigMap files, run the container's command, keep its stdout."""
        name = job["metadata"]["name"]
        pod_spec = job["spec"]["template"]["spec"]
        mount = self.workdir / name
        mount.mkdir(parents=True)
        for src in pod_spec["volumes"][1]["projected"]["sources"]:
            for fname, data in self.configmaps[(ns, src["configMap"]["name"])]["binaryData"].items():
                (mount / fname).write_bytes(base64.b64decode(data))
        container = pod_spec["containers"][0]
        cmd = [sys.executable if a == "python" else a for a in container["command"]]
        args = [str(mount) if a == "/shard" else a for a in container["args"]]
        env = {**os.environ, "PYTHONPATH": str(SRC), **{e["name"]: e["value"] for e in container["env"]}}
        env["HOME"] = str(self.workdir)
        for i in range(job["spec"]["completions"]):
            proc = subprocess.run([*cmd, *args], env={**env, "JOB_COMPLETION_INDEX": str(i)}, capture_output=True,
                                  text=True, timeout=300)
            assert proc.returncode == 0, proc.stderr[-3000:]
            pod = f"{name}-{i}-x"
            labels = {"cure/job": name, "batch.kubernetes.io/job-completion-index": str(i)}
            self.pods[(ns, pod)] = {"apiVersion": "v1", "kind": "Pod",
                                    "metadata": {"name": pod, "namespace": ns, "labels": labels},
                                    "status": {"phase": "Succeeded"}}
            self.logs[(ns, pod)] = "starting shard\n" + proc.stdout
        n = job["spec"]["completions"]
        job["status"] = {"succeeded": n, "conditions": [{"type": "Complete", "status": "True"}]}
