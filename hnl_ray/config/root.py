"""The root config: one YAML file describes a whole run."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationError, model_validator

from ..stages import NAMES as STAGES
from .base import SafeName, Section
from .cf import TrainConfig, metric_k
from .hnlmrec import FinetuneConfig, HardnegConfig, TeacherConfig
from .llm import EmbedConfig, LLMConfig, NegativesConfig, ProfilesConfig
from .tune import TuneConfig
from .data import DataSource, FilterConfig, SplitConfig, SyntheticSource


class RayConfig(Section):
    address: str | None = Field(
        None, description="Ray cluster to join. Null: `RAY_ADDRESS` when set, otherwise a local Ray is started."
    )
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local Ray (null = all).")
    object_store_memory: int | None = Field(None, ge=78_643_200, description="Bytes of a local Ray's object store.")
    resource_wait_s: float = Field(
        900, ge=0, description="How long a stage that needs GPUs (or an accelerator type) waits for the cluster's "
        "autoscaler to add nodes before failing with the resource named. A local Ray fails at once.")


class PipelineConfig(Section):
    stages: list[Literal[STAGES]] = Field(list(STAGES), description="Stages `hnl-ray run` runs, in the fixed "
                                                                    "order of the stage graph.")


class Config(Section):
    name: SafeName = Field("demo", description="Run name; used in the default run directory.")
    run_dir: str = Field("runs/{name}", description="Where artifacts go: a local path or a pyarrow filesystem URI "
                                                    "(s3://, gs://). `{name}` is replaced by `name`.")
    seed: int = Field(2025, description="Global seed (splits, samplers, generation).")
    llm_seed: int | None = Field(
        None, description="Seed of the model-driven stages alone (profiles, negatives, teacher, finetune, "
        "hardneg): another value is another draw of them on the same split (the benchmarks' second draw). "
        "Null: `seed`.")
    ray: RayConfig = Field(default_factory=RayConfig, description="How to reach Ray.")
    data: DataSource = Field(default_factory=SyntheticSource, description="Source dataset; `format` picks the "
                                                                          "reader.")
    filters: FilterConfig = Field(default_factory=FilterConfig, description="Filters applied before splitting.")
    split: SplitConfig = Field(default_factory=SplitConfig, description="How interactions are split.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Collaborative-filtering training.")
    llm: LLMConfig = Field(default_factory=LLMConfig, description="The LLM engine of the generation stages.")
    profiles: ProfilesConfig = Field(default_factory=ProfilesConfig, description="Item and user profiles.")
    negatives: NegativesConfig = Field(default_factory=NegativesConfig, description="Semantic hard negatives "
                                                                                     "(method 1).")
    embed: EmbedConfig = Field(default_factory=EmbedConfig, description="Sentence embeddings and grounding.")
    teacher: TeacherConfig = Field(default_factory=TeacherConfig, description="HNLMRec: the CF teacher and its "
                                                                              "mined hard negatives.")
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig, description="HNLMRec: LoRA contrastive "
                                                                                 "fine-tuning on Ray Train.")
    hardneg: HardnegConfig = Field(default_factory=HardnegConfig, description="HNLMRec: hard-negative embedding "
                                                                             "inference.")
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig, description="What `hnl-ray run` runs.")
    tune: TuneConfig = Field(default_factory=TuneConfig, description="Ray Tune sweeps (`hnl-ray tune`).")

    @property
    def draw_seed(self) -> int:
        """The seed the model-driven stages use (`llm_seed`, else `seed`): their fingerprints are unchanged when
        it is unset."""
        return self.seed if self.llm_seed is None else self.llm_seed

    @model_validator(mode="after")
    def _cross_checks(self) -> "Config":
        """Keys that hold pieces of other sections are checked against them when the config loads, not hours
        later when their stage starts."""
        from .loader import deep_merge

        base = self.train.model_dump(exclude={"runs"})
        try:
            TrainConfig.model_validate(deep_merge(base, self.teacher.train))
        except ValidationError as exc:
            e = exc.errors()[0]
            raise ValueError(f"teacher.train.{'.'.join(map(str, e['loc']))}: {e['msg']} (teacher.train holds "
                             "overrides of `train`)") from None
        tune_train = self.train.for_run(self.tune.base_run) if self.tune.base_run in self.train.runs else self.train
        k = metric_k(self.tune.metric)
        if self.tune.space and k not in tune_train.eval.ks:
            raise ValueError(f"tune.metric {self.tune.metric} needs K={k} in train.eval.ks {tune_train.eval.ks}")
        if self.tune.space:
            from ..tune import SweepSpaceError, check_space

            try:
                check_space(self)
            except SweepSpaceError as exc:
                raise ValueError(str(exc)) from None
        return self

    def resolved_run_dir(self) -> str:
        return self.run_dir.replace("{name}", self.name)
