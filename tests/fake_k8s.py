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
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kubernetes_validate

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


class FakeKubernetes:
    def __init__(self, workdir: Path, run_pods: bool = True, pod_security: dict[str, str] | None = None) -> None:
        self.workdir, self.run_pods = workdir, run_pods
        self.pod_security = namespace_pod_security() if pod_security is None else pod_security
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
                try:
                    code, obj, text = fake.route(method, url.path.strip("/").split("/"), parse_qs(url.query),
                                                 self._body() if method in ("POST", "PATCH") else None)
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

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeKubernetes:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def api_client(self) -> Any:
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = self.url
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
            key = (ns, p[6])
            if method == "GET":
                return 200, self.jobs[key], False
            if method == "DELETE":
                del self.jobs[key]
                self.deleted.append(("Job", ns, p[6]))
                return 200, status, False
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
