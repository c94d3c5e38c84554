"""openft's DPO loss on one hand-built batch equals TRL's DPOTrainer loss computation (its own
`compute_loss`, loss_type "sigmoid"), continuing an adapter: TRL's reference is its copy of the
starting adapter ("ref"), openft's the starting adapter's log-probabilities computed once."""

import pytest
import torch

pytest.importorskip("trl")


def test_loss_and_rewards_match_trl(tiny_model_dir, tmp_path):
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from openft.train import dpo
    from openft.train.model import build_model

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa")
    peft_model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"))
    with torch.no_grad():  # a trained-looking adapter, so that the policy differs from the reference
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    peft_model.save_pretrained(tmp_path / "adapter")
    dummy = Dataset.from_list([{"prompt": "a", "chosen": "b", "rejected": "c"}] * 2)
    args = DPOConfig(output_dir=str(tmp_path / "trl"), use_cpu=True, bf16=False, beta=0.3, report_to=[],
                     gradient_checkpointing=False, per_device_train_batch_size=3)
    trainer = DPOTrainer(model=peft_model, args=args, train_dataset=dummy, processing_class=tok)
    hand = [{"prompt_ids": [5, 17, 33, 9], "chosen_ids": [40, 41, 2], "rejected_ids": [42, 2]},
            {"prompt_ids": [7, 8], "chosen_ids": [12], "rejected_ids": [13, 14, 15, 2]},
            {"prompt_ids": [3, 4, 5, 6, 7, 8, 9], "chosen_ids": [20, 21], "rejected_ids": [20, 22]}]
    assert "ref" in trainer.model.peft_config  # TRL keeps the starting adapter as the reference
    with torch.no_grad():  # a step's worth of change: the policy now differs from the reference
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name and ".default." in name:
                p.add_(torch.randn_like(p) * 0.05)
    trainer.model.save_pretrained(tmp_path / "policy", selected_adapters=["default"])
    inputs = {k: v.to(trainer.accelerator.device) for k, v in trainer.data_collator(hand).items()}
    trainer.model.train()
    trl_loss = float(trainer.compute_loss(trainer.model, inputs).detach())
    trl_metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}

    def load(adapter):
        return build_model(tiny_model_dir, method="lora", precision="fp32", device=torch.device("cpu"),
                           adapter_dir=str(tmp_path / adapter))

    pairs = [dpo.Pair(h["prompt_ids"], h["chosen_ids"], h["rejected_ids"], [1] * len(h["chosen_ids"]),
                      [1] * len(h["rejected_ids"])) for h in hand]
    # openft's reference: the starting model (here an `ft:` adapter), computed once before training
    refs = dpo.reference_logps(load("adapter"), pairs, 64, "fp32", torch.device("cpu"))
    for p, r in zip(pairs, refs):
        p.ref = r
    ours = load("policy")
    assert dpo.shares_prompt(ours)  # the shared-prompt (forked) row is what is compared
    tally = {}
    loss_sum = 0.0
    for pb in dpo.pack_pairs(pairs, 64):
        ls, n, _ = dpo.pairs_loss(ours, pb, "fp32", 0.3, tally)
        loss_sum += float(ls.detach())
    m = dpo.metrics_of(tally, "train")
    assert abs(loss_sum / len(pairs) - trl_loss) < 1e-4
    assert abs(m["train_loss"] - trl_loss) < 1e-4
    assert trl_loss != pytest.approx(0.693147, abs=1e-3)  # not the trivial policy == reference case
    assert m["train_chosen_reward"] == pytest.approx(trl_metrics["rewards/chosen"], abs=1e-4)
    assert m["train_rejected_reward"] == pytest.approx(trl_metrics["rewards/rejected"], abs=1e-4)
    assert m["train_reward_margin"] == pytest.approx(trl_metrics["rewards/margins"], abs=1e-4)
    assert m["train_reward_accuracy"] == pytest.approx(trl_metrics["rewards/accuracies"], abs=1e-6)


def test_shared_prompt_row_equals_separate_sequences(tiny_model_dir):
    """The forked row (prompt once) gives the log-probabilities of two separate sequences."""
    from openft.train import dpo
    from openft.train.model import build_model

    torch.manual_seed(1)
    model = build_model(tiny_model_dir, method="lora", precision="fp32", device=torch.device("cpu"))
    pairs = [dpo.Pair([5, 6, 7, 8, 9], [10, 11, 2], [12, 2], [1, 1, 1], [1, 1]),
             dpo.Pair([3, 4], [30, 2], [31, 32, 33, 2], [1, 1], [0, 1, 1, 1])]
    with torch.no_grad():
        shared = torch.cat([dpo.sequence_logps(model, pb, "fp32")[0] for pb in dpo.pack_pairs(pairs, 64, True)])
        apart = torch.cat([dpo.sequence_logps(model, pb, "fp32")[0] for pb in dpo.pack_pairs(pairs, 64, False)])
        alone = torch.cat([dpo.sequence_logps(model, pb, "fp32")[0] for pb in dpo.pack_pairs(pairs, None, False)])
    order = lambda rows: rows  # noqa: E731 - first-fit decreasing keeps this order for these sizes
    assert torch.allclose(order(shared), alone, atol=1e-5) and torch.allclose(apart, alone, atol=1e-5)
