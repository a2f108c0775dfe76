"""The sandbox's settings: every fault is a field whose default injects nothing."""

from __future__ import annotations

from dataclasses import dataclass, fields

MIN_IMAGE_SIZE = 8
MAX_IMAGE_SIZE = 2048
# The failCode of each failure kind the sandbox emits (the messages are in api.FAIL_REASONS).
FAIL_CODES = ("500", "400", "422")


@dataclass(frozen=True)
class SandboxConfig:
    """How the sandbox behaves. The defaults are a healthy, fault-free server.

    Rates are fractions in [0, 1]; times are seconds; ``None`` switches a limit off.
    """

    generation_time: float = 2.0  # seconds from create to the task's end
    latency: float = 0.0  # added to every API and file request
    rate_limit: float | None = None  # requests/s over create+query; more get 429
    error_rate: float = 0.0  # create/query answered 500
    fail_rate: float = 0.0  # tasks that end in `fail`
    fail_code: str | None = None  # every failed task gets this kind; None: drawn at random
    credits: int | None = None  # creates that succeed before 402
    drop_rate: float = 0.0  # creates that make a task, then close the connection unanswered
    garbage_rate: float = 0.0  # create/query answered with an HTML page
    errors_in_body: bool = False  # API errors as HTTP 200 with the code in the body
    completed_state: bool = False  # finished tasks say `completed` instead of `success`
    minimal_fields: bool = False  # task objects carry only the documented fields
    url_ttl: float | None = None  # result URLs answer 404 this long after the task ends
    seed: int | None = None  # fixes every random draw, so a scenario repeats
    api_key: str | None = None  # the accepted key; random per start when None
    image_size: int = 64  # long side of 1k result images, in pixels (2k: twice, 4k: 4 times)

    def __post_init__(self) -> None:
        for name in ("error_rate", "fail_rate", "drop_rate", "garbage_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, not {value!r}")
        for name in ("generation_time", "latency", "url_ttl"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must not be negative, not {value!r}")
        if self.rate_limit is not None and self.rate_limit <= 0:
            raise ValueError(f"rate_limit must be positive, not {self.rate_limit!r}")
        if self.credits is not None and self.credits < 0:
            raise ValueError(f"credits must not be negative, not {self.credits!r}")
        if self.fail_code is not None and self.fail_code not in FAIL_CODES:
            raise ValueError(
                f"fail_code must be one of {', '.join(FAIL_CODES)}, not {self.fail_code!r}"
            )
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("api_key must not be empty")
        if not MIN_IMAGE_SIZE <= self.image_size <= MAX_IMAGE_SIZE:
            raise ValueError(
                f"image_size must be between {MIN_IMAGE_SIZE} and {MAX_IMAGE_SIZE}, "
                f"not {self.image_size!r}"
            )

    def faults(self) -> dict[str, object]:
        """The fields that differ from the defaults, for a one-line summary (the key is hidden)."""
        default = SandboxConfig()
        return {
            field.name: getattr(self, field.name)
            for field in fields(self)
            if field.name != "api_key" and getattr(self, field.name) != getattr(default, field.name)
        }
