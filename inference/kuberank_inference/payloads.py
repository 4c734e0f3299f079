"""Request bodies of the TEI, Cohere and OpenAI shapes, validated into typed requests. Pure: a
decoded JSON value in, a request or an error that names the field, the limit and the fix out."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from kuberank_inference.engine.contracts import Direction
from kuberank_inference.failures import (
    EmptyInputError,
    InvalidRequestError,
    MalformedRequestError,
    PayloadTooLargeError,
)


@dataclass(frozen=True, slots=True)
class Limits:
    max_client_batch_size: int


@dataclass(frozen=True, slots=True)
class TeiRerank:
    query: str
    texts: list[str]
    truncate: bool
    direction: Direction
    raw_scores: bool
    return_text: bool


@dataclass(frozen=True, slots=True)
class CohereRerank:
    query: str
    documents: list[str]
    top_n: int | None
    return_documents: bool
    max_tokens_per_doc: int | None
    version: Literal["1", "2"]


@dataclass(frozen=True, slots=True)
class TeiEmbed:
    inputs: list[str]
    normalize: bool
    truncate: bool
    direction: Direction
    dimensions: int | None


@dataclass(frozen=True, slots=True)
class OpenAiEmbed:
    inputs: list[str]
    encoding_format: Literal["float", "base64"]
    dimensions: int | None


_SURROGATE = re.compile("[\ud800-\udfff]")
_SHOWN = 60


def decode_json(body: bytes) -> dict[str, Any]:
    """The body as a JSON object: strict UTF-8, no NaN or Infinity, no key twice in an object,
    integers within Python's 4300 digits, nesting within the interpreter's limit. The decoder
    stays in C for numbers (a Python hook per number would cost 0.2 s for a 2 MB body)."""
    if not body.strip():
        raise MalformedRequestError("the request body is empty; send a JSON object")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise MalformedRequestError(
            f"the request body is not valid JSON: byte {error.start} is not UTF-8 "
            f"({error.reason}); send the JSON encoded as UTF-8"
        ) from None
    try:
        value = json.loads(text, parse_constant=_no_constant, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as error:
        raise MalformedRequestError(f"the request body is not valid JSON: {error}") from None
    except RecursionError:
        raise MalformedRequestError(
            "the request body is not valid JSON here: it nests arrays or objects too deeply; "
            "the API's bodies nest at most three levels"
        ) from None
    except ValueError as error:  # Python's limit on the digits of an integer
        raise InvalidRequestError(
            f"a number in the request body is out of range ({str(error).split(';')[0]}); "
            "send integers of a sensible size"
        ) from None
    if not isinstance(value, dict):
        raise MalformedRequestError(f"the request body must be a JSON object, got {_kind(value)}")
    return value


def _no_constant(name: str) -> object:
    raise MalformedRequestError(
        f"the request body is not valid JSON: {name} is not a JSON value (JSON numbers are finite)"
    )


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise InvalidRequestError(
                    f"the key {_shown(key)} appears twice in one object; send each field once"
                )
            seen.add(key)
    return value


def _shown(value: object) -> str:
    """A value for an error message, never longer than a line."""
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _text(value: str, where: str) -> str:
    """A string the tokenizer can take: lone UTF-16 surrogates ('\\ud800') are not Unicode."""
    if value.isascii():  # CPython keeps this flag on the string: no scan at all
        return value
    found = _SURROGATE.search(value)
    if found is not None:
        raise InvalidRequestError(
            f"`{where}` holds a lone UTF-16 surrogate (\\u{ord(found.group()):04x}) at character "
            f"{found.start()}; send valid Unicode text"
        )
    return value


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _string(body: Mapping[str, Any], field: str) -> str:
    if field not in body:
        raise InvalidRequestError(f"`{field}` is required: send it as a string")
    value = body[field]
    if not isinstance(value, str):
        raise InvalidRequestError(f"`{field}` must be a string, got {_kind(value)}")
    return _text(value, field)


def _bool(body: Mapping[str, Any], field: str, default: bool) -> bool:
    value = body.get(field, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidRequestError(f"`{field}` must be true or false, got {_kind(value)}")
    return value


def _optional_int(body: Mapping[str, Any], field: str, *, minimum: int) -> int | None:
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequestError(f"`{field}` must be an integer >= {minimum}, got {_kind(value)}")
    if value < minimum:
        raise InvalidRequestError(f"`{field}` must be an integer >= {minimum}, got {value}")
    return value


def _direction(body: Mapping[str, Any]) -> Direction:
    value = body.get("truncation_direction", "Right")
    if value is None:
        return "right"
    if isinstance(value, str) and value.lower() == "left":
        return "left"
    if isinstance(value, str) and value.lower() == "right":
        return "right"
    raise InvalidRequestError(
        f'`truncation_direction` must be "Right" or "Left", got {_shown(value)}'
    )


def _string_list(
    value: object, field: str, limits: Limits, *, allow_text_objects: bool
) -> list[str]:
    if not isinstance(value, list):
        raise InvalidRequestError(f"`{field}` must be an array of strings, got {_kind(value)}")
    if not value:
        raise EmptyInputError(f"`{field}` is empty; send at least one text")
    if len(value) > limits.max_client_batch_size:
        raise PayloadTooLargeError(
            f"`{field}` holds {len(value)} items but at most {limits.max_client_batch_size} "
            "are allowed per request (--max-client-batch-size); split the request"
        )
    texts: list[str] = []
    for index, item in enumerate(value):
        if isinstance(item, str):
            texts.append(_text(item, f"{field}[{index}]"))
        elif allow_text_objects and isinstance(item, dict) and isinstance(item.get("text"), str):
            texts.append(_text(item["text"], f"{field}[{index}].text"))
        else:
            expected = 'a string or {"text": string}' if allow_text_objects else "a string"
            raise InvalidRequestError(f"`{field}[{index}]` must be {expected}, got {_kind(item)}")
    return texts


def _inputs(value: object, field: str, limits: Limits) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        raise InvalidRequestError(f"`{field}` as token ids is not supported; send text")
    return _string_list(value, field, limits, allow_text_objects=False)


def parse_tei_rerank(body: Mapping[str, Any], limits: Limits) -> TeiRerank:
    query = _string(body, "query")
    if "texts" not in body:
        raise InvalidRequestError("`texts` is required: send an array of strings")
    return TeiRerank(
        query=query,
        texts=_string_list(body["texts"], "texts", limits, allow_text_objects=False),
        truncate=_bool(body, "truncate", False),
        direction=_direction(body),
        raw_scores=_bool(body, "raw_scores", False),
        return_text=_bool(body, "return_text", False),
    )


def parse_cohere_rerank(
    body: Mapping[str, Any], limits: Limits, *, version: Literal["1", "2"]
) -> CohereRerank:
    query = _string(body, "query")
    if "documents" not in body:
        raise InvalidRequestError(
            '`documents` is required: send an array of strings or {"text": ...}'
        )
    documents = _string_list(body["documents"], "documents", limits, allow_text_objects=True)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidRequestError(f"`model` must be a string, got {_kind(model)}")
    return CohereRerank(
        query=query,
        documents=documents,
        top_n=_optional_int(body, "top_n", minimum=1),
        # Cohere's v1 API returns documents unless told not to; v2 only when asked
        return_documents=_bool(body, "return_documents", version == "1"),
        max_tokens_per_doc=_optional_int(body, "max_tokens_per_doc", minimum=1),
        version=version,
    )


def parse_tei_embed(body: Mapping[str, Any], limits: Limits) -> TeiEmbed:
    if "inputs" not in body:
        raise InvalidRequestError("`inputs` is required: send a string or an array of strings")
    if body.get("prompt_name") is not None:
        raise InvalidRequestError("`prompt_name` is not supported by this server; leave it out")
    return TeiEmbed(
        inputs=_inputs(body["inputs"], "inputs", limits),
        normalize=_bool(body, "normalize", True),
        truncate=_bool(body, "truncate", False),
        direction=_direction(body),
        dimensions=_optional_int(body, "dimensions", minimum=1),
    )


def parse_openai_embed(body: Mapping[str, Any], limits: Limits) -> OpenAiEmbed:
    if "input" not in body:
        raise InvalidRequestError("`input` is required: send a string or an array of strings")
    encoding = body.get("encoding_format", "float")
    if encoding is None:
        encoding = "float"
    if encoding not in ("float", "base64"):
        raise InvalidRequestError(
            f'`encoding_format` must be "float" or "base64", got {_shown(encoding)}'
        )
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidRequestError(f"`model` must be a string, got {_kind(model)}")
    return OpenAiEmbed(
        inputs=_inputs(body["input"], "input", limits),
        encoding_format="base64" if encoding == "base64" else "float",
        dimensions=_optional_int(body, "dimensions", minimum=1),
    )


def parse_inject_oom(body: Mapping[str, Any]) -> int:
    count = _optional_int(body, "count", minimum=1)
    if count is None:
        raise InvalidRequestError("`count` is required: the number of batches to fail")
    return count
