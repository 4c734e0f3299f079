"""TorchRunner: the one place that talks to torch, transformers and sentence-transformers.

Loads a CrossEncoder (task rerank) or a SentenceTransformer (task embed) once, then serves the
engine: tokenize, collate into one pinned host buffer, copy to the device and launch without
waiting, and read results back once per batch (a pinned copy behind a CUDA event). CUDA
out-of-memory errors free the cache and surface as DeviceOutOfMemoryError.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from kuberank_inference.engine.contracts import (
    Abandoned,
    BatchHandle,
    DeviceMemory,
    ModelInfo,
    ModelInput,
    Output,
    PairsInput,
    Task,
    TextsInput,
    TokenizedSequence,
)
from kuberank_inference.failures import DeviceOutOfMemoryError
from kuberank_inference.gateset import gate_set
from kuberank_inference.quality import GateThresholds, PrecisionReport, refused, run_gate
from kuberank_inference.torchmodel.checkpoints import (
    UnsupportedModelError,
    load_checkpoint,
    place,
    pool,
)
from kuberank_inference.torchmodel.packed import (
    AttentionFn,
    PackedEncoder,
    PackedLayout,
    packing_obstacle,
    padded_attention,
    varlen_attention,
)
from kuberank_inference.torchmodel.selfcheck import agrees_with_reference, synthetic_batch
from kuberank_inference.torchmodel.settings import RunnerSettings
from kuberank_inference.torchmodel.tokenizing import Encoded, SequenceTokenizer, TokenizerSpec

__all__ = ["RunnerSettings", "TorchRunner", "UnsupportedModelError"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Launched:
    host: Tensor
    ready: torch.cuda.Event | None


class TorchRunner:
    def __init__(self, settings: RunnerSettings) -> None:
        from kuberank_inference.sources import detect_task

        self._device, dtype_name, self._dtype = place(settings)
        task: Task = detect_task(settings.source.path) if settings.task == "auto" else settings.task
        self._task = task

        hf_model, tokenizer, max_length, activation, pooling = load_checkpoint(
            settings, task, device=self._device, dtype=self._dtype
        )
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
            device_name=(
                torch.cuda.get_device_name(self._device) if self._device.type == "cuda" else "cpu"
            ),
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
        if settings.dtype == "fp8":
            with self._on_device():
                precision = self._start_fp8(settings)
            self._info = replace(self._info, precision=precision, dtype=precision.served)

    # --- loading -----------------------------------------------------------------------------

    def _varlen_usable(self) -> bool:
        return self._device.type == "cuda" and self._dtype in (torch.float16, torch.bfloat16)

    def tokenizer_spec(self) -> TokenizerSpec:
        """What another process needs to tokenize exactly like this runner."""
        return TokenizerSpec(self._tokenizer_json, self._tokenizer.max_length, self._uses_type_ids)

    def close(self) -> None:
        """Nothing to release: the model lives as long as the process."""

    # --- the ModelRunner protocol ------------------------------------------------------------

    @property
    def info(self) -> ModelInfo:
        return self._info

    def encode(
        self, request: ModelInput, *, abandoned: Abandoned | None = None
    ) -> list[TokenizedSequence]:
        return list(self._tokenizer.encode(request, abandoned=abandoned))

    def start_batch(self, sequences: Sequence[TokenizedSequence]) -> BatchHandle:
        encoded = cast(Sequence[Encoded], sequences)
        tokens = sum(seq.num_tokens for seq in encoded)
        detail = None
        try:
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

    def free_device_bytes(self) -> int | None:
        """Device memory free now, this process's cache returned first (others count)."""
        if self._device.type != "cuda":
            return None
        torch.cuda.empty_cache()
        return int(torch.cuda.mem_get_info(self._device)[0])

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
        return pool(output.last_hidden_state.float(), inputs["attention_mask"], self._pooling)

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
        vocab = int(self._hf.config.vocab_size)
        return synthetic_batch(
            vocab=vocab, count=count, length=length, seed=seed, with_types=self._uses_type_ids
        )

    def _self_check(self) -> bool:
        """Compare the padding-free forward with the Hugging Face one on random sequences."""
        packed = self._packed
        assert packed is not None
        batch = self._synthetic(count=6, length=min(64, self._info.max_input_length), seed=1)

        def forward_packed(seqs: Sequence[Encoded]) -> Tensor:
            return self._forward_packed(seqs, packed, self._attention_fn)

        with self._on_device():
            return agrees_with_reference(
                batch,
                packed=forward_packed,
                reference=self._forward_padded,
                tolerance=1e-4 if self._dtype == torch.float32 else 5e-2,
            )

    # --- FP8 and its quality gate ------------------------------------------------------------

    def _start_fp8(self, settings: RunnerSettings) -> PrecisionReport:
        """Swap in the FP8 encoder if the device, the model and the quality gate allow it;
        otherwise keep bf16. The report says which, and why, for the log, /info and metrics."""
        from kuberank_inference.torchmodel.fp8 import Fp8Encoder, fp8_model_obstacle, fp8_obstacle

        served = self._info.dtype
        obstacle = fp8_obstacle(self._device)
        if obstacle is not None:
            return refused("refused_device", obstacle, served)
        packed = self._packed
        if packed is None:
            reason = "FP8 needs the padding-free forward, which this model does not run"
            return refused("refused_model", reason, served)
        model_obstacle = fp8_model_obstacle(packed, str(self._hf.config.hidden_act))
        if model_obstacle is not None:
            return refused("refused_model", model_obstacle, served)
        built: list[Fp8Encoder] = []

        def candidate() -> list[list[float]]:
            built.append(Fp8Encoder(self._hf, compile_kernels=True))
            return self.gate_scores(built[0])

        report = run_gate(
            reference=lambda: self.gate_scores(packed),
            candidate=candidate,
            thresholds=GateThresholds(
                min_spearman=settings.fp8_min_spearman,
                min_top_k_overlap=settings.fp8_min_top_k_overlap,
            ),
            fallback=served,
        )
        if report.state == "active":
            fp8 = built[0]
            self._packed = fp8
            self._info = replace(
                self._info, attention=f"{self._info.attention}+fp8-{fp8.kernels.kind}"
            )
        return report

    def gate_scores(self, encoder: PackedEncoder) -> list[list[float]]:
        """The calibration set (kuberank_inference.gateset) scored through `encoder`: per query,
        one score per document (the cross-encoder's logit, or the embeddings' cosine)."""
        scores: list[list[float]] = []
        with torch.inference_mode():
            for item in gate_set():
                if self._task == "rerank":
                    request: ModelInput = PairsInput(item.query, item.documents, truncate=True)
                    seqs = self._tokenizer.encode(request)
                    out = self._forward_packed(seqs, encoder, self._attention_fn).float()
                    scores.append([float(x) for x in out.tolist()])
                else:
                    texts = TextsInput((item.query, *item.documents), truncate=True)
                    seqs = self._tokenizer.encode(texts)
                    out = self._forward_packed(seqs, encoder, self._attention_fn).float()
                    out = torch.nn.functional.normalize(out, dim=-1)
                    scores.append([float(x) for x in (out[1:] @ out[0]).tolist()])
        return scores


def _fusions(packed: PackedEncoder) -> str:
    fused = (("+fused-gelu", packed.fused_gelu), ("+fused-norm", packed.fused_norm))
    return "".join(name for name, on in fused if on)


def _replace_attention(info: ModelInfo, attention: str, *, padding_free: bool) -> ModelInfo:
    return replace(info, attention=attention, padding_free=padding_free)
