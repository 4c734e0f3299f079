# syntax=docker/dockerfile:1
# Two images from one file (build with --target):
#   operator   kuberank-operator and kuberank-sidecar; no torch (the chart's operator Deployment
#              and every pod's telemetry sidecar run it)
#   inference  kuberank-inference with torch, sentence-transformers and the packaged MiniLM model
#              (the model-minilm extra), the image a RerankerDeployment's spec.image names
#
# With Docker (BuildKit, the default builder since Docker 23):
#   docker build --target operator  -t registry.example.com/kuberank/kuberank-operator:0.1.0 .
#   docker build --target inference -t registry.example.com/kuberank/kuberank-inference:0.1.0 .
# With buildah/podman: `make images` (hack/build-images.sh) builds both on a base made from
# Debian's archive (no registry needed) and writes OCI archives; see README.md.
#
# The base needs nothing but a python3 (3.11, the version constraints.txt pins wheels for) with
# the venv module; on a GPU node, nothing but the NVIDIA driver: PyPI's torch wheels carry their
# CUDA libraries. python:3.11-slim-bookworm has python3 in /usr/local/bin, Debian's python3 in
# /usr/bin: either works, every program runs from the venv /opt/kuberank/venv.
ARG BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS python
ENV VIRTUAL_ENV=/opt/kuberank/venv \
    PATH=/opt/kuberank/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_PROGRESS_BAR=off \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONUNBUFFERED=1
# pip's cache is a build cache mount, never a layer: a rebuild does not download torch again.
# hack/build-images.sh builds offline instead: PIP_FIND_LINKS names a wheelhouse it mounts with
# buildah -v, PIP_NO_INDEX=1. (ARGs are per stage, so each stage that runs pip names them.)
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX
# The standard library is byte-compiled now (slim images ship without .pyc): nothing may write
# bytecode at run time on a read-only root filesystem.
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=bind,source=constraints.txt,target=/tmp/kuberank/constraints.txt \
    python3 -m venv "$VIRTUAL_ENV" \
 && pip install -q -c /tmp/kuberank/constraints.txt pip \
 && { python3 -m compileall -q -j 0 \
        "$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')" >/dev/null \
      || true; }

# The distribution's wheel, built once for both images. Only this stage sees the source, so a
# code change rebuilds the wheel and the last layers of each image, never the dependency layers.
FROM python AS wheel
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX
COPY pyproject.toml /tmp/kuberank/src/
COPY operator/ /tmp/kuberank/src/operator/
COPY sidecar/ /tmp/kuberank/src/sidecar/
COPY inference/ /tmp/kuberank/src/inference/
# pyproject.toml's readme: a stub, so that editing the docs rebuilds no image.
RUN --mount=type=cache,target=/root/.cache/pip \
    echo "kuberank: see https://github.com/kuberank/kuberank" > /tmp/kuberank/src/README.md \
 && pip wheel -q --no-deps -w /tmp/kuberank/wheels /tmp/kuberank/src

# Third-party dependencies of the image's extras, pinned by constraints.txt. The layer depends on
# pyproject.toml and constraints.txt only (hack/extra-requirements.py reads the extras).
FROM python AS operator-deps
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=bind,source=pyproject.toml,target=/tmp/kuberank/pyproject.toml \
    --mount=type=bind,source=constraints.txt,target=/tmp/kuberank/constraints.txt \
    --mount=type=bind,source=hack/extra-requirements.py,target=/tmp/kuberank/extra-requirements.py \
    python3 /tmp/kuberank/extra-requirements.py /tmp/kuberank/pyproject.toml operator sidecar \
      > /tmp/requirements.txt \
 && pip install -c /tmp/kuberank/constraints.txt -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

FROM python AS inference-deps
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=bind,source=pyproject.toml,target=/tmp/kuberank/pyproject.toml \
    --mount=type=bind,source=constraints.txt,target=/tmp/kuberank/constraints.txt \
    --mount=type=bind,source=hack/extra-requirements.py,target=/tmp/kuberank/extra-requirements.py \
    python3 /tmp/kuberank/extra-requirements.py /tmp/kuberank/pyproject.toml inference model-minilm \
      > /tmp/requirements.txt \
 && pip install -c /tmp/kuberank/constraints.txt -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# Run-time settings shared by both images: a numeric non-root user (runAsNonRoot can be checked
# by the kubelet) with a passwd entry (kopf names its peer by getpass.getuser(), which fails for a
# uid /etc/passwd does not list: the operator crash-looped on a real node without it), no bytecode writes, no hub downloads (models come from the image or a volume,
# spec.model.source); HF_HOME is under /tmp, which the operator mounts as an emptyDir.
FROM operator-deps AS operator
ARG KUBERANK_UID=65532
COPY --from=wheel /tmp/kuberank/wheels/ /tmp/kuberank/wheels/
RUN pip install -q --no-cache-dir --no-deps --no-index /tmp/kuberank/wheels/*.whl \
 && rm -rf /tmp/kuberank \
 && echo "kuberank:x:${KUBERANK_UID}:${KUBERANK_UID}:kuberank:/nonexistent:/usr/sbin/nologin" >> /etc/passwd \
 && echo "kuberank:x:${KUBERANK_UID}:" >> /etc/group \
 && kuberank-operator --help >/dev/null \
 && kuberank-sidecar --help >/dev/null
ENV PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HOME=/tmp/hf
USER ${KUBERANK_UID}:${KUBERANK_UID}
EXPOSE 8080 9400
CMD ["kuberank-operator"]

FROM inference-deps AS inference
ARG KUBERANK_UID=65532
COPY --from=wheel /tmp/kuberank/wheels/ /tmp/kuberank/wheels/
RUN pip install -q --no-cache-dir --no-deps --no-index /tmp/kuberank/wheels/*.whl \
 && rm -rf /tmp/kuberank \
 && echo "kuberank:x:${KUBERANK_UID}:${KUBERANK_UID}:kuberank:/nonexistent:/usr/sbin/nologin" >> /etc/passwd \
 && echo "kuberank:x:${KUBERANK_UID}:" >> /etc/group \
 && kuberank-inference --help >/dev/null
ENV PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HOME=/tmp/hf
USER ${KUBERANK_UID}:${KUBERANK_UID}
EXPOSE 8080
CMD ["kuberank-inference"]
