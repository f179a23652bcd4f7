"""Config of collaborative-filtering training (`train:`): model, sampler, loss, optimiser, evaluation, runs."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from .base import Section, check_name

_METRIC = re.compile(r"^(recall|ndcg|precision|hit)@(\d+)$")


def check_metric(v: str) -> str:
    if not _METRIC.match(v) or int(_METRIC.match(v).group(2)) < 1:  # type: ignore[union-attr]
        raise ValueError(f"{v!r}: a metric looks like recall@20, ndcg@20, precision@10 or hit@10 (K >= 1)")
    return v


# A metric name, checked wherever one appears (train.eval.metric, tune.metric).
Metric = Annotated[str, AfterValidator(check_metric)]


def metric_k(v: str) -> int:
    return int(_METRIC.match(v).group(2))  # type: ignore[union-attr]


class ModelConfig(Section):
    name: Literal["mf", "lightgcn", "ngcf"] = Field("lightgcn", description="`mf` (BPR-MF), `lightgcn` (mean of K "
                                                                          "propagations) or `ngcf`.")
    dim: int = Field(64, ge=1, description="Embedding size.")
    layers: int = Field(3, ge=0, description="Propagation layers (lightgcn, ngcf; ignored by mf).")
    init: Literal["xavier", "normal"] = Field("xavier", description="Embedding initialisation.")
    init_std: float = Field(0.1, gt=0, description="Std of `normal` initialisation.")
    dropout: float = Field(0.1, ge=0, lt=1, description="NGCF message dropout.")
    backward: Literal["custom", "autograd"] = Field(
        "custom", description="lightgcn/ngcf propagation backward: `custom` (one spmm per layer, using the "
                              "adjacency's symmetry) or `autograd` through torch.sparse.mm (same gradients; "
                              "`python -m benchmarks.train_step` compares their speed).")


class SemanticConfig(Section):
    """Semantic negatives mixed into sampled ones (`semantic`), or grounded catalog items (`semantic-item`)."""

    source: Literal["hardneg", "negatives", "base", "shuffled", "random", "teacher"] = Field(
        "hardneg", description="`hardneg`: HNLMRec's LLM embeddings (hardneg/); `negatives`: method-1 text "
                               "embeddings (embeddings/negatives.parquet). Controls through the same path: `base` "
                               "(the model before fine-tuning, hardneg-base/), `shuffled` (the fine-tuned vectors "
                               "permuted across pairs), `random` (a random unit vector per pair), `teacher` (the "
                               "live CF embeddings of the teacher's targets mixed in directly: no language model, "
                               "no adapter).")
    alpha: float = Field(0.01, ge=0, le=1, description="Weight of adapter(e_hard) in the mixed negative (the "
                                                       "reference: 1e-4 Yelp, 1e-2 Toys).")
    alpha_schedule: Literal["constant", "linear"] = Field(
        "constant", description="`linear`: alpha ramps from 0 to its value over `alpha_warmup_epochs`.")
    alpha_warmup_epochs: int = Field(10, ge=1, description="Epochs of the linear ramp.")
    adapter_hidden: list[int] = Field([256], description="Hidden sizes of the adapter MLP (LLM dim -> ... -> CF "
                                                         "dim, ReLU between). The reference: [2048, 1024].")
    llm_dim: int | None = Field(None, ge=1, description="Expected LLM embedding size (null: taken from the "
                                                        "artifact); a mismatch is an error.")
    adapter_objective: Literal["align", "joint", "item"] = Field(
        "align", description="How the adapter learns. `align`: regress adapter(e_hard) onto the CF embedding of "
                             "the item the LLM vector stands for (the teacher's hard negative j* for hardneg/, the "
                             "first grounded item for method 1), with the CF loss's gradient cut from the adapter; "
                             "`joint`: the adapter learns from the CF loss itself, which teaches it to make the "
                             "mixed negatives easy (measured: the loss collapses towards 0); `item`: "
                             "adapter(model's item vector) ~ the CF item embedding by an InfoNCE over the "
                             "catalogue (RLMRec-Con style), learnt on items, not on the pairs it is applied to; "
                             "its held-out item recall@10 is reported in metrics.json.")
    item_weight: float = Field(0.01, ge=0, description="`item`: lambda of the item InfoNCE.")
    item_temperature: float = Field(0.2, gt=0, description="`item`: tau of the item InfoNCE.")
    item_batch: int = Field(256, ge=1, description="`item`: catalogue items per step in the item InfoNCE.")
    item_holdout: float = Field(0.1, ge=0, lt=1, description="`item`: share of items held out of the InfoNCE "
                                                             "to measure the map's recall@10.")
    align_weight: float = Field(1.0, ge=0, description="Weight of the alignment loss (`align`): squared distance "
                                                       "to the target's CF embedding, summed over dims, batch mean.")
    cl_weight: float = Field(0.001, ge=0, description="lambda_cl of the contrastive term (reference: 0.001).")
    cl_temperature: float = Field(0.2, gt=0, description="tau_cl (reference: 0.2).")
    fallback: Literal["user_mean", "none"] = Field(
        "user_mean", description="A pair without an LLM embedding: the user's mean embedding, or no mixing. "
                                 "Never random noise.")
    share: float = Field(1.0, ge=0, le=1, description="semantic-item: share of negatives replaced by a grounded "
                                                      "item when the pair has one.")


class AHNSConfig(Section):
    """AHNS (Lai et al., AAAI 2024): among the candidates, the one whose live score is nearest the target
    hardness beta * (s(u, i) + alpha) ^ (p + 1)."""

    p: float = Field(-2.0, description="Exponent p (p + 1 = -1 by default: harder negatives for poorly scored "
                                       "positives).")
    alpha: float = Field(1.0, description="Shift alpha of the positive's score.")
    beta: float = Field(0.1, description="Scale beta of the target hardness.")


class GuardConfig(Section):
    """False-negative guard of the `hnlmrec` sampler, applied at sampling time with the live model."""

    enabled: bool = Field(True, description="Reject likely false negatives before the pick.")
    rho: float = Field(0.95, gt=0, description="A candidate whose live score is >= rho * s(u, i) is not "
                                               "eligible (NV-Retriever's TopK-PercPos, here on the live model).")
    text_threshold: float | None = Field(
        0.5, gt=-1, le=1, description="A candidate whose item text has at least this cosine with one of the "
                                      "user's training positives is not eligible (null: no text rule). 0.5: at "
                                      "0.9 the text neighbours still cost amazon-scientific 14 % of DNS's "
                                      "validation NDCG@20 (benchmarks/hnlmrec_trap.py).")
    scope: Literal["neighbours", "all"] = Field(
        "neighbours", description="Which candidates the guard screens: `neighbours` (the semantic pool, where the "
                                  "false negatives come from; the uniform draws stay exactly DNS's) or `all`.")


class HNLMRecSamplerConfig(Section):
    """The `hnlmrec` sampler: candidates = the pair's N semantic neighbours + M uniform draws; the live CF model
    picks among the eligible ones, so negatives are real items that get gradients."""

    source: Literal["hardneg", "text", "teacher", "negatives", "base", "shuffled", "random"] = Field(
        "hardneg", description="Where the pair's N neighbours come from. `hardneg`: the fine-tuned model's pair "
                               "vector's nearest catalogue items (hardneg/); `text`: the untuned item-text "
                               "neighbours of the positive (embeddings/items.parquet); `teacher`: the teacher's "
                               "K targets (teacher/pairs.parquet, no language model); `negatives`: method 1's "
                               "grounded items; controls: `base` (the model before fine-tuning), `shuffled` (the "
                               "fine-tuned pair vectors permuted across users), `random` (a random unit vector "
                               "per pair), each searched in hardneg/items.parquet.")
    neighbours: int = Field(16, ge=0, description="N: semantic neighbours per pair among the candidates.")
    uniform: int = Field(16, ge=0, description="M: uniform non-interacted draws per negative among the "
                                               "candidates.")
    rule: Literal["dns", "ahns"] = Field("dns", description="Pick: `dns` the highest live score; `ahns` the "
                                                            "score nearest AHNS's target (train.sampler.ahns).")
    guard: GuardConfig = Field(default_factory=GuardConfig, description="False-negative guard.")

    @model_validator(mode="after")
    def _some_candidates(self) -> "HNLMRecSamplerConfig":
        if self.neighbours + self.uniform < 1:
            raise ValueError("neighbours + uniform must be at least 1")
        return self


class SamplerConfig(Section):
    name: Literal["uniform", "popularity", "dns", "mixgcf", "ahns", "semantic", "semantic-item", "hnlmrec"] = Field(
        "uniform", description="Negative sampler.")
    n_negatives: int = Field(1, ge=1, description="Negatives per positive.")
    candidates: int = Field(32, ge=1, description="Candidates scored per negative (dns, mixgcf, ahns: M).")
    popularity_exponent: float = Field(0.75, description="popularity: P(item) ~ count^exponent.")
    base: Literal["uniform", "popularity", "dns"] = Field(
        "uniform", description="semantic / semantic-item: the sampler that draws the negative being mixed or "
                               "replaced.")
    semantic: SemanticConfig = Field(default_factory=SemanticConfig, description="Semantic negatives.")
    ahns: AHNSConfig = Field(default_factory=AHNSConfig, description="AHNS's target hardness (ahns, and the "
                                                                     "hnlmrec sampler's `rule: ahns`).")
    hnlmrec: HNLMRecSamplerConfig = Field(default_factory=HNLMRecSamplerConfig,
                                          description="The `hnlmrec` sampler (HNLMRec v2).")

    def sections_used(self) -> set[str]:
        """Sub-sections this sampler reads: the others stay out of run fingerprints, so adding an option to
        one sampler does not retrain the runs of the others (nor the teacher and the LLM stages after it)."""
        used = {"semantic": {"semantic"}, "semantic-item": {"semantic"}, "ahns": {"ahns"},
                "hnlmrec": {"hnlmrec"} | ({"ahns"} if self.hnlmrec.rule == "ahns" else set())}
        return used.get(self.name, set())


class LossConfig(Section):
    name: Literal["bpr", "margin"] = Field("bpr", description="`bpr`: -log sigmoid(s+ - s-); `margin`: "
                                                              "relu(s- - s+ + margin).")
    margin: float = Field(0.3, ge=0, description="Margin of the hinge loss (the reference code uses 0.3).")
    reg: float = Field(1e-4, ge=0, description="L2 weight on the batch's ego (layer-0) embeddings.")


class OptimConfig(Section):
    lr: float = Field(1e-3, gt=0, description="Adam learning rate.")
    batch_size: int = Field(2048, ge=1, description="Positive pairs per step.")
    epochs: int = Field(300, ge=1, description="Maximum epochs (early stopping usually ends sooner).")


class EvalConfig(Section):
    ks: list[int] = Field([10, 20], description="Cut-offs K of Recall/NDCG/Precision/HitRate@K.")
    metric: Metric = Field("ndcg@20", description="Validation metric for early stopping and model choice.")
    every: int = Field(1, ge=1, description="Evaluate on validation every N epochs.")
    patience: int = Field(10, ge=1, description="Stop after this many evaluations without improvement.")
    batch_users: int = Field(2048, ge=1, description="Users scored per evaluation batch.")

    @field_validator("ks")
    @classmethod
    def _ks(cls, v: list[int]) -> list[int]:
        if not v or any(k < 1 for k in v) or len(set(v)) != len(v):
            raise ValueError(f"ks must be distinct cut-offs >= 1 (got {v})")
        return v

    @model_validator(mode="after")
    def _k_listed(self) -> "EvalConfig":
        k = int(_METRIC.match(self.metric).group(2))  # type: ignore[union-attr]
        if k not in self.ks:
            raise ValueError(f"metric {self.metric} needs K={k} in ks {self.ks}")
        return self


class TrainConfig(Section):
    model: ModelConfig = Field(default_factory=ModelConfig, description="CF model.")
    sampler: SamplerConfig = Field(default_factory=SamplerConfig, description="Negative sampler.")
    loss: LossConfig = Field(default_factory=LossConfig, description="Pairwise loss and L2.")
    optim: OptimConfig = Field(default_factory=OptimConfig, description="Optimiser.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Evaluation and early stopping.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="`auto` uses CUDA when available.")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (null = torch's default).")
    seed: int | None = Field(None, description="Seed of this run (null = the run's `seed`).")
    checkpoint_every: int = Field(1, ge=1, description="Save a resumable checkpoint every N epochs.")
    runs: dict[str, dict] = Field(
        default_factory=dict,
        description="Named runs sharing these settings, each overriding some keys, e.g. "
                    "`{uniform: {}, dns: {sampler: {name: dns}}}`. Empty: one run named `<model>-<sampler>`.")

    @model_validator(mode="after")
    def _runs_valid(self) -> "TrainConfig":
        for name in self.runs:
            try:
                check_name(name)
            except ValueError as exc:
                raise ValueError(f"run name {exc}") from None
            self.resolve(name)
        return self

    def resolve(self, name: str) -> "TrainConfig":
        """The settings of one named run: these settings with its overrides applied."""
        from pydantic import ValidationError

        from .loader import deep_merge

        base = self.model_dump(exclude={"runs"})
        try:
            return TrainConfig.model_validate(deep_merge(base, self.runs[name]))
        except ValidationError as exc:
            where = "; ".join(f"runs.{name}.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ValueError(where) from None

    def run_names(self) -> list[str]:
        return list(self.runs) or [f"{self.model.name}-{self.sampler.name}"]

    def for_run(self, name: str) -> "TrainConfig":
        return self.resolve(name) if name in self.runs else self
