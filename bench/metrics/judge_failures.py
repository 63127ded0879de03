"""What a judge answer can be besides a score: the failure classes every judge metric counts.

Every request to a judge ends in exactly one class:

- ``ok``: an answer that reads as scores in the template's range;
- ``unreadable``: an answer with no score the template's rules can read;
- ``out_of_range``: an answer whose scores lie outside the template's range;
- ``refused``: the provider marks the answer as a refusal (OpenAI's ``message.refusal``);
- ``content_filtered``: the provider's content filter stopped it (``finish_reason:
  content_filter``, or an error whose code or type names the content filter);
- ``transport_error``: no answer after the retries: connection errors, HTTP errors, a body
  that is not JSON or a reply without ``choices`` (the server's own message is kept);
- ``timeout``: no answer within ``timeout_s`` on every try.

A cell whose sample has no instruction is ``no_instruction``: not asked, so not a judge
failure, but NaN as well. A failure is never a score: the value is NaN and the cell's note
keeps the class and the specific reason. Requests that got no answer (``REQUEST_FAILURES``)
are not cached; ``editbench score --retry-failed`` asks them again.
"""

from dataclasses import dataclass

OK = "ok"
UNREADABLE = "unreadable"
OUT_OF_RANGE = "out_of_range"
REFUSED = "refused"
CONTENT_FILTERED = "content_filtered"
TRANSPORT_ERROR = "transport_error"
TIMEOUT = "timeout"
NO_INSTRUCTION = "no_instruction"

#: The failure classes in the order tables show them.
FAILURE_CLASSES = (UNREADABLE, OUT_OF_RANGE, REFUSED, CONTENT_FILTERED, TRANSPORT_ERROR, TIMEOUT, NO_INSTRUCTION)
#: The classes of requests the judge did not answer: never cached, asked again by ``--retry-failed``.
REQUEST_FAILURES = frozenset({REFUSED, CONTENT_FILTERED, TRANSPORT_ERROR, TIMEOUT})


class JudgeFailure(Exception):
    """A judge request that ended without an answer: its class (``REFUSED``, ...) and message."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Failure:
    """Why one value is NaN: its class and the specific reason."""

    kind: str
    reason: str
