"""Secure-by-default rules for everything in clusters/ and the Dockerfile, checked by a scanner.

Rules (each a Finding.rule):
  open_cidr        no 0.0.0.0/0 or ::/0 anywhere (security-group ingress, firewall sourceRanges)
  exposed_service  no LoadBalancer / NodePort Services, no Ingress, no hostPort / hostNetwork
  published_port   no `docker -p` of Ray's ports (6379, 8265, 10001)
  dashboard_host   every Ray head binds its dashboard to 127.0.0.1; the one exception is a RayJob
                   whose file also holds a NetworkPolicy selecting its pods (the KubeRay operator
                   polls job status over the dashboard port, so it cannot be loopback-only there)
  token_auth       every place that starts Ray turns on RAY_AUTH_MODE=token
  literal_secret   no token, key or password written into a file (a Secret reference is fine)
The scanner is tested on planted violations, so a rule that silently stopped matching fails here.
Also here: the Python packages never unpickle (checkpoints and caches are safetensors/JSON).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CLUSTERS = ROOT / "clusters"
RAY_PORTS = ("6379", "8265", "10001")
LOOPBACK = {"127.0.0.1", "localhost"}


@dataclass(frozen=True)
class Finding:
    path: str
    rule: str
    detail: str


def _code_lines(text: str) -> str:
    """Text without full-line comments (YAML, shell and Dockerfile all use #)."""
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


_SECRET_PATTERNS = [
    (re.compile(r"(?i)\b(RAY_AUTH_TOKEN|auth_token)\b\s*[=:]\s*[\"']?(?![$~/\"'{])[^\s\"']{8,}"),
     "a Ray token written literally"),
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), "an AWS access key id"),
    (re.compile(r"(?i)aws_secret_access_key\s*[=:]\s*[\"']?[^\s\"'$]"), "an AWS secret key"),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "a private key"),
    (re.compile(r"\"private_key\"\s*:"), "a service-account key file"),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36}\b"), "a GitHub token"),
    (re.compile(r"(?i)\b(password|passwd|secret_key)\b\s*[=:]\s*[\"']?(?![$\"'{])[^\s\"']{4,}"),
     "a password"),
]


def _scan_common(text: str, path: str) -> list[Finding]:
    found: list[Finding] = []
    code = _code_lines(text)
    # Secrets count even inside comments: a leaked token in a comment is still leaked.
    for pattern, what in _SECRET_PATTERNS:
        for m in pattern.finditer(text):
            found.append(Finding(path, "literal_secret", f"{what}: {m.group(0)[:40]!r}"))
    for m in re.finditer(r"0\.0\.0\.0/0|::/0", code):
        found.append(Finding(path, "open_cidr", f"{m.group(0)} opens a port to the internet"))
    for m in re.finditer(r"\b(LoadBalancer|NodePort)\b|\bhostPort\b|\bhostNetwork:\s*true\b", code):
        found.append(Finding(path, "exposed_service", f"{m.group(0)} exposes Ray outside the cluster"))
    for m in re.finditer(r"""(?:^|[\s"'\[,])(?:-p|--publish)[ =]([^\s"',\]]+)""", code):
        if any(re.search(rf"(^|:){p}(:|$|/)", m.group(1)) for p in RAY_PORTS):
            found.append(Finding(path, "published_port", f"publishes Ray port: {m.group(0).strip()}"))
    for m in re.finditer(r"--dashboard[-_]host[= ]+[\"']?([^\s\"';]+)", code):
        if m.group(1) not in LOOPBACK:
            found.append(Finding(path, "dashboard_host", f"dashboard bound to {m.group(1)}"))
    return found


def _ray_start_commands(text: str) -> list[str]:
    """Each shell command (split on ; && || and newlines, joined over backslash breaks) that
    runs `ray start`, with the environment assignments that precede it in the same script."""
    joined = re.sub(r"\\\n\s*", " ", _code_lines(text))
    return [c for c in re.split(r"\n|;|&&|\|\|", joined) if re.search(r"\bray start\b", c)]


def _scan_shell(text: str, path: str) -> list[Finding]:
    found = []
    code = _code_lines(text)
    commands = _ray_start_commands(text)
    exported = re.search(r"^\s*export\s+RAY_AUTH_MODE=token\b", code, re.M) is not None
    for cmd in commands:
        if not exported and "RAY_AUTH_MODE=token" not in cmd:
            found.append(Finding(path, "token_auth", f"ray start without RAY_AUTH_MODE=token: {cmd.strip()[:60]}"))
        if "--head" in cmd and not re.search(r"--dashboard-host[= ]+[\"']?(127\.0\.0\.1|localhost)\b", cmd) \
                and "--include-dashboard=false" not in cmd:
            found.append(Finding(path, "dashboard_host", "ray start --head without --dashboard-host=127.0.0.1"))
    return found


def _walk_env(containers: list[dict]) -> list[dict]:
    return [e for c in containers for e in c.get("env", [])]


def _cluster_specs(doc: dict) -> list[dict]:
    if doc.get("kind") == "RayCluster":
        return [doc.get("spec", {})]
    if doc.get("kind") == "RayJob":
        return [doc.get("spec", {}).get("rayClusterSpec", {})]
    return []


def _scan_kubernetes(docs: list[dict], path: str) -> list[Finding]:
    found = []
    policies = [d for d in docs if d.get("kind") == "NetworkPolicy"]
    for doc in docs:
        kind = doc.get("kind")
        if kind == "Secret" and (doc.get("data") or doc.get("stringData")):
            found.append(Finding(path, "literal_secret", "a Secret with data inside a committed file"))
        if kind == "Ingress":
            found.append(Finding(path, "exposed_service", "an Ingress"))
        for spec in _cluster_specs(doc):
            head = spec.get("headGroupSpec", {})
            if head.get("enableIngress"):
                found.append(Finding(path, "exposed_service", "headGroupSpec.enableIngress"))
            groups = [head] + list(spec.get("workerGroupSpecs", []))
            containers = [c for g in groups for c in g.get("template", {}).get("spec", {}).get("containers", [])]
            env = _walk_env(containers)
            for e in env:
                if e.get("name") == "RAY_AUTH_TOKEN" and "value" in e:
                    found.append(Finding(path, "literal_secret", "RAY_AUTH_TOKEN with a literal value"))
            auth = spec.get("authOptions", {})
            env_token = all(
                any(e.get("name") == "RAY_AUTH_MODE" and e.get("value") == "token" for e in c.get("env", []))
                and any(e.get("name") == "RAY_AUTH_TOKEN" and "secretKeyRef" in e.get("valueFrom", {})
                        for e in c.get("env", []))
                for c in containers
            )
            if not (auth.get("mode") == "token" or (containers and env_token)):
                found.append(Finding(path, "token_auth", f"{kind} {doc['metadata'].get('name')} without token auth"))
            host = head.get("rayStartParams", {}).get("dashboard-host", "0.0.0.0")  # KubeRay's default
            if host not in LOOPBACK:
                labels = head.get("template", {}).get("metadata", {}).get("labels", {})
                guarded = kind == "RayJob" and any(
                    (sel := p.get("spec", {}).get("podSelector", {}).get("matchLabels"))
                    and all(labels.get(k) == v for k, v in sel.items())
                    and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
                    for p in policies
                )
                if not guarded:
                    found.append(Finding(path, "dashboard_host", f"{kind} dashboard-host {host} without a NetworkPolicy"))
    return found


def _scan_ray_up(config: dict, path: str) -> list[Finding]:
    found = []
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        for cmd in config.get(key, []):
            for sub in _ray_start_commands(cmd):
                if "RAY_AUTH_MODE=token" not in sub:
                    found.append(Finding(path, "token_auth", f"{key}: ray start without RAY_AUTH_MODE=token"))
                if "--head" in sub and not re.search(r"--dashboard-host=(127\.0\.0\.1|localhost)\b", sub):
                    found.append(Finding(path, "dashboard_host", f"{key}: head without --dashboard-host=127.0.0.1"))
    if not config.get("head_start_ray_commands"):
        found.append(Finding(path, "token_auth", "no head_start_ray_commands: Ray's defaults bind 0.0.0.0 and skip auth"))
    for perm in config.get("provider", {}).get("security_group", {}).get("IpPermissions", []):
        lo, hi = perm.get("FromPort", 0), perm.get("ToPort", 65535)
        if any(lo <= int(p) <= hi for p in RAY_PORTS) and perm.get("IpRanges"):
            found.append(Finding(path, "open_cidr", f"security group opens {lo}-{hi} to {perm['IpRanges']}"))
    return found


def scan_text(text: str, *, name: str) -> list[Finding]:
    """All findings for one file's text; ``name`` (its path) picks the parser."""
    found = _scan_common(text, name)
    if name.endswith((".yaml", ".yml")):
        docs = [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]
        if any("apiVersion" in d for d in docs):
            found += _scan_kubernetes(docs, name)
        for d in docs:
            if "provider" in d and "cluster_name" in d:
                found += _scan_ray_up(d, name)
    elif name.endswith((".sbatch", ".sh")):
        found += _scan_shell(text, name)
    elif Path(name).name == "Dockerfile":
        if not re.search(r"^ENV\b[^\n]*(\\\n[^\n]*)*\bRAY_AUTH_MODE=token\b", text, re.M):
            found.append(Finding(name, "token_auth", "Dockerfile does not set ENV RAY_AUTH_MODE=token"))
    else:
        found.append(Finding(name, "unscanned", "no rules for this file type: teach the scanner first"))
    return found


def _scanned_files() -> list[Path]:
    files = sorted(p for p in CLUSTERS.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return files + [ROOT / "Dockerfile"]


# ---------------------------------------------------------------- the repository passes


def test_every_cluster_file_and_the_dockerfile_pass_the_security_rules():
    files = _scanned_files()
    names = {p.relative_to(ROOT).as_posix() for p in files}
    # The scan must actually cover the shipped configs (an empty glob would pass vacuously).
    assert {"clusters/aws.yaml", "clusters/gcp.yaml", "clusters/kuberay/raycluster.yaml",
            "clusters/kuberay/rayjob-appendix.yaml", "clusters/slurm/sage-sweep.sbatch",
            "Dockerfile"} <= names
    findings = [f for p in files for f in scan_text(p.read_text(), name=p.relative_to(ROOT).as_posix())]
    assert findings == []


# ---------------------------------------------------------------- the scanner catches violations

BAD_EXAMPLES = {
    "open_cidr": ("bad.yaml", """
cluster_name: x
provider:
  type: aws
  security_group:
    GroupName: g
    IpPermissions:
      - {FromPort: 8265, ToPort: 8265, IpProtocol: tcp, IpRanges: [{CidrIp: 0.0.0.0/0}]}
head_start_ray_commands:
  - RAY_AUTH_MODE=token ray start --head --dashboard-host=127.0.0.1
"""),
    "exposed_service": ("bad.yaml", """
apiVersion: ray.io/v1
kind: RayCluster
metadata: {name: x}
spec:
  authOptions: {mode: token}
  headGroupSpec:
    serviceType: LoadBalancer
    rayStartParams: {dashboard-host: "127.0.0.1"}
    template: {spec: {containers: [{name: h, image: i:1, resources: {requests: {}, limits: {}}}]}}
"""),
    "published_port": ("bad.yaml", """
cluster_name: x
provider: {type: aws}
docker:
  image: i:1
  run_options: ["-p 8265:8265"]
head_start_ray_commands:
  - RAY_AUTH_MODE=token ray start --head --dashboard-host=127.0.0.1
"""),
    "dashboard_host": ("bad.sbatch", """#!/bin/bash
export RAY_AUTH_MODE=token
ray start --head --port=6379 --dashboard-host=0.0.0.0
"""),
    "token_auth": ("bad.sbatch", """#!/bin/bash
ray start --head --port=6379 \\
  --dashboard-host=127.0.0.1
"""),
    "literal_secret": ("bad.yaml", """
apiVersion: ray.io/v1
kind: RayCluster
metadata: {name: x}
spec:
  headGroupSpec:
    rayStartParams: {dashboard-host: "127.0.0.1"}
    template:
      spec:
        containers:
          - name: h
            image: i:1
            resources: {requests: {}, limits: {}}
            env:
              - {name: RAY_AUTH_MODE, value: token}
              - {name: RAY_AUTH_TOKEN, value: 3f2c9a8b7d6e5f4a3b2c1d0e}
"""),
}


@pytest.mark.parametrize("rule", sorted(BAD_EXAMPLES))
def test_scanner_flags_a_planted_violation(rule):
    name, text = BAD_EXAMPLES[rule]
    rules = {f.rule for f in scan_text(text, name=name)}
    assert rule in rules, f"planted {rule} violation not found; got {rules}"


def test_scanner_rules_for_kubernetes_dashboard_and_auth():
    # A RayCluster without token auth and with KubeRay's default dashboard host (0.0.0.0).
    bare = """
apiVersion: ray.io/v1
kind: RayCluster
metadata: {name: x}
spec:
  headGroupSpec:
    rayStartParams: {}
    template: {spec: {containers: [{name: h, image: i:1, resources: {requests: {}, limits: {}}}]}}
"""
    assert {f.rule for f in scan_text(bare, name="c.yaml")} == {"token_auth", "dashboard_host"}
    # The same cluster in a RayJob guarded by a NetworkPolicy on its pods: only the auth finding stays.
    guarded = """
apiVersion: ray.io/v1
kind: RayJob
metadata: {name: x}
spec:
  entrypoint: sage sweep run quickstart
  rayClusterSpec:
    headGroupSpec:
      rayStartParams: {dashboard-host: "0.0.0.0"}
      template:
        metadata: {labels: {sage: x}}
        spec: {containers: [{name: h, image: i:1, resources: {requests: {}, limits: {}}}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p}
spec: {podSelector: {matchLabels: {sage: x}}, policyTypes: [Ingress]}
"""
    assert {f.rule for f in scan_text(guarded, name="j.yaml")} == {"token_auth"}


@pytest.mark.parametrize("secret", [
    "AKIAIOSFODNN7EXAMPLE",
    "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "-----BEGIN RSA PRIVATE KEY-----",
    "export RAY_AUTH_TOKEN=0123456789abcdef0123",
    "ghp_" + "a" * 36,
])
def test_scanner_flags_secrets_even_in_comments(secret):
    assert "literal_secret" in {f.rule for f in scan_text(f"# {secret}\nx: 1\n", name="s.yaml")}


def test_scanner_accepts_secret_references_and_paths():
    ok = """
file_mounts:
  ~/.ray/auth_token: ~/.ray/auth_token
env:
  - name: RAY_AUTH_TOKEN
    valueFrom: {secretKeyRef: {name: sage-ray-token, key: auth_token}}
# kubectl create secret generic t --from-literal=auth_token="$(openssl rand -hex 32)"
"""
    assert [f for f in scan_text(ok, name="ok.yaml") if f.rule == "literal_secret"] == []


def test_scanner_refuses_file_types_it_has_no_rules_for():
    assert {f.rule for f in scan_text("anything", name="clusters/notes.toml")} == {"unscanned"}


# ---------------------------------------------------------------- no unpickling in the packages

_UNPICKLE = re.compile(r"\btorch\.load\(|\bpickle\.loads?\b|\bcloudpickle\.loads?\b|\bjoblib\.load\b")


def unpickle_calls(text: str) -> list[str]:
    return [m.group(0) for m in _UNPICKLE.finditer(text)]


def test_unpickle_pattern_catches_each_loader():
    planted = "torch.load(p)\npickle.load(f)\npickle.loads(b)\ncloudpickle.load(f)\njoblib.load(p)\n"
    assert len(unpickle_calls(planted)) == 5
    assert unpickle_calls("safetensors.torch.load_file(p); json.load(f)") == []


def test_packages_never_unpickle():
    # Allow-list: empty. Loading a pickle runs arbitrary code; checkpoints are safetensors + JSON.
    offenders = []
    for package in ("sage_core", "sweeps", "analysis"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for call in unpickle_calls(path.read_text(encoding="utf-8")):
                offenders.append(f"{path.relative_to(ROOT)}: {call}")
    assert offenders == []
