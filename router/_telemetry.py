"""OpenTelemetry spans (one per attempt) and metrics for the router. API only; bring your own SDK."""

from __future__ import annotations

from typing import Any

from opentelemetry import metrics, trace

from .translate.base import dropped_names

SCOPE = "llm_cache_middleware.router"


class Telemetry:
    def __init__(self, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        self.tracer = trace.get_tracer(SCOPE, tracer_provider=tracer_provider)
        meter = metrics.get_meter(SCOPE, meter_provider=meter_provider)
        self.attempts = meter.create_counter("router.attempts", description="attempts sent to deployments")
        self.retries = meter.create_counter("router.retries", description="attempts that were retries")
        self.fallbacks = meter.create_counter("router.fallbacks", description="switches to a fallback group")
        self.cooldowns = meter.create_counter("router.cooldowns", description="deployments put into cooldown")
        self.latency = meter.create_histogram(
            "router.latency", unit="s", description="time to response headers (first byte for streams)"
        )

    def start_attempt(self, group: str, deployment: str, attempt: int, wait: float) -> Any:
        return self.tracer.start_span(
            "router.attempt",
            attributes={
                "router.group": group,
                "router.deployment": deployment,
                "router.attempt": attempt,
                "router.wait_s": wait,
            },
        )

    @staticmethod
    def translated(span: Any, source: str, target: str, dropped: list[str]) -> None:
        span.set_attribute("router.translated", f"{source}->{target}")
        if dropped:  # the caller's body keys: as the header says them, printable and bounded
            span.set_attribute("router.dropped_params", dropped_names(dropped))

    def end_attempt(
        self, span: Any, group: str, deployment: str, outcome: str, status: int | None, seconds: float, retry: bool
    ) -> None:
        span.set_attribute("router.outcome", outcome)
        if status is not None:
            span.set_attribute("http.response.status_code", status)
        if outcome != "ok":
            span.set_status(trace.Status(trace.StatusCode.ERROR, outcome))
        span.end()
        labels = {"group": group, "deployment": deployment, "outcome": outcome}
        self.attempts.add(1, labels)
        if retry:
            self.retries.add(1, {"group": group})
        self.latency.record(seconds, {"deployment": deployment, "outcome": outcome})

    def fallback(self, src: str, dst: str, reason: str) -> None:
        self.fallbacks.add(1, {"from": src, "to": dst, "reason": reason})

    def cooldown(self, deployment: str) -> None:
        self.cooldowns.add(1, {"deployment": deployment})


__all__ = ["SCOPE", "Telemetry"]
