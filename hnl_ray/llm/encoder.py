"""An LLM as a text encoder for HNLMRec: a causal LM's transformer (+ LoRA), one pooling rule, one prompt format,
optionally two CF soft tokens. The same class tokenises and pools at training and at inference, so the two
cannot drift apart (the reference code trains with last-token pooling and infers with mean pooling).
"""

from __future__ import annotations

import torch
from torch import nn

from ..config.hnlmrec import FinetuneConfig
from ..errors import HnlRayError


class EncoderError(HnlRayError, ValueError):
    pass


def query_text(instruction: str, user_profile: str | None, title: str | None, item_profile: str | None) -> str:
    return (f"{instruction}\nUser profile: {user_profile or '(none)'}\n"
            f"Interacted item: {title or '(no title)'}. {item_profile or ''}").strip()


def item_text(title: str | None, item_profile: str | None) -> str:
    return f"{title or '(no title)'}. {item_profile or ''}".strip()


def check_targets(model: nn.Module, targets: list[str]) -> None:
    names = {n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    missing = [t for t in targets if t not in names]
    if missing:
        raise EncoderError(f"finetune.lora.target_modules: {', '.join(missing)} not found in the base model; "
                           f"its linear layers are: {', '.join(sorted(names))}")


def sentence_transformer_path(path: str, cfg: FinetuneConfig) -> str:
    """The transformer folder of a sentence-transformers model, after checking that it pools the way the
    encoder rung trains and infers (mean over tokens): another pooling would make the fine-tuned model
    something other than the published one."""
    from .models import ModelNotFound, sentence_layout

    try:
        transformer, rule = sentence_layout(path)
    except ModelNotFound as e:
        raise EncoderError(str(e)) from None
    if rule != "mean":
        raise EncoderError(f"finetune.base_model: {path} pools by {rule} (its Pooling module); the encoder rung "
                           "trains and infers with mean pooling: use a mean-pooling sentence encoder")
    if cfg.pooling != "mean":
        raise EncoderError(f"finetune.pooling: {cfg.pooling}, but the sentence encoder {path} pools by mean: set "
                           "finetune.pooling: mean (or leave it unset)")
    return transformer


# The config keys transformers' models read their dropout rates from (BERT, Llama/Qwen, GPT-2 families).
DROPOUT_KEYS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "attention_dropout", "hidden_dropout",
                "dropout", "activation_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop")


def model_config(base_path: str, dropout: float | None):
    """The base model's transformers config, with every dropout rate set to `dropout` (None: as published)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(base_path)
    if dropout is not None:
        for key in DROPOUT_KEYS:
            if isinstance(getattr(config, key, None), (int, float)):
                setattr(config, key, dropout)
    return config


class LLMEncoder(nn.Module):
    def __init__(self, base_path: str, cfg: FinetuneConfig, cf_dim: int | None = None, lora: bool = True,
                 dtype: torch.dtype | None = None):
        super().__init__()
        if dtype is None:  # bf16 where a GPU is (an 8B base: 16 GB, not 32 GB in fp32); fp32 on CPU
            dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
        from transformers import AutoModel, AutoTokenizer

        self.cfg = cfg
        if cfg.encoder == "sentence":  # the encoder rung: the transformer of a sentence-transformers folder
            base_path = sentence_transformer_path(base_path, cfg)
        self.tok = AutoTokenizer.from_pretrained(base_path)
        if cfg.use_chat_template and not self.tok.chat_template:
            raise EncoderError(f"finetune.base_model {base_path} has no chat template: use an instruction-tuned "
                               "model, or set finetune.use_chat_template: false")
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.tok.padding_side = "right"
        base = AutoModel.from_pretrained(base_path, config=model_config(base_path, cfg.model_dropout), dtype=dtype)
        if cfg.model_dropout is not None:  # also dropout layers whose rate no config key names
            for m in base.modules():
                if isinstance(m, nn.Dropout):
                    m.p = cfg.model_dropout
        if lora:
            from peft import LoraConfig, get_peft_model

            check_targets(base, cfg.lora.target_modules)
            base = get_peft_model(base, LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha,
                                                   lora_dropout=cfg.lora.dropout,
                                                   target_modules=list(cfg.lora.target_modules),
                                                   task_type="FEATURE_EXTRACTION"))
        self.model = base
        hidden = base.config.hidden_size
        self.proj = nn.Linear(cf_dim, hidden) if (cfg.cf_tokens and cf_dim) else None
        self.dim = hidden

    def bf16(self, device: torch.device) -> bool:
        """Whether `finetune.precision` computes in bf16 on `device` (`auto`: on GPU only)."""
        return self.cfg.precision == "bf16" or (self.cfg.precision == "auto" and device.type == "cuda")

    def autocast(self, device: torch.device):
        """The compute precision of `finetune.precision` on `device` (the same at training and inference)."""
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16(device))

    # -- text -> token ids ---------------------------------------------------------------------------------
    def format_query(self, text: str) -> str:
        if self.cfg.use_chat_template:
            return self.tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                add_generation_prompt=False)
        return text

    def tokenize(self, texts: list[str], max_len: int, query: bool) -> dict[str, torch.Tensor]:
        texts = [self.format_query(t) for t in texts] if query else list(texts)
        # A sentence encoder was trained with its [CLS] ... [SEP] framing (and mean-pools over it); an LLM's
        # framing is the chat template plus the appended end token.
        ids = self.tok(texts, add_special_tokens=self.cfg.encoder == "sentence", truncation=True,
                       max_length=max_len - (1 if self.cfg.pooling == "last" else 0))["input_ids"]
        if self.cfg.pooling == "last":  # an explicit end token whose state represents the text
            ids = [x + [self.tok.eos_token_id] for x in ids]
        width = max(len(x) for x in ids)
        pad = self.tok.pad_token_id
        input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids])
        mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
        return {"input_ids": input_ids, "attention_mask": mask}

    # -- forward + pooling ----------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                cf: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled embeddings (B, H). `cf` (B, 2, cf_dim): user and item CF vectors, prepended as soft tokens."""
        if self.proj is not None and cf is not None:
            embed = self.model.get_input_embeddings()
            x = torch.cat([self.proj(cf).to(embed.weight.dtype), embed(input_ids)], 1)
            mask = torch.cat([torch.ones(len(cf), cf.shape[1], dtype=attention_mask.dtype,
                                         device=attention_mask.device), attention_mask], 1)
            hidden = self.model(inputs_embeds=x, attention_mask=mask).last_hidden_state
        else:
            mask = attention_mask
            hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        if self.cfg.pooling == "last":
            last = mask.sum(1) - 1  # right padding: the appended end token
            return hidden[torch.arange(len(hidden), device=hidden.device), last].float()
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return ((hidden * m).sum(1) / m.sum(1).clamp(min=1)).float()

    def encode_queries(self, texts: list[str], cf: torch.Tensor | None = None) -> torch.Tensor:
        dev = next(self.parameters()).device
        enc = {k: v.to(dev) for k, v in self.tokenize(texts, self.cfg.max_query_tokens, True).items()}
        return self(**enc, cf=cf.to(dev) if cf is not None else None)

    def encode_items(self, texts: list[str]) -> torch.Tensor:
        dev = next(self.parameters()).device
        enc = {k: v.to(dev) for k, v in self.tokenize(texts, self.cfg.max_passage_tokens, False).items()}
        return self(**enc)

    # -- adapter weights --------------------------------------------------------------------------------------
    def trainable_state(self) -> dict[str, torch.Tensor]:
        from peft import PeftModel, get_peft_model_state_dict

        out = ({f"lora.{k}": v.detach().cpu().contiguous()
                for k, v in get_peft_model_state_dict(self.model).items()}
               if isinstance(self.model, PeftModel) else {})
        if self.proj is not None:
            out.update({f"proj.{k}": v.detach().cpu().contiguous() for k, v in self.proj.state_dict().items()})
        return out

    def load_trainable(self, tensors: dict[str, torch.Tensor]) -> None:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(self.model, {k[5:]: v for k, v in tensors.items() if k.startswith("lora.")})
        if self.proj is not None:
            self.proj.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("proj.")})

    def merge(self) -> LLMEncoder:
        """Fold LoRA into the base weights (faster inference, same outputs)."""
        if hasattr(self.model, "merge_and_unload"):  # built without LoRA (the `base` control): nothing to fold
            self.model = self.model.merge_and_unload()
        return self


def _embed_batch(model: nn.Module, enc: LLMEncoder, queries: list[str], passages: list[str], device: torch.device,
                 cf: torch.Tensor | None, gather, n_pos: int):
    """Gathered query and passage embeddings (the first `n_pos` passages per worker are positives, gathered
    apart from the extra negatives so that the global layout is all positives, then all extras) and tokens."""
    c = enc.cfg
    enc_q = {k: v.to(device) for k, v in enc.tokenize(queries, c.max_query_tokens, True).items()}
    enc_p = {k: v.to(device) for k, v in enc.tokenize(passages, c.max_passage_tokens, False).items()}
    q = model(**enc_q, cf=cf.to(device) if cf is not None else None)
    p = model(**enc_p)
    qg = gather(q)
    pg = torch.cat([gather(p[:n_pos]), gather(p[n_pos:])]) if p.shape[0] > n_pos else gather(p)
    return qg, pg, int(enc_q["attention_mask"].sum() + enc_p["attention_mask"].sum())


def contrastive_batch(model: nn.Module, enc: LLMEncoder, queries: list[str], passages: list[str],
                      device: torch.device, cf: torch.Tensor | None = None, gather=lambda x: x):
    """One fine-tuning batch: the loss of `queries` against `passages` (their positives first, extra negatives
    after), plus the gathered embeddings and the non-padding tokens processed. `model` is `enc` or its DDP/FSDP
    wrapper (the forward must go through it for gradient sync); `gather` collects embeddings across workers so that
    negatives come from the global batch. Call under the caller's autocast."""
    from .contrastive import contrastive_loss

    qg, pg, tokens = _embed_batch(model, enc, queries, passages, device, cf, gather, len(queries))
    return contrastive_loss(enc.cfg.loss, qg, pg, enc.cfg.temperature), qg, pg, tokens


def multi_positive_batch(model: nn.Module, enc: LLMEncoder, queries: list[str], passages: list[str],
                         targets: torch.Tensor, device: torch.device, cf: torch.Tensor | None = None,
                         gather=lambda x: x, extra_items: torch.Tensor | None = None):
    """`contrastive_batch` with K positives per query: `passages` holds K target slots per query (query b's at
    b*K ... b*K + K - 1, a pair with fewer targets padded with copies), then the extra negatives; `targets`
    (Bq, K) their item ids, -1 in padding slots; `extra_items` the extras' ids. The loss is
    contrastive.multi_positive_loss; also returns the (pos, ignore) masks for in_batch_accuracy."""
    from .contrastive import multi_positive_loss, target_masks

    c = enc.cfg
    qg, pg, tokens = _embed_batch(model, enc, queries, passages, device, cf, gather, targets.numel())
    # the ids travel through the same (float) gather as the embeddings; item ids are exact in float64
    tg = gather(targets.to(device, torch.float64)).round().long()
    eg = gather(extra_items.to(device, torch.float64)).round().long() if extra_items is not None else None
    pos, ignore = target_masks(tg, eg)
    return multi_positive_loss(c.loss, qg, pg, pos, c.temperature, ignore), qg, pg, tokens, (pos, ignore)
