# sage-sweeps image: used by clusters/aws.yaml, clusters/gcp.yaml (docker mode), clusters/kuberay/*
# and clusters/slurm (apptainer/enroot can run it too).
#
#   docker build -t REGISTRY/sage-sweeps:0.1.0 .
#   docker push REGISTRY/sage-sweeps:0.1.0
#
# The CUDA runtime comes from the base image and the NVIDIA driver from the host (NVIDIA
# container toolkit). Install order is the Makefile's: torch pinned first (an unpinned torch pulls
# another multi-GB CUDA build), then DeepSpeed built against it, then the project with
# constraints.txt. No secrets are baked in: the Ray token and cloud credentials arrive at run time
# (Kubernetes Secret, file mount, workload identity).
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    RAY_AUTH_MODE=token

# python3.11-dev and build-essential: DeepSpeed JIT-builds a small CPU op on first use.
# wget: KubeRay's default readiness/liveness probes call it. rsync/openssh-client: ray up.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3.11 python3.11-venv python3.11-dev build-essential \
        ca-certificates git wget rsync openssh-client tini \
    && rm -rf /var/lib/apt/lists/*

# Non-root user; uid 1000 matches the default of most Kubernetes securityContexts and Slurm sites.
RUN useradd --create-home --uid 1000 --shell /bin/bash sage \
    && mkdir -p /opt/sage \
    && chown sage:sage /opt/sage

USER sage
ENV VIRTUAL_ENV=/opt/sage/venv \
    PATH=/opt/sage/venv/bin:$PATH \
    TORCH_EXTENSIONS_DIR=/home/sage/.cache/torch_extensions
WORKDIR /opt/sage/src

RUN python3.11 -m venv /opt/sage/venv \
    && python -m pip install -q --upgrade pip setuptools wheel

# 1) torch, pinned (same pin as constraints.txt and the Makefile).
RUN python -m pip install -q torch==2.13.0

# 2) DeepSpeed ships as a source package whose build imports torch: build it against ours.
COPY --chown=sage:sage constraints.txt ./
RUN python -m pip install -q -c constraints.txt --no-build-isolation deepspeed \
    && python -m pip install -q -c constraints.txt --no-deps open-clip-torch
# (open-clip-torch: only its CLIP BPE merges file, for the sd14-init tokenizer; see the Makefile)

# 3) the project itself, every dependency held to constraints.txt. ray[default] adds the dashboard
#    and Jobs API (same ray version), which `ray dashboard`, `ray job submit` and KubeRay use.
COPY --chown=sage:sage . ./
RUN python -m pip install -q -c constraints.txt -e . "ray[default]" \
    && sage doctor

ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["sage", "--help"]
