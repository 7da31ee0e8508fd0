"""Contracts of the container path that need no engine: the sandbox container is confined like the cluster's pod,
kfp's task containers are run without the auto-remove race, and the host's pip configuration is forwarded.
What needs the engine and the images runs in tests/test_containers.py (make test-containers)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cure import container_runner
from cure.sandbox.container import container_spec, pod_to_container, quantity
from cure.sandbox.k8s import build_job, sandbox_security_context

ROOT = Path(__file__).resolve().parents[1]


def test_sandbox_container_matches_the_cluster_pod() -> None:
    template = build_job("j", 3, ["cm"], image="img", workers=3, memory_mb=512, cpu="1500m", memory="3Gi",
                         tmp_size="256Mi")["spec"]["template"]
    pod = template["spec"]
    (c,) = pod["containers"]
    spec = container_spec("img", "/host/shards", 2, workers=3, memory_mb=512, cpu="1500m", memory="3Gi",
                          tmp_size="256Mi")
    assert spec == pod_to_container(template, "/host/shards", 2), "container_spec is the Job's pod, translated"
    assert spec["image"] == c["image"]
    assert spec["command"] == c["command"] + c["args"], "same entrypoint and arguments"
    assert spec["environment"] == {**{e["name"]: e["value"] for e in c["env"]}, "JOB_COMPLETION_INDEX": "2"}
    sc = c["securityContext"]
    assert sc == sandbox_security_context()
    assert spec["user"] == f"{sc['runAsUser']}:{sc['runAsGroup']}" == "0:0"
    assert spec["read_only"] is sc["readOnlyRootFilesystem"] is True
    assert spec["cap_drop"] == sc["capabilities"]["drop"] == ["ALL"]
    assert spec["cap_add"] == sc["capabilities"]["add"] == ["KILL", "SETUID", "SETGID", "CHOWN", "FOWNER", "DAC_OVERRIDE"]
    assert "no-new-privileges" in spec["security_opt"] and sc["allowPrivilegeEscalation"] is False
    assert spec["network_mode"] == "none"  # the cluster: a deny-all NetworkPolicy
    assert spec["runtime"] == "runsc" and pod["runtimeClassName"] == "gvisor"
    assert spec["volumes"] == {"/host/shards": {"bind": "/shard", "mode": "ro"}}
    assert {"name": "shard", "mountPath": "/shard", "readOnly": True} in c["volumeMounts"]
    assert spec["tmpfs"] == {"/tmp": f"rw,nosuid,nodev,size={256 << 20},mode=0777"}  # an emptyDir as the kubelet makes it
    assert spec["mem_limit"] == 3 << 30 and spec["nano_cpus"] == 1_500_000_000
    assert spec["pids_limit"] == -1  # as a node without podPidsLimit: the gVisor sentry needs host threads
    assert not any("SECRET" in k or "KEY" in k for k in spec["environment"])


@pytest.mark.parametrize(("where", "change"), [
    ("securityContext", lambda pod: pod["containers"][0]["securityContext"].update(privileged=True)),
    ("securityContext", lambda pod: pod["securityContext"].update(fsGroup=10001)),
    ("container", lambda pod: pod["containers"][0].update(envFrom=[{"secretRef": {"name": "s"}}])),
    ("pod spec", lambda pod: pod.update(hostNetwork=True)),
    ("pod spec", lambda pod: pod.update(automountServiceAccountToken=True)),
    ("volume 'tmp'", lambda pod: pod["volumes"][0]["emptyDir"].pop("medium")),
])
def test_a_job_setting_local_containers_cannot_carry_is_an_error(where, change) -> None:
    template = build_job("j", 1, ["cm"], image="img")["spec"]["template"]
    change(template["spec"])
    with pytest.raises(ValueError, match=f"sandbox Job's {where}"):
        pod_to_container(template, "/host/shards", 0)


def test_kubernetes_quantities() -> None:
    assert quantity("2500m") == 2.5 and quantity("4Gi") == 4 << 30 and quantity("1G") == 1e9 and quantity(3) == 3
    with pytest.raises(ValueError, match="quantity"):
        quantity("lots")


class _Container:
    def __init__(self, code: int, fail_logs: bool = False) -> None:
        self.code, self.fail_logs, self.removed = code, fail_logs, False

    def logs(self, stream: bool, follow: bool):
        if self.fail_logs:
            raise RuntimeError("log stream broke")
        yield b"line 1\n"

    def wait(self) -> dict:
        assert not self.removed, "exit status asked after removal: the race kfp's auto_remove has"
        return {"StatusCode": self.code}

    def remove(self, force: bool) -> None:
        self.removed = True


class _Client:
    def __init__(self, container: _Container) -> None:
        self.container, self.kwargs = container, {}
        self.containers = self

    def run(self, **kwargs):
        self.kwargs = kwargs
        return self.container


@pytest.mark.parametrize("code", [0, 3])
def test_task_container_reports_its_real_exit_status_and_is_removed(code: int, capsys) -> None:
    client = _Client(_Container(code))
    container_runner._EXTRA_ENV.update({"CURE_CACHE": "/c"})
    try:
        got = container_runner._run_container(client, "img:1", ["python3"], {}, auto_remove=True,
                                              environment={"KFP_X": "1"}, user="0:0")
    finally:
        container_runner._EXTRA_ENV.clear()
    assert got == code  # kfp's own version reports 0 when the container is already gone
    assert client.kwargs["auto_remove"] is False and client.kwargs["user"] == "0:0"
    assert client.kwargs["environment"] == {"CURE_CACHE": "/c", "KFP_X": "1"}, "the task's env joins the runner's"
    assert client.container.removed
    assert "line 1" in capsys.readouterr().out


def test_task_container_is_removed_when_log_streaming_fails() -> None:
    client = _Client(_Container(0, fail_logs=True))
    with pytest.raises(RuntimeError, match="log stream broke"):
        container_runner._run_container(client, "img:1", ["python3"], {})
    assert client.container.removed


def test_replacement_targets_the_kfp_function_it_was_written_for(monkeypatch) -> None:
    from kfp.local import docker_task_handler

    monkeypatch.setattr(docker_task_handler, "run_docker_container", docker_task_handler.run_docker_container)
    container_runner._install_run_replacement()
    assert docker_task_handler.run_docker_container is container_runner._run_container
    monkeypatch.setattr(docker_task_handler, "run_docker_container", lambda image, cmd: 0)
    with pytest.raises(container_runner.ContainerRunnerError, match="unexpected signature"):
        container_runner._install_run_replacement()


def test_docker_runner_without_an_engine_says_what_to_run(monkeypatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(container_runner.ContainerRunnerError, match="scripts/container-engine.sh"):
        container_runner.make_runner("docker", ROOT / "runs" / "x", "tiny:0")
    with pytest.raises(ValueError, match="unknown runner 'k8s'"):
        container_runner.make_runner("k8s", ROOT / "runs" / "x", "tiny:0")


def test_host_pip_configuration_is_forwarded(tmp_path: Path) -> None:
    wheels, index, ca = tmp_path / "wheels", tmp_path / "mirror" / "simple", tmp_path / "ca.pem"
    wheels.mkdir()
    index.mkdir(parents=True)
    ca.write_text("cert\n")
    conf = tmp_path / "pip.conf"
    conf.write_text(f"[global]\nextra-index-url = file://{index}\ncert = {ca}\ntimeout = 60\n[install]\nno-compile = yes\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_CONFIG_DIRS": str(tmp_path / "xdg"),
           "PIP_CONFIG_FILE": str(conf), "PIP_FIND_LINKS": str(wheels)}
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "host_pip_config.py"), str(out)], env=env,
                          capture_output=True, text=True, check=True)
    opts = proc.stdout.split()
    assert opts[:2] == [f"--volume={out}:/mnt/host-pip/conf:ro", "--build-arg=PIP_CONFIG_FILE=/mnt/host-pip/conf/pip.conf"]
    # the CA, the find-links folder, and the index with the folder above it (its pages link ../../files/...), each
    # under /mnt/host-pip (/etc/pip.conf, which no variable can hide, may add its own paths)
    mounts = dict(o.removeprefix("--volume=").removesuffix(":ro").split(":") for o in opts[2:])
    assert {ca, wheels, index.parent} <= {Path(p) for p in mounts}
    merged = (out / "pip.conf").read_text()
    assert f"find-links = {mounts[str(wheels)]}\n" in merged and f"cert = {mounts[str(ca)]}\n" in merged
    assert f"extra-index-url = file://{mounts[str(index.parent)]}/simple\n" in merged and "no-compile = yes" in merged
