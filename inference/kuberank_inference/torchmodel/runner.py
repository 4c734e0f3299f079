"""TorchRunner: the one place that talks to torch, transformers and sentence-transformers.

Loads a CrossEncoder (task rerank) or a SentenceTransformer (task embed) once, then serves the
engine: tokenize, collate into one pinned host buffer, copy to the device and launch without
waiting, and read results back once per batch (a pinned copy behind a CUDA event). CUDA
out-of-memory errors free the cache and surface as DeviceOutOfMemoryError.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from kuberank_inference.engine.contracts import (
    BatchHandle,
    DeviceMemory,
    ModelInfo,
    ModelInput,
    Output,
    ScoreActivation,
    Task,
    TokenizedSequence,
)
from kuberank_inference.failures import DeviceOutOfMemoryError
from kuberank_inference.torchmodel.packed import (
    AttentionFn,
    PackedEncoder,
    PackedLayout,
    packing_obstacle,
    padded_attention,
    varlen_attention,
)
from kuberank_inference.torchmodel.settings import RunnerSettings
from kuberank_inference.torchmodel.tokenizing import Encoded, SequenceTokenizer

__all__ = ["RunnerSettings", "TorchRunner", "UnsupportedModelError"]

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_POOLING = ("mean", "cls", "max", "lasttoken", "mean_sqrt_len_tokens")


class UnsupportedModelError(Exception):
    pass


@dataclass(slots=True)
class _Launched:
    host: Tensor
    ready: torch.cuda.Event | None


@dataclass(frozen=True, slots=True)
class _Pooling:
    mode: str
    normalize: bool


class TorchRunner:
    def __init__(self, settings: RunnerSettings) -> None:
        from kuberank_inference.sources import detect_task

        self._device = torch.device(settings.device)
        if self._device.type == "cuda":
            if not torch.cuda.is_available():
                raise UnsupportedModelError("--device cuda but torch sees no CUDA device")
            if getattr(self._device, "index", None) is None:
                self._device = torch.device("cuda", torch.cuda.current_device())
            torch.cuda.set_device(self._device)
            # the process never takes the safety margin, whatever the allocator wants
            torch.cuda.set_per_process_memory_fraction(
                1.0 - settings.vram_safety_margin, self._device
            )
        dtype_name = settings.dtype
        if dtype_name == "auto":
            dtype_name = "bfloat16" if self._device.type == "cuda" else "float32"
        self._dtype = _DTYPES[dtype_name]
        task: Task = detect_task(settings.source.path) if settings.task == "auto" else settings.task
        self._task = task
        self._oom_lock = threading.Lock()
        self._injected_ooms = 0

        hf_model, tokenizer, max_length, activation, pooling = self._load(settings, task)
        self._hf = hf_model
        self._pooling = pooling
        config = hf_model.config
        self._pad_id = int(getattr(config, "pad_token_id", None) or 0)
        token_types = getattr(hf_model.base_model.embeddings, "token_type_embeddings", None)
        self._has_token_types = token_types is not None
        uses_type_ids = token_types is not None and token_types.weight.shape[0] > 1
        self._tokenizer_json = tokenizer.backend_tokenizer.to_str()
        self._uses_type_ids = uses_type_ids
        self._tokenizer = SequenceTokenizer(
            tokenizer.backend_tokenizer, max_length=max_length, uses_type_ids=uses_type_ids
        )

        self._packed: PackedEncoder | None = None
        self._attention_fn: AttentionFn = padded_attention
        attention_name = "hf-sdpa-padded"
        if settings.attention in ("auto", "packed"):
            obstacle = packing_obstacle(hf_model)
            if obstacle is None:
                on_gpu = self._device.type == "cuda"
                self._packed = PackedEncoder(
                    hf_model,
                    fused_gelu=settings.fused_gelu and on_gpu,
                    fused_norm=settings.fused_norm and on_gpu,
                )
                attention_name = "packed-sdpa"
                varlen = varlen_attention() if self._varlen_usable() else None
                if varlen is not None:
                    attention_name = f"packed-{varlen[0]}"
                    self._attention_fn = varlen[1]
                attention_name += _fusions(self._packed)
            elif settings.attention == "packed":
                raise UnsupportedModelError(
                    f"--attention packed: {obstacle}; use --attention padded"
                )
            else:
                log.info("padding-free forward unavailable (%s); using padded batches", obstacle)

        embedding_dimension = None
        if task == "embed":
            embedding_dimension = int(config.hidden_size)
        self._info = ModelInfo(
            model_id=settings.model_id or settings.source.name,
            source=str(settings.source.path),
            task=task,
            architecture=str((config.architectures or [type(hf_model).__name__])[0]),
            device=str(self._device),
            dtype=dtype_name,
            max_input_length=max_length,
            padding_free=self._packed is not None,
            attention=attention_name,
            embedding_dimension=embedding_dimension,
            score_activation=activation,
            normalizes_embeddings=pooling.normalize if pooling else False,
        )
        if self._packed is not None and not self._self_check():
            if self._packed.fused_gelu or self._packed.fused_norm:
                log.warning("retrying the padding-free forward without kernel fusions")
                self._packed = PackedEncoder(hf_model)
                self._info = _replace_attention(
                    self._info, self._info.attention.split("+")[0], padding_free=True
                )
            if not self._self_check():
                self._packed = None
                self._attention_fn = padded_attention
                self._info = _replace_attention(self._info, "hf-sdpa-padded", padding_free=False)

    # --- loading -----------------------------------------------------------------------------

    def _load(
        self, settings: RunnerSettings, task: Task
    ) -> tuple[PreTrainedModel, Any, int, ScoreActivation, _Pooling | None]:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        path = str(settings.source.path)
        if task == "rerank":
            from sentence_transformers import CrossEncoder

            cross = CrossEncoder(path, device=str(self._device), local_files_only=True)
            hf_model = cross.model
            if hf_model is None:
                raise UnsupportedModelError(f"{path}: the cross-encoder has no transformer model")
            if int(hf_model.config.num_labels) != 1:
                raise UnsupportedModelError(
                    f"{path}: a reranker must output one score, this model has "
                    f"num_labels={hf_model.config.num_labels}"
                )
            activation = _activation_name(cross.activation_fn)
            tokenizer = cross.tokenizer
            model_max = _transformer_module(cross).max_seq_length
            pooling = None
        else:
            from sentence_transformers import SentenceTransformer

            st = SentenceTransformer(path, device=str(self._device), local_files_only=True)
            transformer = _transformer_module(st)
            hf_model = transformer.auto_model
            tokenizer = transformer.tokenizer
            model_max = transformer.max_seq_length
            pooling = _pooling_of(st)
            activation = "identity"
        hf_model.eval()
        hf_model.to(device=self._device, dtype=self._dtype)
        limit = _position_limit(hf_model)
        max_length = min(int(model_max or limit), limit)
        if settings.max_input_length:
            max_length = min(max_length, settings.max_input_length)
        return hf_model, tokenizer, max_length, activation, pooling

    def _varlen_usable(self) -> bool:
        return self._device.type == "cuda" and self._dtype in (torch.float16, torch.bfloat16)

    def tokenizer_spec(self) -> tuple[str, int, bool]:
        """What another process needs to tokenize exactly like this runner."""
        return self._tokenizer_json, self._tokenizer.max_length, self._uses_type_ids

    def close(self) -> None:
        """Nothing to release: the model lives as long as the process."""

    # --- the ModelRunner protocol ------------------------------------------------------------

    @property
    def info(self) -> ModelInfo:
        return self._info

    def encode(self, request: ModelInput) -> list[TokenizedSequence]:
        return list(self._tokenizer.encode(request))

    def inject_oom(self, count: int) -> None:
        with self._oom_lock:
            self._injected_ooms += count

    def start_batch(self, sequences: Sequence[TokenizedSequence]) -> BatchHandle:
        encoded = cast(Sequence[Encoded], sequences)
        tokens = sum(seq.num_tokens for seq in encoded)
        detail = None
        try:
            self._maybe_fail()
            with torch.inference_mode(), self._on_device():
                if self._packed is not None:
                    out = self._forward_packed(encoded, self._packed, self._attention_fn)
                else:
                    out = self._forward_padded(encoded)
                return self._read_back(out)
        except torch.OutOfMemoryError as error:
            detail = str(error).splitlines()[0] if str(error) else "out of memory"
        # outside the except block, so the traceback no longer pins the batch's tensors
        self._release_cache()
        raise DeviceOutOfMemoryError(tokens=tokens, detail=detail)

    def finish_batch(self, handle: BatchHandle) -> list[Output]:
        launched = cast(_Launched, handle)
        if launched.ready is not None:
            launched.ready.synchronize()
        values = launched.host.tolist()
        return cast(list[Output], values)

    def device_memory(self) -> DeviceMemory | None:
        if self._device.type != "cuda":
            return None
        return DeviceMemory(
            total=int(torch.cuda.get_device_properties(self._device).total_memory),
            allocated=int(torch.cuda.memory_allocated(self._device)),
            reserved=int(torch.cuda.memory_reserved(self._device)),
            peak_allocated=int(torch.cuda.max_memory_allocated(self._device)),
        )

    # --- device facts for the handshake and memory planning ----------------------------------

    def device_uuids(self) -> list[str]:
        if self._device.type != "cuda":
            return []
        index = self._device.index if self._device.index is not None else 0
        uuid = str(torch.cuda.get_device_properties(index).uuid)
        return [uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"]

    def resident_bytes(self) -> int:
        return int(torch.cuda.memory_allocated(self._device)) if self._device.type == "cuda" else 0

    def activation_bytes_per_token(self, *, tokens: int) -> float:
        """Peak memory one batch of `tokens` tokens adds, per token (0 on CPU)."""
        if self._device.type != "cuda":
            return 0.0
        length = self._info.max_input_length
        batch = self._synthetic(count=max(1, tokens // length), length=length)
        torch.cuda.synchronize(self._device)
        before = torch.cuda.memory_allocated(self._device)
        torch.cuda.reset_peak_memory_stats(self._device)
        self.finish_batch(self.start_batch(batch))
        peak = torch.cuda.max_memory_allocated(self._device)
        used = sum(seq.num_tokens for seq in batch)
        return max(0.0, (peak - before) / used)

    def warm_up(self, *, max_batch_tokens: int) -> None:
        """Run a few batches of several shapes so the first requests meet warm kernels."""
        length = self._info.max_input_length
        if self._device.type != "cuda":
            # CPU kernels need no warming beyond one small batch
            self.finish_batch(self.start_batch(self._synthetic(count=2, length=min(16, length))))
            return
        for seq_len in sorted({min(16, length), min(128, length), length}):
            count = max(1, min(256, max_batch_tokens // seq_len))
            self.finish_batch(self.start_batch(self._synthetic(count=count, length=seq_len)))
        torch.cuda.synchronize(self._device)

    # --- forward paths -----------------------------------------------------------------------

    def _maybe_fail(self) -> None:
        with self._oom_lock:
            if self._injected_ooms <= 0:
                return
            self._injected_ooms -= 1
        raise torch.OutOfMemoryError(
            "CUDA out of memory (injected through /debug/inject-oom; --debug-fault-injection)"
        )

    def _on_device(self) -> contextlib.AbstractContextManager[object]:
        """Kernels launch on the worker thread, whose current CUDA device must be ours."""
        if self._device.type == "cuda":
            return torch.cuda.device(self._device)
        return contextlib.nullcontext()

    def _release_cache(self) -> None:
        if self._device.type == "cuda":
            torch.cuda.empty_cache()

    def _to_device(self, host: np.ndarray[Any, Any]) -> Tensor:
        tensor = torch.from_numpy(host)
        if self._device.type != "cuda":
            return tensor
        return tensor.pin_memory().to(self._device, non_blocking=True)

    def _forward_packed(
        self, seqs: Sequence[Encoded], packed: PackedEncoder, attention: AttentionFn
    ) -> Tensor:
        count = len(seqs)
        lengths = np.fromiter((s.num_tokens for s in seqs), dtype=np.int32, count=count)
        total = int(lengths.sum())
        max_len = int(lengths.max())
        cu = np.zeros(count + 1, dtype=np.int32)
        np.cumsum(lengths, out=cu[1:])
        starts = np.repeat(cu[:-1], lengths)
        positions = np.arange(total, dtype=np.int32) - starts
        parts = [np.concatenate([s.ids for s in seqs]), positions + packed.position_offset]
        with_types = packed.uses_token_types and seqs[0].type_ids is not None
        if with_types:
            parts.append(np.concatenate([s.type_ids for s in seqs if s.type_ids is not None]))
        parts.append(cu)
        needs_padding_index = attention is padded_attention
        if needs_padding_index:
            rows = np.repeat(np.arange(count, dtype=np.int32), lengths)
            parts.append(rows * max_len + positions)
            parts.append(np.repeat(np.arange(count, dtype=np.int32), lengths))
        # one host buffer, one copy to the device
        device_buffer = self._to_device(np.concatenate(parts))
        offset = 0

        def take(size: int) -> Tensor:
            nonlocal offset
            piece = device_buffer[offset : offset + size]
            offset += size
            return piece

        input_ids = take(total)
        position_ids = take(total)
        token_types = take(total) if with_types else None
        cu_seqlens = take(count + 1)
        scatter_index = key_mask = None
        row_of_token = None
        if needs_padding_index:
            scatter_index = take(total).long()
            row_of_token = take(total)
            lengths_dev = cu_seqlens[1:] - cu_seqlens[:-1]
            key_mask = (torch.arange(max_len, device=self._device)[None, :] < lengths_dev[:, None])[
                :, None, None, :
            ]
        layout = PackedLayout(
            cu_seqlens=cu_seqlens,
            max_len=max_len,
            num_seqs=count,
            scatter_index=scatter_index,
            key_mask=key_mask,
        )
        hidden = packed.hidden_states(input_ids, position_ids, token_types, layout, attention)
        first = cu_seqlens[:-1].long()
        if self._task == "rerank":
            return self._classify(hidden[first])
        assert self._pooling is not None
        if self._pooling.mode == "cls":
            return hidden[first].float()
        if row_of_token is None:
            row_of_token = torch.repeat_interleave(
                torch.arange(count, device=self._device), cu_seqlens[1:] - cu_seqlens[:-1]
            )
        sums = torch.zeros(count, hidden.shape[1], device=self._device, dtype=torch.float32)
        sums.index_add_(0, row_of_token, hidden.float())
        counts = (cu_seqlens[1:] - cu_seqlens[:-1]).to(torch.float32)[:, None]
        return sums / counts

    def _classify(self, cls_hidden: Tensor) -> Tensor:
        model: Any = self._hf
        features = cls_hidden[:, None, :]
        if model.config.model_type == "bert":
            pooled = model.base_model.pooler(features)
            logits = model.classifier(pooled)
        else:
            logits = model.classifier(features)
        return cast(Tensor, logits[:, 0].float())

    def _forward_padded(self, seqs: Sequence[Encoded]) -> Tensor:
        count = len(seqs)
        width = max(s.num_tokens for s in seqs)
        ids = np.full((count, width), self._pad_id, dtype=np.int64)
        mask = np.zeros((count, width), dtype=np.int64)
        types = np.zeros((count, width), dtype=np.int64)
        for row, seq in enumerate(seqs):
            ids[row, : seq.num_tokens] = seq.ids
            mask[row, : seq.num_tokens] = 1
            if seq.type_ids is not None:
                types[row, : seq.num_tokens] = seq.type_ids
        inputs = {
            "input_ids": self._to_device(ids),
            "attention_mask": self._to_device(mask),
        }
        if self._has_token_types:
            inputs["token_type_ids"] = self._to_device(types)
        output = self._hf(**inputs, return_dict=True)
        if self._task == "rerank":
            return cast(Tensor, output.logits[:, 0].float())
        assert self._pooling is not None
        return _pool(output.last_hidden_state.float(), inputs["attention_mask"], self._pooling)

    def _read_back(self, out: Tensor) -> _Launched:
        if self._device.type != "cuda":
            return _Launched(host=out.float(), ready=None)
        host = torch.empty(out.shape, dtype=torch.float32, pin_memory=True)
        host.copy_(out, non_blocking=True)
        ready = torch.cuda.Event()  # type: ignore[no-untyped-call]
        ready.record(torch.cuda.current_stream(self._device))
        return _Launched(host=host, ready=ready)

    # --- start-up self-check -----------------------------------------------------------------

    def _synthetic(self, *, count: int, length: int, seed: int = 0) -> list[Encoded]:
        generator = np.random.default_rng(seed)
        vocab = int(self._hf.config.vocab_size)
        low = min(1000, vocab // 2)
        seqs = []
        for row in range(count):
            size = max(2, length - (row % 7) * (length // 8))
            ids = generator.integers(low, vocab, size=size, dtype=np.int32)
            types = np.zeros(size, dtype=np.int32)
            types[size // 2 :] = 1
            seqs.append(Encoded(ids, types if self._tokenizer_uses_types() else None))
        return seqs

    def _tokenizer_uses_types(self) -> bool:
        embeddings = self._hf.base_model.embeddings
        token_types = getattr(embeddings, "token_type_embeddings", None)
        return token_types is not None and token_types.weight.shape[0] > 1

    def _self_check(self) -> bool:
        """Compare the padding-free forward with the Hugging Face one on random sequences."""
        assert self._packed is not None
        length = min(64, self._info.max_input_length)
        batch = self._synthetic(count=6, length=length, seed=1)
        try:
            with torch.inference_mode(), self._on_device():
                packed = self._forward_packed(batch, self._packed, self._attention_fn).float()
                # a second shape, so that a compiled kernel proves it handles dynamic sizes
                self._forward_packed(batch[:3], self._packed, self._attention_fn)
                reference = self._forward_padded(batch).float()
        except Exception:
            log.exception("the padding-free forward failed its self-check")
            return False
        error = float((packed - reference).norm() / reference.norm().clamp_min(1e-6))
        tolerance = 1e-4 if self._dtype == torch.float32 else 5e-2
        if error <= tolerance and bool(torch.isfinite(packed).all()):
            log.info("padding-free forward agrees with the reference (relative error %.2e)", error)
            return True
        log.error(
            "padding-free forward disagrees with the Hugging Face forward (relative error "
            "%.2e > %.0e); falling back to padded batches",
            error,
            tolerance,
        )
        return False


def _fusions(packed: PackedEncoder) -> str:
    return ("+fused-gelu" if packed.fused_gelu else "") + (
        "+fused-norm" if packed.fused_norm else ""
    )


def _replace_attention(info: ModelInfo, attention: str, *, padding_free: bool) -> ModelInfo:
    from dataclasses import replace

    return replace(info, attention=attention, padding_free=padding_free)


def _transformer_module(model: nn.Module) -> Any:
    for module in model.modules():
        if hasattr(module, "auto_model") or type(module).__name__ == "Transformer":
            return module
    raise UnsupportedModelError("the model has no sentence-transformers Transformer module")


def _pooling_of(st: nn.Module) -> _Pooling:
    children = list(st.children())
    names = [type(child).__name__ for child in children]
    if len(children) < 2 or names[1] != "Pooling":
        raise UnsupportedModelError(f"an embedding model needs Transformer -> Pooling, got {names}")
    extra = [name for name in names[2:] if name != "Normalize"]
    if extra:
        raise UnsupportedModelError(f"modules after Pooling are not supported: {extra}")
    pooling = children[1]
    mode = getattr(pooling, "pooling_mode", None)
    if mode is None:
        flags = {
            "cls": "pooling_mode_cls_token",
            "mean": "pooling_mode_mean_tokens",
            "max": "pooling_mode_max_tokens",
            "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
            "lasttoken": "pooling_mode_lasttoken",
        }
        chosen = [name for name, attr in flags.items() if getattr(pooling, attr, False)]
        mode = chosen[0] if len(chosen) == 1 else None
    if isinstance(mode, list | tuple):
        mode = mode[0] if len(mode) == 1 else None
    if mode not in _POOLING:
        raise UnsupportedModelError(f"pooling mode {mode!r} is not one of {_POOLING}")
    return _Pooling(mode=str(mode), normalize="Normalize" in names[2:])


def _pool(hidden: Tensor, mask: Tensor, pooling: _Pooling) -> Tensor:
    weights = mask.to(hidden.dtype)[:, :, None]
    if pooling.mode == "cls":
        return hidden[:, 0]
    if pooling.mode == "max":
        return hidden.masked_fill(weights == 0, float("-inf")).max(dim=1).values
    if pooling.mode == "lasttoken":
        last = mask.sum(dim=1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    summed = (hidden * weights).sum(dim=1)
    counts = weights.sum(dim=1).clamp_min(1e-9)
    if pooling.mode == "mean_sqrt_len_tokens":
        return summed / counts.sqrt()
    return summed / counts


def _activation_name(activation: object) -> ScoreActivation:
    if activation is None or isinstance(activation, nn.Identity):
        return "identity"
    if isinstance(activation, nn.Sigmoid):
        return "sigmoid"
    raise UnsupportedModelError(
        f"score activation {type(activation).__name__} is not supported (Sigmoid or Identity)"
    )


def _position_limit(model: PreTrainedModel) -> int:
    embeddings = model.base_model.embeddings
    table = getattr(embeddings, "position_embeddings", None)
    if table is None:
        return int(getattr(model.config, "max_position_embeddings", 512))
    padding_idx = table.padding_idx
    offset = 0 if padding_idx is None else int(padding_idx) + 1
    return int(table.weight.shape[0]) - offset
