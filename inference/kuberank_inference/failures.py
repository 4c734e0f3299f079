"""Errors a caller can cause or meet, named for what went wrong; the HTTP layer maps them to
status codes and TEI's `{error, error_type}` bodies."""

from __future__ import annotations


class InferenceError(Exception):
    """Base of every error that is reported to a client instead of crashing the server."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MalformedRequestError(InferenceError):
    """The body is not JSON (or not a JSON object)."""


class EmptyInputError(InferenceError):
    """A list of texts or documents is empty."""


class InvalidRequestError(InferenceError):
    """A field has the wrong type or a value outside its allowed range."""


class PayloadTooLargeError(InferenceError):
    """The body is over --payload-limit, or a request holds more texts than
    --max-client-batch-size."""


class InputTooLongError(InvalidRequestError):
    """A sequence has more tokens than the model accepts and the request did not allow truncation.

    `index` counts the sequences of the model call (-1: the query, too long for any document);
    `where` names the request field; `at_least` says the text was measured on a prefix only."""

    def __init__(
        self,
        *,
        index: int,
        where: str,
        tokens: int,
        limit: int,
        with_query: bool,
        at_least: bool = False,
    ) -> None:
        counted = "with the query and special tokens" if with_query else "with special tokens"
        if where == "query":
            counted = "with special tokens, before any document"
        size = f"at least {tokens}" if at_least else str(tokens)
        super().__init__(
            f"{where} is {size} tokens long ({counted}) but the model accepts at most "
            f'{limit}; shorten it or send "truncate": true to cut it to {limit} tokens'
        )
        self.index = index
        self.where = where
        self.tokens = tokens
        self.limit = limit
        self.with_query = with_query
        self.at_least = at_least

    def __reduce__(self) -> tuple[object, ...]:
        """Rebuilt from its fields when it crosses a process boundary (a tokenizer process)."""
        fields = (self.index, self.where, self.tokens, self.limit, self.with_query, self.at_least)
        return (_input_too_long, fields)

    def shifted(self, offset: int) -> InputTooLongError:
        """The same error for a slice of the texts that began at `offset`."""
        index = self.index + offset
        where = f"texts[{index}]" if self.where.startswith("texts[") else self.where
        return self._moved(index, where)

    def renamed(self, where: str) -> InputTooLongError:
        return self._moved(self.index, "query" if self.where == "query" else where)

    def _moved(self, index: int, where: str) -> InputTooLongError:
        return _input_too_long(
            index, where, self.tokens, self.limit, self.with_query, self.at_least
        )


class WrongTaskError(InvalidRequestError):
    """The endpoint needs a model of the other task (an embedding endpoint on a reranker)."""


class OverloadedError(InferenceError):
    """More pairs are in flight than --max-concurrent-pairs allows: rejected at once, never
    queued."""


class InferenceFailedError(InferenceError):
    """The model could not produce a result for this request (for example out of device memory
    even for a single sequence)."""


class NotReadyError(InferenceError):
    """The model is still loading, or the server is shutting down."""


class UnauthorizedError(InferenceError):
    """An API token is configured and the request did not carry it."""


class UnsupportedMediaTypeError(InferenceError):
    """The body is not declared as JSON (Content-Type), or is compressed (Content-Encoding)."""


class RequestAbandonedError(Exception):
    """The client left while its request was tokenized: the rest is skipped (never answered)."""


class DeviceOutOfMemoryError(Exception):
    """Raised by a model runner when the accelerator ran out of memory for one batch; the engine
    splits the batch and retries (never shown to a client as is)."""

    def __init__(self, *, tokens: int, detail: str) -> None:
        super().__init__(f"device out of memory on a batch of {tokens} tokens: {detail}")
        self.tokens = tokens
        self.detail = detail


def _input_too_long(
    index: int, where: str, tokens: int, limit: int, with_query: bool, at_least: bool
) -> InputTooLongError:
    return InputTooLongError(
        index=index,
        where=where,
        tokens=tokens,
        limit=limit,
        with_query=with_query,
        at_least=at_least,
    )
