"""Every file in clusters/ validates against its tool's schema; the Dockerfile and the sbatch
script are checked statically (no Docker engine, Kubernetes API or Slurm here)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from sweeps.cluster_checks import check_shared_storage

ROOT = Path(__file__).resolve().parent.parent
CLUSTERS = ROOT / "clusters"
RAY_UP = [CLUSTERS / "aws.yaml", CLUSTERS / "gcp.yaml"]
KUBERAY = sorted((CLUSTERS / "kuberay").glob("*.yaml"))
SBATCH = CLUSTERS / "slurm" / "sage-sweep.sbatch"
KUBERAY_SCHEMA = json.loads((ROOT / "tests" / "schemas" / "kuberay-v1.schema.json").read_text())
TORCH_PIN = re.search(r"^torch==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M).group(1)


def _ray_schema() -> dict:
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def test_every_yaml_in_clusters_is_covered_by_a_schema_test():
    assert sorted(CLUSTERS.rglob("*.y*ml")) == sorted(RAY_UP + KUBERAY)
    assert len(KUBERAY) >= 2


@pytest.mark.parametrize("path", RAY_UP, ids=lambda p: p.name)
def test_ray_up_config_validates_against_rays_schema(path):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(path.read_text())
    jsonschema.validate(config, _ray_schema())
    # What `ray up` itself does: fill in the provider defaults, then validate the result.
    prepared = prepare_config(config)
    validate_config(prepared)
    head = prepared["head_node_type"]
    gpu_types = [n for n, t in prepared["available_node_types"].items() if t["resources"].get("GPU", 0) > 0]
    assert prepared["available_node_types"][head]["resources"].get("GPU", 0) == 0, "the head is a CPU node"
    assert gpu_types and all(prepared["available_node_types"][n]["min_workers"] == 0 for n in gpu_types)
    assert all(prepared["available_node_types"][n]["max_workers"] > 0 for n in gpu_types)


def test_ray_schema_rejects_a_typo():
    bad = yaml.safe_load((CLUSTERS / "aws.yaml").read_text())
    bad["available_node_types"]["head_cpu"]["node_confg"] = bad["available_node_types"]["head_cpu"].pop("node_config")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, _ray_schema())


@pytest.mark.parametrize("path", RAY_UP, ids=lambda p: p.name)
def test_ray_up_installs_the_project_pinned_in_the_makefile_order(path):
    config = yaml.safe_load(path.read_text())
    setup = " ".join(config["setup_commands"])
    assert re.search(r"git -C \S+ checkout --quiet v\d+\.\d+\.\d+", setup), "check out a release tag"
    steps = [f"pip install -q torch=={TORCH_PIN}",
             "pip install -q -c constraints.txt --no-build-isolation deepspeed",
             "pip install -q -c constraints.txt -e ."]
    positions = [setup.find(s) for s in steps]
    assert -1 not in positions and positions == sorted(positions)
    image = config["docker"]["image"]
    assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest")
    assert config["file_mounts"] == {"~/.ray/auth_token": "~/.ray/auth_token"}


@pytest.mark.parametrize("path", KUBERAY, ids=lambda p: p.name)
def test_kuberay_manifests_validate_against_the_crd_schema(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    kinds = []
    for doc in docs:
        jsonschema.validate(doc, KUBERAY_SCHEMA)
        kinds.append(doc["kind"])
        spec = doc["spec"].get("rayClusterSpec", doc["spec"]) if doc["kind"] != "NetworkPolicy" else None
        if spec is None:
            continue
        assert spec["authOptions"] == {"mode": "token", "secretName": "sage-ray-token"}
        gpu_groups = [g for g in spec["workerGroupSpecs"]
                      if any("nvidia.com/gpu" in c["resources"]["limits"] for c in g["template"]["spec"]["containers"])]
        assert gpu_groups, "a GPU worker group"
        images = {c["image"] for g in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
                  for c in g["template"]["spec"]["containers"]}
        assert images == {"ghcr.io/your-org/sage-sweeps:0.1.0"}  # one image, built from the Dockerfile
    assert kinds[0] in {"RayCluster", "RayJob"}


def test_kuberay_schema_rejects_non_string_ray_start_params_and_missing_resources():
    doc = next(yaml.safe_load_all((CLUSTERS / "kuberay" / "raycluster.yaml").read_text()))
    doc["spec"]["headGroupSpec"]["rayStartParams"]["num-gpus"] = 0  # KubeRay needs "0"
    with pytest.raises(jsonschema.ValidationError, match="is not of type 'string'"):
        jsonschema.validate(doc, KUBERAY_SCHEMA)
    doc = next(yaml.safe_load_all((CLUSTERS / "kuberay" / "raycluster.yaml").read_text()))
    del doc["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]
    with pytest.raises(jsonschema.ValidationError, match="'resources' is a required property"):
        jsonschema.validate(doc, KUBERAY_SCHEMA)


def test_rayjob_runs_the_appendix_ablation_on_shared_storage():
    job = next(yaml.safe_load_all((CLUSTERS / "kuberay" / "rayjob-appendix.yaml").read_text()))
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:4] == ["sage", "sweep", "run", "ablation-lambda-esp"]
    assert argv[argv.index("--address") + 1] == "auto"
    assert check_shared_storage(argv[argv.index("--storage") + 1], num_nodes=2, declared_shared=False, mounts="") is None


def test_every_documented_storage_in_clusters_is_shared():
    texts = [p.read_text() for p in RAY_UP + KUBERAY]
    texts.append((ROOT / "docs" / "clusters.md").read_text())  # the cluster guide
    values = [m for t in texts for m in re.findall(r"--storage[ =]([a-z0-9]+://[^\s'\"`]+)", t)]
    assert len(values) >= 4
    for value in values:
        assert check_shared_storage(value, num_nodes=4, declared_shared=False, mounts="") is None, value


# ---------------------------------------------------------------- Slurm


def test_sbatch_script_parses():
    subprocess.run(["bash", "-n", str(SBATCH)], check=True)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed (apt-get install shellcheck)")
def test_sbatch_script_passes_shellcheck():
    result = subprocess.run(["shellcheck", "--severity=style", str(SBATCH)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_sbatch_script_has_the_cluster_contract():
    text = SBATCH.read_text()
    assert re.search(r"^trap cleanup EXIT$", text, re.M)
    assert "export RAY_AUTH_MODE=token" in text
    assert "--dashboard-host=127.0.0.1" in text
    assert re.search(r"srun .*\\\n\s+ray start --head", text)
    assert re.search(r"srun .*--exclude=\"\$head_node\" \\\n\s+ray start --block --address", text)
    assert re.search(r'^\s*sage sweep run "\$spec" --storage "\$storage" --address', text, re.M)
    assert "check_shared_storage" in text
    assert not re.search(r"^\s*ray stop", text, re.M), "ray stop would stop other jobs' Ray on shared nodes"


# ---------------------------------------------------------------- Dockerfile (static)


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_base_image_is_pinned_cuda():
    froms = [rest for word, rest in _dockerfile_instructions() if word == "FROM"]
    assert len(froms) == 1
    image = froms[0].split()[0]
    assert image.startswith("nvidia/cuda:") and "runtime" in image
    assert "@sha256:" in image or (":" in image and not image.endswith(":latest"))


def test_dockerfile_installs_in_the_makefile_order():
    runs = [rest for word, rest in _dockerfile_instructions() if word == "RUN" and "pip install" in rest]
    installs = [r for r in runs if "--upgrade pip" not in r]
    assert re.search(rf"pip install -q torch=={re.escape(TORCH_PIN)}$", installs[0]), installs[0]
    assert "-c constraints.txt --no-build-isolation deepspeed" in installs[1]
    assert "-c constraints.txt -e ." in installs[2]
    assert len(installs) == 3
    assert "python3.11" in " ".join(rest for word, rest in _dockerfile_instructions() if word == "RUN")


def test_dockerfile_runs_as_non_root_and_bakes_no_secret():
    instructions = _dockerfile_instructions()
    users = [rest for word, rest in instructions if word == "USER"]
    assert users and users[-1] not in {"root", "0"}
    assert [w for w, _ in instructions].index("USER") < [w for w, _ in instructions].index("COPY")
    for word, rest in instructions:
        if word in {"ENV", "ARG"}:
            for name in re.findall(r"(\w+)=", rest):
                assert not re.search(r"TOKEN|SECRET|PASSWORD|ACCESS_KEY|CREDENTIAL", name) or name == "RAY_AUTH_MODE", name
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".env", "**/auth_token"} <= set(ignored)
