"""The hooks of the benchmark arms (``registry.ARMS``): each imports its arm module or cost
model when called, so reading the registry (``layerpar --help``) imports no torch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from layerpar.bench.common import StepTimes
    from layerpar.bench.costmodel import Link, Prediction
    from layerpar.bench.profile import Profile
    from layerpar.config import RunConfig


class RunFn(Protocol):
    """An arm's per-rank function: this rank's step seconds and its bytes sent per step."""

    def __call__(self, config: RunConfig, warmup: int, steps: int, *, microbatches: int) -> StepTimes: ...


class PredictFn(Protocol):
    """An arm's cost model: predicted step on ``stages`` × ``replicas`` devices (None: no layout)."""

    def __call__(
        self,
        profile: Profile,
        stages: int,
        replicas: int,
        *,
        link: Link,
        microbatches: int,
        contention: float,
    ) -> Prediction | None: ...


def run_serial(config: RunConfig, warmup: int, steps: int, *, microbatches: int) -> StepTimes:
    from layerpar.bench.arms import arm_serial

    return arm_serial(config, warmup, steps, microbatches=microbatches)


def run_serial_threads(config: RunConfig, warmup: int, steps: int, *, microbatches: int) -> StepTimes:
    from layerpar.bench.arms import arm_serial_threads

    return arm_serial_threads(config, warmup, steps, microbatches=microbatches)


def run_contention(config: RunConfig, warmup: int, steps: int, *, microbatches: int) -> StepTimes:
    from layerpar.bench.arms import arm_serial_copies

    return arm_serial_copies(config, warmup, steps, microbatches=microbatches)


def run_layerpar(config: RunConfig, warmup: int, steps: int, *, microbatches: int) -> StepTimes:
    from layerpar.bench.arms import arm_layerpar

    return arm_layerpar(config, warmup, steps, microbatches=microbatches)


def run_with_method(method: str, **layerpar: object) -> RunFn:
    """The ``layerpar`` arm with ``layerpar.method`` = ``method`` (and any further ``layerpar``
    settings) instead of the config's."""

    def run(config: RunConfig, warmup: int, steps: int, *, microbatches: int) -> StepTimes:
        from layerpar.bench.arms import arm_layerpar
        from layerpar.config import replace

        return arm_layerpar(
            replace(config, layerpar={"method": method, **layerpar}), warmup, steps, microbatches=microbatches
        )

    return run


def run_layerpar_minimal(config: RunConfig, warmup: int, steps: int, *, microbatches: int) -> StepTimes:
    from layerpar.bench.minimal_arm import arm_layerpar_minimal

    return arm_layerpar_minimal(config, warmup, steps, microbatches=microbatches)


def run_ddp(config: RunConfig, warmup: int, steps: int, *, microbatches: int) -> StepTimes:
    from layerpar.bench.arms import arm_ddp

    return arm_ddp(config, warmup, steps, microbatches=microbatches)


def run_gpipe(config: RunConfig, warmup: int, steps: int, *, microbatches: int) -> StepTimes:
    from layerpar.bench.arms import arm_pipeline

    return arm_pipeline(config, warmup, steps, schedule="gpipe", microbatches=microbatches)


def run_1f1b(config: RunConfig, warmup: int, steps: int, *, microbatches: int) -> StepTimes:
    from layerpar.bench.arms import arm_pipeline

    return arm_pipeline(config, warmup, steps, schedule="1f1b", microbatches=microbatches)


def multistage(schedule: str) -> RunFn:
    def run(config: RunConfig, warmup: int, steps: int, *, microbatches: int) -> StepTimes:
        from layerpar.bench.multistage_arms import arm_multistage

        return arm_multistage(config, warmup, steps, schedule=schedule, microbatches=microbatches)

    return run


def run_deepspeed(config: RunConfig, warmup: int, steps: int, *, microbatches: int) -> StepTimes:
    from layerpar.bench.deepspeed_arm import arm_deepspeed

    return arm_deepspeed(config, warmup, steps, microbatches=microbatches)


def predict_serial(
    profile: Profile, stages: int, replicas: int, *, link: Link, microbatches: int, contention: float
) -> Prediction | None:
    from layerpar.bench.costmodel import predict_serial

    return predict_serial(profile) if stages == 1 and replicas == 1 else None


def predict_contention(
    profile: Profile, stages: int, replicas: int, *, link: Link, microbatches: int, contention: float
) -> Prediction | None:
    from layerpar.bench.costmodel import predict_serial_copies

    return predict_serial_copies(profile, stages * replicas, contention)


def predict_layerpar(
    profile: Profile, stages: int, replicas: int, *, link: Link, microbatches: int, contention: float
) -> Prediction | None:
    from layerpar.bench.costmodel import predict_layerpar

    return predict_layerpar(profile, stages, replicas, link, contention)


def predict_ddp(
    profile: Profile, stages: int, replicas: int, *, link: Link, microbatches: int, contention: float
) -> Prediction | None:
    from layerpar.bench.costmodel import predict_ddp

    return predict_ddp(profile, stages * replicas, link, contention, stages, replicas)


def predict_gpipe(
    profile: Profile, stages: int, replicas: int, *, link: Link, microbatches: int, contention: float
) -> Prediction | None:
    from layerpar.bench.costmodel import predict_pipeline

    return predict_pipeline(profile, stages, replicas, microbatches, link, contention, "gpipe")


def predict_multistage(schedule: str) -> PredictFn:
    def hook(
        profile: Profile, stages: int, replicas: int, *, link: Link, microbatches: int, contention: float
    ) -> Prediction | None:
        from layerpar.bench.costmodel_multistage import predict_multistage

        return predict_multistage(profile, stages, replicas, microbatches, link, contention, schedule)

    return hook


def predict_1f1b(
    profile: Profile, stages: int, replicas: int, *, link: Link, microbatches: int, contention: float
) -> Prediction | None:
    from layerpar.bench.costmodel import predict_pipeline

    return predict_pipeline(profile, stages, replicas, microbatches, link, contention, "1f1b")
